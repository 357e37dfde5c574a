//! The content key travels with the result: a file rewritten between being read for
//! labelling and being stored is stored under the hash of the bytes that were embedded, so
//! the next `embed --to` sees it changed and embeds it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::Device;

use super::*;
use crate::cache::EmbeddingCache;
use crate::checkpoint::Checkpoint;
use crate::decide::{Decisions, Labeller, Scorer};
use crate::error::Error;
use crate::inputs::Source;
use crate::job::{ImageEncoder, Silent};
use crate::labels::{PromptSet, Template, Templates};
use crate::pipeline::PipelineOptions;

/// A table in memory: path -> (content hash, embedding), and path -> (hash, top label).
#[derive(Default)]
struct Table {
    rows: HashMap<String, (String, Vec<f32>)>,
    labels: HashMap<String, (String, String)>,
}

#[derive(Clone, Default)]
struct Memory(Arc<Mutex<Table>>);

impl EmbeddingStore for Memory {
    fn shown(&self) -> &str {
        "memory"
    }

    fn stored_hashes(&mut self, paths: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let table = self.0.lock().unwrap();
        Ok(paths
            .iter()
            .filter_map(|p| Some((p.clone(), table.rows.get(p)?.0.clone())))
            .collect())
    }

    fn upsert(&mut self, rows: &[EmbeddingRow<'_>]) -> Result<u64, StoreError> {
        let mut table = self.0.lock().unwrap();
        for row in rows {
            let value = (row.content_hash.to_string(), row.embedding.to_vec());
            table.rows.insert(row.path.to_string(), value);
        }
        Ok(rows.len() as u64)
    }

    fn upsert_labelled(
        &mut self,
        rows: &[EmbeddingRow<'_>],
        labels: &[LabelRow<'_>],
    ) -> Result<u64, StoreError> {
        let written = self.upsert(rows)?;
        let mut table = self.0.lock().unwrap();
        for label in labels {
            let value = (label.content_hash.to_string(), label.top_label.to_string());
            table.labels.insert(label.path.to_string(), value);
        }
        Ok(written)
    }

    fn search(&mut self, _: &[f32], _: usize) -> Result<Vec<StoredHit>, StoreError> {
        Ok(Vec::new())
    }
}

/// The checkpoint's image encoder, which rewrites `path` with `then` while it encodes the
/// first batch: after the job read the file, before anything is stored.
struct Rewriting<'a> {
    checkpoint: &'a Checkpoint,
    path: PathBuf,
    then: Vec<u8>,
    done: Mutex<bool>,
}

impl ImageEncoder for Rewriting<'_> {
    fn encoding_len(&self) -> usize {
        self.checkpoint.encoding_len()
    }

    fn prepare(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, Error> {
        self.checkpoint.prepare(bytes, name)
    }

    fn encode(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error> {
        let mut done = self.done.lock().unwrap();
        if !*done {
            std::fs::write(&self.path, &self.then).unwrap();
            *done = true;
        }
        self.checkpoint.encode(batch)
    }
}

fn png(colour: [u8; 3]) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(32, 32, image::Rgb(colour))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

fn tiny() -> (crate::source::ModelFiles, Checkpoint) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-quickgelu");
    let files = crate::source::ModelFiles::from_dir(&dir).unwrap();
    let checkpoint = Checkpoint::load(&files, &Device::Cpu).unwrap();
    (files, checkpoint)
}

#[test]
fn a_file_rewritten_while_labelled_is_stored_under_the_hash_it_was_embedded_from() {
    let (_, checkpoint) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.png");
    let (before, after) = (png([200, 30, 30]), png([30, 30, 200]));
    std::fs::write(&path, &before).unwrap();
    let display = path.display().to_string();
    let input = || Input {
        display: display.clone(),
        source: Source::File(path.clone()),
    };
    let options = PipelineOptions::default();
    let embedding_of = |bytes: &[u8]| {
        let pixels = checkpoint.prepare(bytes, "x").unwrap();
        checkpoint.encode(&[pixels]).unwrap().remove(0)
    };

    // `vlm classify --to`: the file changes while its batch is encoded.
    let memory = Memory::default();
    let labels = ["red".to_string(), "blue".to_string()];
    let prompts = PromptSet::new(&labels, &Templates::single(Template::default())).unwrap();
    let text = checkpoint.embed_classes(&prompts).unwrap();
    let scorer = Scorer::Prompts {
        prompts,
        text,
        examples: None,
    };
    let rewriting = Rewriting {
        checkpoint: &checkpoint,
        path: path.clone(),
        then: after.clone(),
        done: Mutex::new(false),
    };
    let store = LabelStore::new(Box::new(memory.clone()));
    let mut labeller = Labeller::new(&checkpoint, &scorer, Decisions::default(), store);
    Job::new(&rewriting, options)
        .with_keys()
        .run(vec![input()], &mut labeller, &Silent)
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), after, "the file did change");
    let hash_before = EmbeddingCache::key(&before).to_hex();
    {
        let table = memory.0.lock().unwrap();
        let (hash, embedding) = &table.rows[&display];
        assert_eq!(
            *hash, hash_before,
            "stored under the hash of the bytes embedded"
        );
        let mut want = embedding_of(&before);
        normalize(&mut want);
        assert_eq!(*embedding, want);
        assert_eq!(table.labels[&display].0, hash_before);
    }

    // The next `vlm embed --to` sees the new bytes as changed and embeds them.
    let mut db = memory.clone();
    let mut embed_again = || {
        let run = embed_to(
            Job::new(&checkpoint, options),
            &mut db,
            vec![input()],
            true,
            &Silent,
        );
        let run = run.unwrap();
        (run.stored, run.tally.unchanged)
    };
    assert_eq!(embed_again(), (1, 0));
    {
        let table = memory.0.lock().unwrap();
        let (hash, embedding) = &table.rows[&display];
        assert_eq!(*hash, EmbeddingCache::key(&after).to_hex());
        let mut want = embedding_of(&after);
        normalize(&mut want);
        assert_eq!(*embedding, want);
    }

    // And the one after leaves it alone.
    assert_eq!(embed_again(), (0, 1));
}
