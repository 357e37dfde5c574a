//! How far `vlm dedup`'s exact all-pairs search scales, and what the approximate index
//! costs instead: both over N embeddings as the command holds them once they are read
//! from the cache (unit vectors, `--dim` floats).
//!
//! cargo run --release --example dedup_scale -- --n 10000,100000 --dim 512
//!
//! The vectors are clusters of 1-4 noisy copies of random directions (noise chosen so
//! that copies sit near cosine 0.97), so the threshold 0.95 finds pairs as it would in
//! a photo library. Prints, per N: the exact search (blocked products on the packed
//! kernels), the HNSW build and queries, and how many pairs each found. `--exact-max`
//! and `--approximate-max` skip either above that N. Figures go in BENCHMARKS.md; nothing here is a test.

use std::time::Instant;

use anyhow::{bail, Context};
use vlm::dedup::{self, UnitRows};

fn main() -> anyhow::Result<()> {
    let mut sizes = vec![10_000usize, 100_000];
    let mut dim = 512;
    let mut exact_max = usize::MAX;
    let mut approximate_max = usize::MAX;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => sizes = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--dim" => dim = value.parse()?,
            "--exact-max" => exact_max = value.parse()?,
            "--approximate-max" => approximate_max = value.parse()?,
            _ => bail!("unknown flag {flag}; use --n, --dim, --exact-max, --approximate-max"),
        }
    }
    let threshold = dedup::DEFAULT_THRESHOLD;
    println!(
        "threshold {threshold}, dim {dim}, {} threads",
        rayon::current_num_threads()
    );
    for n in sizes {
        let rows = UnitRows::new(&dedup::synthetic_clusters(n, dim, 0.12, 42))?;
        if n <= exact_max {
            let t = Instant::now();
            let pairs = dedup::pairs_exact(&rows, threshold)?;
            let s = t.elapsed().as_secs_f64();
            let gflops = (n as f64 * n as f64 / 2.0) * dim as f64 * 2.0 / s / 1e9;
            println!(
                "n {n:>7}  exact all-pairs   {s:>8.2} s  ({gflops:.0} GFLOP/s)  {} pairs",
                pairs.len()
            );
        }
        if n > approximate_max {
            continue;
        }
        let t = Instant::now();
        let pairs = dedup::pairs_approximate(&rows, threshold)?;
        println!(
            "n {n:>7}  approximate HNSW  {:>8.2} s  (build and {n} queries)  {} pairs",
            t.elapsed().as_secs_f64(),
            pairs.len()
        );
    }
    Ok(())
}
