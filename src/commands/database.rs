//! The `--to`/`--in postgresql://...` or `milvus://...` side of embed, search and
//! classify: wiring only; the work is in [`vlm::store`].

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::Context;

use super::{Found, Session, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED};
use vlm::inputs::Input;
use vlm::output::{ImageResult, Outcome};
use vlm::search::normalize;
use vlm::store::{self, Address, EmbeddingRow, EmbeddingStore, LabelRow, ModelStamp, StoredHit};

/// `--to`/`--in ADDRESS` (and `--table`), refused at once when this build lacks its client.
pub fn address(url: &str, table: Option<&str>) -> anyhow::Result<Address> {
    let address = Address::parse(url, table)?;
    address.ensure_built()?;
    Ok(address)
}

/// The loaded model's identity as a table records it.
pub fn stamp(session: &Session) -> ModelStamp {
    ModelStamp {
        model: session.model.files.id.clone(),
        revision: session.model.files.revision.clone(),
        dim: session.classifier().config().projection_dim,
    }
}

/// `vlm embed INPUTS --to ADDRESS`: embeds the inputs that are new or changed since the
/// table last saw them, and upserts them a batch per transaction.
pub fn embed_to(
    address: &Address,
    session: &Session,
    found: Found,
    normalized: bool,
    started: Instant,
) -> anyhow::Result<u8> {
    let printer = &session.printer;
    // Connecting checks the table's dimension and model before anything is written.
    let mut db = store::open_for_writing(address, stamp(session))?;
    let (todo, hashes, unchanged) = still_to_store(db.as_mut(), found.inputs)?;
    printer.detail(format_args!(
        "{unchanged} inputs unchanged in {}; embedding {}",
        db.shown(),
        todo.len()
    ));
    let mut failed = found.failed;
    let mut stored = 0u64;
    let stats = session.embed(todo, "images", |_, batch| {
        let mut rows = Vec::with_capacity(batch.len());
        for done in &batch {
            let key = done.input.key();
            match (&done.embedding, hashes.get(&key)) {
                (Ok(row), Some(hash)) => rows.push((key, hash, row)),
                (Ok(_), None) => {
                    failed += 1;
                    printer.error(format_args!(
                        "{}: could not be read to hash it; not stored",
                        done.input.display
                    ));
                }
                (Err(_), _) => failed += 1,
            }
        }
        let vectors: Vec<Vec<f32>> = rows
            .iter()
            .map(|(_, _, row)| {
                let mut row = row.to_vec();
                if normalized {
                    normalize(&mut row);
                }
                row
            })
            .collect();
        let rows: Vec<EmbeddingRow<'_>> = rows
            .iter()
            .zip(&vectors)
            .map(|((path, hash, _), embedding)| EmbeddingRow {
                path,
                content_hash: hash,
                embedding,
            })
            .collect();
        stored += db
            .upsert(&rows)
            .with_context(|| format!("stopped after storing {stored} embeddings in this run"))?;
        Ok::<(), anyhow::Error>(())
    })?;
    if stats.cancelled {
        printer.error(format_args!(
            "interrupted: {stored} embeddings stored in {}; run the same command again to store the rest",
            db.shown()
        ));
        return Ok(EXIT_INTERRUPTED);
    }
    printer.note(format_args!(
        "stored {stored} embeddings ({unchanged} unchanged), failed {failed}, skipped {} in {:.1} s; in {}",
        found.skipped,
        started.elapsed().as_secs_f64(),
        db.shown()
    ));
    session.report(&stats);
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

/// The inputs whose content differs from the table's row (or that have none), each path
/// once; their content hashes by [`Input::key`]; how many were left out as unchanged.
fn still_to_store(
    db: &mut dyn EmbeddingStore,
    inputs: Vec<Input>,
) -> anyhow::Result<(Vec<Input>, HashMap<String, String>, usize)> {
    let mut seen = HashSet::new();
    let inputs: Vec<Input> = inputs
        .into_iter()
        .filter(|input| seen.insert(input.key()))
        .collect();
    let hashes = store::content_hashes(&inputs);
    let paths: Vec<String> = inputs.iter().map(Input::key).collect();
    let known = db.stored_hashes(&paths)?;
    let mut todo = Vec::new();
    let mut by_path = HashMap::new();
    let mut unchanged = 0;
    for ((input, hash), key) in inputs.into_iter().zip(hashes).zip(paths) {
        match hash {
            Some(hash) if known.get(&key) == Some(&hash) => unchanged += 1,
            Some(hash) => {
                by_path.insert(key, hash);
                todo.push(input);
            }
            // Unreadable: the embedding run reports why.
            None => todo.push(input),
        }
    }
    Ok((todo, by_path, unchanged))
}

/// `vlm classify --to ADDRESS`: the open table.
pub struct LabelStore {
    db: Box<dyn EmbeddingStore>,
}

impl LabelStore {
    pub fn open(address: &Address, session: &Session) -> anyhow::Result<Self> {
        let db = store::open_for_writing(address, stamp(session))?;
        Ok(Self { db })
    }

    /// Stores one batch: the (normalised) embedding and the ranked labels of every image
    /// that was labelled.
    /// Inputs are streamed, so their content hashes are taken here, a batch at a time.
    pub fn store(&mut self, labelled: &[(&Input, &ImageResult, &[f32])]) -> anyhow::Result<()> {
        let inputs: Vec<Input> = labelled
            .iter()
            .map(|(input, _, _)| (*input).clone())
            .collect();
        let hashes = store::content_hashes(&inputs);
        let mut vectors = Vec::new();
        let mut keep = Vec::new();
        for ((input, report, embedding), hash) in labelled.iter().zip(&hashes) {
            let (Outcome::Ranked(ranked), Some(hash)) = (&report.outcome, hash) else {
                continue;
            };
            let Some(top) = ranked.first() else { continue };
            let mut row = embedding.to_vec();
            normalize(&mut row);
            vectors.push(row);
            keep.push((input.key(), hash.as_str(), top, ranked));
        }
        let rows: Vec<EmbeddingRow<'_>> = keep
            .iter()
            .zip(&vectors)
            .map(|((path, hash, _, _), embedding)| EmbeddingRow {
                path,
                content_hash: hash,
                embedding,
            })
            .collect();
        let labels = keep
            .iter()
            .map(|(path, hash, top, ranked)| {
                Ok(LabelRow {
                    path,
                    content_hash: hash,
                    top_label: &top.label,
                    top_probability: top.probability,
                    labels_json: serde_json::to_string(ranked)
                        .context("internal error: labels could not be turned into JSON")?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.db.upsert_labelled(&rows, &labels)?;
        Ok(())
    }
}

/// `vlm search --in ADDRESS`: the `n` nearest rows, leaving out `exclude` (the query
/// image's own row).
pub fn search_in(
    address: &Address,
    session: &Session,
    query: &[f32],
    n: usize,
    exclude: Option<&str>,
) -> anyhow::Result<Vec<StoredHit>> {
    let mut db = store::open_for_search(address, stamp(session))?;
    let mut hits = db.search(query, n.saturating_add(usize::from(exclude.is_some())))?;
    hits.retain(|hit| Some(hit.path.as_str()) != exclude);
    hits.truncate(n);
    Ok(hits)
}
