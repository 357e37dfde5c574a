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
//! memory with those of another. [`Images`] collects a job's embeddings for it.
//!
//! Beyond what fits that search, the embeddings live in a database: [`in_store`] asks the
//! HNSW index of a PostgreSQL table (`vlm embed --to`, then `vlm dedup --in`) for each
//! row's nearest neighbours, approximately, and never reads an image. [`Duplicates`] says
//! which of the two found its groups ([`Method`]).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use crate::inputs::Source;
use crate::job::{Embedded, JobError, Level, Progress, Sink};
use crate::kernels::{matmul, Act, Epilogue, Isa, PackedMatrix};
use crate::organize::Organizer;
use crate::output::Format;
use crate::store::{self, Address, ModelStamp, StoreError};

/// The default `--threshold`: the cosine similarity at or above which two images are
/// near-duplicates (see docs/photos.md for the measurements behind it).
pub const DEFAULT_THRESHOLD: f32 = 0.95;

/// Embeddings per packed block: 1024 columns of similarities per pass, 4 MiB of packed
/// values at 1024 dimensions, so a block stays in the last-level cache.
const BLOCK: usize = 1024;
/// Rows multiplied against a block at once: their similarities (`ROWS x BLOCK` f32, 16 MiB)
/// are scanned and dropped before the next rows.
const ROWS: usize = 4096;

/// Why near-duplicates could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error(transparent)]
    Store(#[from] StoreError),
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
#[derive(Debug, Clone, Default)]
pub struct UnitRows {
    data: Vec<f32>,
    dim: usize,
}

impl UnitRows {
    /// Normalises `rows` (all of one length); a zero row stays zero (similar to nothing).
    pub fn new<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self, DedupError> {
        let mut unit = Self::default();
        for row in rows {
            unit.push(row.as_ref())?;
        }
        Ok(unit)
    }

    /// Appends `row`, scaled to unit length; the first row sets the length of all.
    pub fn push(&mut self, row: &[f32]) -> Result<(), DedupError> {
        if self.data.is_empty() {
            self.dim = row.len();
        }
        if row.len() != self.dim {
            return Err(DedupError::Dimension {
                index: self.len(),
                got: row.len(),
                want: self.dim,
            });
        }
        let start = self.data.len();
        self.data.extend_from_slice(row);
        crate::search::normalize(&mut self.data[start..]);
        Ok(())
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// All against all, exactly, in memory.
    Exact,
    /// The HNSW index of a database table (shown without its password): each row's
    /// [`NEIGHBOURS`] nearest, approximately.
    Index(String),
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Exact => f.write_str("exact all-pairs"),
            Method::Index(shown) => write!(
                f,
                "the HNSW index of {shown} (approximate: each image's {NEIGHBOURS} nearest)"
            ),
        }
    }
}

/// Neighbours asked of a database's index per image: a group larger than that is still
/// found whole when its members link up through one another.
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
    linked(rows.len(), pairs)
        .into_iter()
        .map(|members| to_first(&members, |first, i| rows.similarity(first, i)))
        .collect()
}

/// The indices of each connected set of `pairs` over `n` images with more than one
/// member, in order of their first image; members in input order.
fn linked(n: usize, pairs: &[Pair]) -> Vec<Vec<usize>> {
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
    members.into_iter().filter(|m| m.len() > 1).collect()
}

/// A group of `members` (first image first), each with `similarity(first, member)`.
fn to_first(members: &[usize], mut similarity: impl FnMut(usize, usize) -> f32) -> Group {
    let first = members[0];
    Group {
        members: members
            .iter()
            .map(|&i| {
                (
                    i,
                    if i == first {
                        1.0
                    } else {
                        similarity(first, i)
                    },
                )
            })
            .collect(),
    }
}

/// The images a job embedded, as its sink: each one's name, local file (for
/// `--organize`) and unit embedding, in input order. Failed images are left out (the job
/// counts them).
#[derive(Debug, Default)]
pub struct Images {
    names: Vec<String>,
    files: Vec<Option<PathBuf>>,
    rows: UnitRows,
}

impl Sink<Embedded> for Images {
    fn write(&mut self, batch: &[Embedded], _: &dyn Progress) -> Result<(), JobError> {
        for done in batch {
            if let Ok(row) = &done.embedding {
                self.rows.push(row).map_err(JobError::sink)?;
                self.names.push(done.input.display.clone());
                self.files.push(match &done.input.source {
                    Source::File(path) => Some(path.clone()),
                    Source::Url(_) => None,
                });
            }
        }
        Ok(())
    }
}

impl Images {
    /// The groups of images at or above `threshold`, found exactly, all against all.
    pub fn duplicates(self, threshold: f32) -> Result<Duplicates, DedupError> {
        let started = Instant::now();
        let pairs = pairs_exact(&self.rows, threshold)?;
        Ok(Duplicates {
            groups: groups(&self.rows, &pairs),
            pairs: pairs.len(),
            images: self.rows.len(),
            names: self.names,
            files: self.files,
            threshold,
            method: Method::Exact,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Near-duplicate groups and how they were found.
#[derive(Debug)]
pub struct Duplicates {
    /// Indices into `names` and `files`.
    pub groups: Vec<Group>,
    /// Each image's name (its path as shown, or a stored row's path).
    pub names: Vec<String>,
    /// Each image's local file, where it has one.
    pub files: Vec<Option<PathBuf>>,
    /// Pairs at or above the threshold.
    pub pairs: usize,
    /// Images compared.
    pub images: usize,
    pub threshold: f32,
    pub method: Method,
    /// Time spent finding the pairs and groups.
    pub seconds: f64,
}

impl Duplicates {
    /// The groups as written out, numbered from 1.
    pub fn records(&self) -> Vec<GroupRecord<'_>> {
        records(&self.groups, &self.names)
    }

    /// Images in some group.
    pub fn grouped(&self) -> usize {
        self.groups.iter().map(|g| g.members.len()).sum()
    }

    /// With `--verbose`: which search found the pairs, and how long it took.
    pub fn say_search(&self, progress: &dyn Progress) {
        progress.say(
            Level::Detail,
            &format_args!(
                "{} pairs at or above {} among {} images, by {} in {:.2} s",
                self.pairs, self.threshold, self.images, self.method, self.seconds
            ),
        );
    }

    /// The closing line: groups, images, failures, time.
    pub fn say_summary(
        &self,
        failed: usize,
        skipped: usize,
        seconds: f64,
        progress: &dyn Progress,
    ) {
        progress.say(
            Level::Note,
            &format_args!(
                "{} groups of near-duplicates ({} of {} images); failed {failed}, skipped {skipped} in {seconds:.1} s",
                self.groups.len(),
                self.grouped(),
                self.images,
            ),
        );
    }

    /// Links (or copies) each group's images into `group-NNNN/` under the organizer's
    /// destination; returns how many could not be placed (each reported).
    pub fn organize(&self, organizer: &mut Organizer, progress: &dyn Progress) -> usize {
        let mut failed = 0;
        for (number, group) in self.groups.iter().enumerate() {
            let folder = format!("group-{:04}", number + 1);
            for &(index, _) in &group.members {
                let Some(path) = &self.files[index] else {
                    progress.say(
                        Level::Error,
                        &format_args!(
                            "{}: not organized: only local files can be linked",
                            self.names[index]
                        ),
                    );
                    failed += 1;
                    continue;
                };
                match organizer.place(path, Some(&folder)) {
                    Ok(placement) => progress.say(Level::of_change(placement.dry_run), &placement),
                    Err(err) => {
                        failed += 1;
                        progress.say(Level::Error, &err);
                    }
                }
            }
        }
        failed
    }
}

/// `vlm dedup --in ADDRESS`: the groups among the rows of a table `stamp`'s model filled,
/// through its HNSW index (each row's [`NEIGHBOURS`] nearest, approximately); no image is
/// read. Rows are named and ordered by path. `cancel` stops it between chunks of rows.
pub fn in_store(
    address: &Address,
    stamp: ModelStamp,
    threshold: f32,
    cancel: Option<&AtomicBool>,
    progress: &dyn Progress,
) -> Result<Option<Duplicates>, DedupError> {
    check_threshold(threshold)?;
    let started = Instant::now();
    let mut db = store::open_for_search(address, stamp)?;
    let Some(near) = db.near_pairs(threshold, NEIGHBOURS, cancel, progress)? else {
        return Ok(None);
    };
    let pairs: Vec<Pair> = near
        .pairs
        .iter()
        .map(|&(a, b, similarity)| Pair { a, b, similarity })
        .collect();
    let linked = linked(near.paths.len(), &pairs);
    // The similarity of each member to its group's first image, from the stored rows:
    // members linked through others have no pair with the first.
    let members: Vec<String> = linked
        .iter()
        .flatten()
        .map(|&i| near.paths[i].clone())
        .collect();
    let stored: HashMap<String, Vec<f32>> = db.embeddings_of(&members)?;
    let mut rows = UnitRows::default();
    let mut row_of = HashMap::new();
    for &i in linked.iter().flatten() {
        if let Some(embedding) = stored.get(&near.paths[i]) {
            row_of.insert(i, rows.len());
            rows.push(embedding)?;
        }
    }
    let groups = linked
        .iter()
        .map(|members| {
            to_first(members, |first, i| {
                match (row_of.get(&first), row_of.get(&i)) {
                    (Some(&f), Some(&j)) => rows.similarity(f, j),
                    // A row deleted while this ran.
                    _ => f32::NAN,
                }
            })
        })
        .collect();
    Ok(Some(Duplicates {
        groups,
        pairs: pairs.len(),
        images: near.paths.len(),
        // The paths were stored as vlm showed the inputs: files unless they are URLs.
        files: near
            .paths
            .iter()
            .map(|path| (!crate::inputs::is_url(path)).then(|| PathBuf::from(path)))
            .collect(),
        names: near.paths,
        threshold,
        method: Method::Index(db.shown().to_string()),
        seconds: started.elapsed().as_secs_f64(),
    }))
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
