//! How far `vlm dedup`'s exact all-pairs search scales, and what the approximate path
//! through a PostgreSQL table's HNSW index (`vlm dedup --in`) costs instead: both over N
//! embeddings (unit vectors, `--dim` floats).
//!
//! cargo run --release --example dedup_scale -- --n 10000,100000 --dim 512 [--in postgresql://...]
//!
//! The vectors are clusters of 1-4 noisy copies of random directions (noise chosen so
//! that copies sit near cosine 0.97), so the threshold 0.95 finds pairs as it would in
//! a photo library. Prints, per N: the exact search (blocked products on the packed
//! kernels) and, with `--in`, the time to store the rows and build the table's HNSW index
//! (not part of a dedup run: `vlm embed --to` does it once) and the neighbour search
//! through the index, with how many pairs each found. `--exact-max` skips the exact search above that N. The table
//! (`--table`, default `vlm_dedup_scale`, with `_N` appended) is filled by path. Figures go in BENCHMARKS.md;
//! nothing here is a test.

use std::time::Instant;

use anyhow::{bail, Context};
use vlm::dedup::{self, UnitRows, NEIGHBOURS};
use vlm::job::Silent;
use vlm::store::{self, Address, EmbeddingRow, ModelStamp};

fn main() -> anyhow::Result<()> {
    let mut sizes = vec![10_000usize, 100_000];
    let mut dim = 512;
    let mut exact_max = usize::MAX;
    let mut database = None;
    let mut table = "vlm_dedup_scale".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => sizes = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--dim" => dim = value.parse()?,
            "--exact-max" => exact_max = value.parse()?,
            "--in" => database = Some(value),
            "--table" => table = value,
            _ => bail!("unknown flag {flag}; use --n, --dim, --exact-max, --in, --table"),
        }
    }
    let threshold = dedup::DEFAULT_THRESHOLD;
    println!(
        "threshold {threshold}, dim {dim}, {} threads",
        rayon::current_num_threads()
    );
    for n in sizes {
        let vectors = dedup::synthetic_clusters(n, dim, 0.12, 42);
        if n <= exact_max {
            let rows = UnitRows::new(&vectors)?;
            let t = Instant::now();
            let pairs = dedup::pairs_exact(&rows, threshold)?;
            let s = t.elapsed().as_secs_f64();
            let gflops = (n as f64 * n as f64 / 2.0) * dim as f64 * 2.0 / s / 1e9;
            println!(
                "n {n:>7}  exact all-pairs   {s:>8.2} s  ({gflops:.0} GFLOP/s)  {} pairs",
                pairs.len()
            );
        }
        if let Some(url) = &database {
            let address = Address::parse(url, Some(&format!("{table}_{n}")))?;
            let stamp = ModelStamp {
                model: "dedup_scale".into(),
                revision: None,
                dim,
            };
            let t = Instant::now();
            let mut db = store::open_for_writing(&address, stamp.clone())?;
            // Loaded as a bulk load is: the rows first, the index (as vlm makes it) after.
            let mut client = store::postgres::config(&address)?.connect(postgres::NoTls)?;
            let index = format!("{table}_{n}_embedding_idx");
            client.batch_execute(&format!("DROP INDEX IF EXISTS {index}"))?;
            let paths: Vec<String> = (0..n).map(|i| format!("img-{i:07}.jpg")).collect();
            let hash = "0".repeat(64);
            for (paths, vectors) in paths.chunks(1000).zip(vectors.chunks(1000)) {
                let rows: Vec<EmbeddingRow<'_>> = paths
                    .iter()
                    .zip(vectors)
                    .map(|(path, embedding)| EmbeddingRow {
                        path,
                        content_hash: &hash,
                        embedding,
                    })
                    .collect();
                db.upsert(&rows)?;
            }
            let stored = t.elapsed().as_secs_f64();
            let t = Instant::now();
            client.batch_execute(&format!(
                "CREATE INDEX {index} ON {table}_{n} USING hnsw (embedding vector_cosine_ops)"
            ))?;
            let indexed = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let found = dedup::in_store(&address, stamp, threshold, None, &Silent)?
                .context("not cancelled")?;
            println!(
                "n {n:>7}  PostgreSQL HNSW   {:>8.2} s  ({n} queries of {NEIGHBOURS} neighbours; storing the rows took {stored:.1} s, the index {indexed:.1} s)  {} pairs",
                t.elapsed().as_secs_f64(),
                found.pairs
            );
        }
    }
    Ok(())
}
