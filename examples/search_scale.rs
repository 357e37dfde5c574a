//! How far brute-force `vlm search DIR` scales: the parts of one search over N cached
//! embeddings, measured one by one, in the order the command runs them for each image
//! (read the file, SHA-256 it, read its cache entry, score it against the query, keep the
//! best n).
//!
//! cargo run --release --example search_scale -- --n 1000000 --dim 512 \
//!     --cache-entries 100000 --work /tmp/vlm-scale
//!
//! Prints, for N random unit vectors of `--dim` floats: the ranking (the cosine and
//! `TopN` the command runs on every embedding it gets, before and after it was reworked), the cache reads (`--cache-entries`
//! entries written through `EmbeddingCache::put` under `--work`, then read back with
//! `get` on 2 threads as the pipeline's workers do; the page cache is warm), and SHA-256
//! throughput (the cache key is the hash of the whole image file). Figures go in
//! BENCHMARKS.md; nothing here is a test.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use rayon::prelude::*;
use vlm::cache::{CacheNamespace, ContentKey, EmbeddingCache};
use vlm::search::{self, CosineQuery, Hit, TopN};

struct Args {
    n: usize,
    dim: usize,
    top: usize,
    cache_entries: usize,
    work: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        n: 1_000_000,
        dim: 512,
        top: 10,
        cache_entries: 100_000,
        work: std::env::temp_dir().join("vlm-search-scale"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => args.n = value.parse()?,
            "--dim" => args.dim = value.parse()?,
            "--top" => args.top = value.parse()?,
            "--cache-entries" => args.cache_entries = value.parse()?,
            "--work" => args.work = PathBuf::from(value),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(args)
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.next()).collect();
        search::normalize(&mut v);
        v
    }
}

/// `vlm::search::cosine` as it was before the ranking was reworked: one dependent f64 sum
/// per quantity, and the query's norm recomputed for every candidate.
fn sequential_cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (dot / (aa.sqrt() * bb.sqrt())) as f32
}

fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let query = rng.unit(args.dim);

    // One flat buffer, as a matrix would be.
    let start = Instant::now();
    let mut matrix = Vec::with_capacity(args.n * args.dim);
    for _ in 0..args.n {
        matrix.extend(rng.unit(args.dim));
    }
    println!(
        "generated {} x {} unit vectors ({:.0} MB) in {:.2} s",
        args.n,
        args.dim,
        (matrix.len() * 4) as f64 / 1e6,
        seconds(start)
    );

    // What `vlm search` does: one cosine per embedding as it arrives, into a TopN.
    for round in 0..2 {
        let start = Instant::now();
        let mut top = TopN::new(args.top);
        for (index, row) in matrix.chunks_exact(args.dim).enumerate() {
            top.push(Hit {
                index,
                similarity: sequential_cosine(&query, row),
            });
        }
        let best = top.into_sorted();
        println!(
            "ranking before (one f64 chain, query norm per row), round {round}: {:.3} s, best {:?}",
            seconds(start),
            best.first().map(|h| (h.index, h.similarity))
        );
    }
    for round in 0..2 {
        let start = Instant::now();
        let scorer = CosineQuery::new(&query);
        let mut top = TopN::new(args.top);
        for (index, row) in matrix.chunks_exact(args.dim).enumerate() {
            top.push(Hit {
                index,
                similarity: scorer.similarity(row),
            });
        }
        let best = top.into_sorted();
        println!(
            "ranking now (CosineQuery + TopN, one thread), round {round}: {:.3} s, best {:?}",
            seconds(start),
            best.first().map(|h| (h.index, h.similarity))
        );
    }

    // The cache: entries written the way a run writes them, then read back.
    let namespace = CacheNamespace::new("bench/search-scale", None, "search-scale");
    std::fs::create_dir_all(&args.work)?;
    let cache = EmbeddingCache::open(&args.work, namespace)?;
    let entries = args.cache_entries.min(args.n);
    let keys: Vec<ContentKey> = (0..entries)
        .map(|i| EmbeddingCache::key(&(i as u64).to_le_bytes()))
        .collect();
    let start = Instant::now();
    keys.par_iter().enumerate().try_for_each(|(i, key)| {
        let row = &matrix[i * args.dim..(i + 1) * args.dim];
        cache.put(key, row)
    })?;
    println!(
        "cache: wrote {entries} entries in {:.2} s under {}",
        seconds(start),
        cache.dir().display()
    );
    for round in 0..2 {
        let start = Instant::now();
        let found = keys
            .par_iter()
            .filter(|key| cache.get(key).is_some_and(|e| e.len() == args.dim))
            .count();
        let took = seconds(start);
        println!(
            "cache: read {found}/{entries} entries on {} threads, round {round}: {took:.2} s ({:.1} us each; x{} = {:.1} s for {})",
            rayon::current_num_threads(),
            took * 1e6 / entries as f64,
            args.n / entries.max(1),
            took * (args.n as f64 / entries as f64),
            args.n
        );
    }

    // The cache key: SHA-256 of every image file, on every search.
    let buffer = vec![0x5au8; 64 << 20];
    let start = Instant::now();
    let mut rounds = 0;
    while seconds(start) < 2.0 {
        std::hint::black_box(EmbeddingCache::key(&buffer));
        rounds += 1;
    }
    let mb_per_s = (rounds * buffer.len()) as f64 / 1e6 / seconds(start);
    println!("SHA-256: {mb_per_s:.0} MB/s on one thread");
    Ok(())
}
