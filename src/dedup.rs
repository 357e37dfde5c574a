//! Near-duplicate groups: images whose embeddings lie within a cosine threshold of each
//! other.
//!
//! Every pair at or above the threshold links two images, and a group is a connected set
//! of links (so a copy of a copy joins its original's group even when the two are further
//! apart); groups are listed in input order, each member with its similarity to the
//! group's first image.
//!
//! The pairs are found exactly, all against all, in blocks on the packed matrix kernels
//! ([`pairs_exact`]): a block of unit embeddings is packed once as the "weight" and the
//! rows before it are multiplied against it, so the similarities of a block never sit in
//! memory with those of another. Beyond [`EXACT_LIMIT`] images an approximate HNSW index
//! finds each image's near neighbours instead ([`pairs_approximate`]); [`find_pairs`]
//! chooses and says which it used.

mod index;

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

use crate::kernels::{matmul, Act, Epilogue, Isa, PackedMatrix};
use crate::output::Format;

/// The default `--threshold`: the cosine similarity at or above which two images are
/// near-duplicates (see docs/photos.md for the measurements behind it).
pub const DEFAULT_THRESHOLD: f32 = 0.95;

/// Up to this many images the pairs are found exactly, all against all; beyond it with the
/// approximate index. Measured on 2 cores (BENCHMARKS.md), the blocked exact search beats
/// building and querying the HNSW index at every size tried (26x at 10,000, 18x at 30,000)
/// and, by the growth measured (n^2 against n^1.4), until about 2 million images.
pub const EXACT_LIMIT: usize = 1_000_000;

/// Embeddings per packed block: 1024 columns of similarities per pass, 4 MiB of packed
/// values at 1024 dimensions, so a block stays in the last-level cache.
const BLOCK: usize = 1024;
/// Rows multiplied against a block at once: their similarities (`ROWS x BLOCK` f32, 16 MiB)
/// are scanned and dropped before the next rows.
const ROWS: usize = 4096;

/// Why near-duplicates could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("--threshold must be a cosine similarity between -1 and 1, got {0}")]
    Threshold(f32),
    #[error("embedding {index} has {got} values, the others {want}; embed every image with the same model")]
    Dimension {
        index: usize,
        got: usize,
        want: usize,
    },
}

/// Two images at or above the threshold; `a < b` in input order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub similarity: f32,
}

/// Embeddings scaled to unit length, one row each, for cosine similarities as dot products.
#[derive(Debug, Clone)]
pub struct UnitRows {
    data: Vec<f32>,
    dim: usize,
}

impl UnitRows {
    /// Normalises `rows` (all of one length); a zero row stays zero (similar to nothing).
    pub fn new<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self, DedupError> {
        let dim = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * dim);
        for (index, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != dim {
                return Err(DedupError::Dimension {
                    index,
                    got: row.len(),
                    want: dim,
                });
            }
            let start = data.len();
            data.extend_from_slice(row);
            crate::search::normalize(&mut data[start..]);
        }
        Ok(Self { data, dim })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The cosine similarity of rows `i` and `j`, summed in f64.
    pub fn similarity(&self, i: usize, j: usize) -> f32 {
        let dot: f64 = self
            .row(i)
            .iter()
            .zip(self.row(j))
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        dot as f32
    }
}

fn check_threshold(threshold: f32) -> Result<(), DedupError> {
    if (-1.0..=1.0).contains(&threshold) {
        Ok(())
    } else {
        Err(DedupError::Threshold(threshold))
    }
}

/// Every pair with similarity `>= threshold`, found all against all in blocks on the
/// packed kernels; sorted by `(a, b)`.
pub fn pairs_exact(rows: &UnitRows, threshold: f32) -> Result<Vec<Pair>, DedupError> {
    check_threshold(threshold)?;
    let (n, dim) = (rows.len(), rows.dim);
    let mut pairs = Vec::new();
    if n < 2 || dim == 0 {
        return Ok(pairs);
    }
    let isa = Isa::detect();
    let ep = Epilogue {
        bias: None,
        act: Act::Identity,
        accumulate: false,
    };
    let mut out = vec![0.0f32; ROWS.min(n) * BLOCK.min(n)];
    for block_start in (0..n).step_by(BLOCK) {
        let block_end = (block_start + BLOCK).min(n);
        let cols = block_end - block_start;
        let packed = PackedMatrix::pack(
            &rows.data[block_start * dim..block_end * dim],
            cols,
            dim,
            isa,
        );
        // Rows up to the block's end: each pair (a < b) is seen once, with b in the block.
        for row_start in (0..block_end).step_by(ROWS) {
            let row_end = (row_start + ROWS).min(block_end);
            let m = row_end - row_start;
            let sims = &mut out[..m * cols];
            matmul(
                &rows.data[row_start * dim..row_end * dim],
                m,
                &packed,
                &ep,
                sims,
            );
            for (r, line) in sims.chunks_exact(cols).enumerate() {
                let a = row_start + r;
                // Only columns after `a`: the diagonal and the lower triangle are skipped.
                let first = (a + 1).saturating_sub(block_start);
                for (c, &similarity) in line.iter().enumerate().skip(first) {
                    if similarity >= threshold {
                        pairs.push(Pair {
                            a,
                            b: block_start + c,
                            similarity,
                        });
                    }
                }
            }
        }
    }
    pairs.sort_by_key(|p| (p.a, p.b));
    Ok(pairs)
}

/// The reference: every pair compared one by one in f64. For tests and benchmarks.
pub fn pairs_brute_force(rows: &UnitRows, threshold: f32) -> Result<Vec<Pair>, DedupError> {
    check_threshold(threshold)?;
    let mut pairs = Vec::new();
    for a in 0..rows.len() {
        for b in a + 1..rows.len() {
            let similarity = rows.similarity(a, b);
            if similarity >= threshold {
                pairs.push(Pair { a, b, similarity });
            }
        }
    }
    Ok(pairs)
}

/// Which search found the pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// All against all, exactly.
    Exact,
    /// An HNSW index: each image's neighbours, approximately.
    Approximate,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Exact => "exact all-pairs",
            Method::Approximate => "approximate (HNSW)",
        })
    }
}

/// How [`find_pairs`] chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Search {
    /// Exact up to [`EXACT_LIMIT`] images, approximate beyond.
    #[default]
    Auto,
    Exact,
    Approximate,
}

/// The pairs at or above `threshold`, by the method `search` picks for this many images.
pub fn find_pairs(
    rows: &UnitRows,
    threshold: f32,
    search: Search,
) -> Result<(Vec<Pair>, Method), DedupError> {
    let method = match search {
        Search::Exact => Method::Exact,
        Search::Approximate => Method::Approximate,
        Search::Auto if rows.len() <= EXACT_LIMIT => Method::Exact,
        Search::Auto => Method::Approximate,
    };
    let pairs = match method {
        Method::Exact => pairs_exact(rows, threshold)?,
        Method::Approximate => pairs_approximate(rows, threshold)?,
    };
    Ok((pairs, method))
}

/// Pairs found through an HNSW index: every image's nearest neighbours (up to
/// [`NEIGHBOURS`]), kept when at or above `threshold`. A group larger than that is still
/// found whole when its members link up through one another.
pub fn pairs_approximate(rows: &UnitRows, threshold: f32) -> Result<Vec<Pair>, DedupError> {
    check_threshold(threshold)?;
    index::neighbour_pairs(rows, threshold)
}

/// Neighbours asked of the index per image.
pub const NEIGHBOURS: usize = 32;

/// One group: indices into the input, first image first, with similarities to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub members: Vec<(usize, f32)>,
}

/// The connected groups of `pairs` over `n` images, in order of their first (earliest)
/// image; members in input order, each with its similarity to the first. Images without a
/// pair are in no group.
pub fn groups(rows: &UnitRows, pairs: &[Pair]) -> Vec<Group> {
    let n = rows.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for p in pairs {
        let (ra, rb) = (root(&mut parent, p.a), root(&mut parent, p.b));
        // The smaller index becomes the root, so a group's root is its first image.
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            parent[hi] = lo;
        }
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        let r = root(&mut parent, i);
        members[r].push(i);
    }
    members
        .into_iter()
        .filter(|m| m.len() > 1)
        .map(|m| {
            let first = m[0];
            Group {
                members: m
                    .into_iter()
                    .map(|i| {
                        let s = if i == first {
                            1.0
                        } else {
                            rows.similarity(first, i)
                        };
                        (i, s)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A group as written out.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRecord<'a> {
    pub group: usize,
    pub members: Vec<MemberRecord<'a>>,
}

/// One member as written out.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRecord<'a> {
    pub path: &'a str,
    pub similarity: f32,
}

/// The records of `groups`, numbered from 1, with the images' names.
pub fn records<'a>(groups: &[Group], names: &'a [String]) -> Vec<GroupRecord<'a>> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| GroupRecord {
            group: i + 1,
            members: g
                .members
                .iter()
                .map(|&(index, similarity)| MemberRecord {
                    path: &names[index],
                    similarity,
                })
                .collect(),
        })
        .collect()
}

/// Writes the groups as JSON Lines (one group a line), one JSON array, or a table.
pub fn write_groups<W: Write>(
    mut out: W,
    format: Format,
    groups: &[GroupRecord<'_>],
) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            for g in groups {
                serde_json::to_writer(&mut out, g)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, groups)?;
            out.write_all(b"\n")?;
        }
        Format::Table | Format::Csv | Format::Tsv => {
            for (i, g) in groups.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "group {}  ({} images)", g.group, g.members.len())?;
                for m in &g.members {
                    writeln!(out, "  {:.4}  {}", m.similarity, m.path)?;
                }
            }
        }
    }
    out.flush()
}

/// xorshift64*, uniform in -1..1: the same vectors on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// For tests and benchmarks: `n` vectors of `dim`, clusters of 1-4 copies of random
/// centres with uniform noise of amplitude `noise` (0.12 puts copies near cosine 0.97 at
/// 512 dimensions), shuffled, so that pairs cross block boundaries. The same everywhere
/// for one `seed`.
pub fn synthetic_clusters(n: usize, dim: usize, noise: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed | 1);
    let mut rows = Vec::with_capacity(n);
    while rows.len() < n {
        let centre: Vec<f32> = (0..dim).map(|_| rng.next()).collect();
        let copies = 1 + ((rng.next() + 1.0) * 2.0) as usize;
        for _ in 0..copies.min(n - rows.len()) {
            rows.push(centre.iter().map(|c| c + noise * rng.next()).collect());
        }
    }
    // A Fisher-Yates shuffle, so a cluster's copies are far apart in the input.
    for i in (1..rows.len()).rev() {
        let j = ((rng.next() + 1.0) / 2.0 * i as f32) as usize % (i + 1);
        rows.swap(i, j);
    }
    rows
}

#[cfg(test)]
mod tests;
