//! Similarity search: rank many embeddings by cosine similarity to one query embedding,
//! keep the best N, and write them out.
//!
//! The ranking is deterministic: highest similarity first, equal similarities in input
//! order, and a similarity that is not a number (an embedding of NaNs) ranks last.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::checkpoint::{self, Checkpoint};
use crate::error::Error;
use crate::inputs::{self, Event, Input, InputError, InputOptions, SkipReason, Source};
use crate::job::{Embedded, Job, JobError, Level, Progress, SinkFn, Tally};
use crate::output::{csv_field, tsv_field, Format};

/// Why a query cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("--image {arg} names more than one image; give one file")]
    SeveralImages { arg: String },
    #[error("--image {arg} names no image")]
    NoImage { arg: String },
    #[error("cannot use --image {}: {reason}", path.display())]
    Skipped {
        path: std::path::PathBuf,
        reason: SkipReason,
    },
    #[error("cannot use --image: {0}")]
    Input(InputError),
    #[error(transparent)]
    Find(InputError),
    #[error("cannot use the query image {display}")]
    Image {
        display: String,
        #[source]
        cause: Box<Error>,
    },
    #[error("internal error: the query image was not embedded; please report it")]
    NotEmbedded,
    #[error("internal error: the text encoder returned no embedding; please report it")]
    NoTextEmbedding,
    #[error(transparent)]
    Embed(Box<Error>),
}

impl From<Error> for QueryError {
    fn from(error: Error) -> Self {
        Self::Embed(Box::new(error))
    }
}

/// What to search for, as given: a text, or `--image`.
#[derive(Debug, Clone)]
pub enum QuerySpec {
    Text(String),
    Image(String),
}

/// What to search for, found: a text, or one image input.
pub enum Query {
    Text(String),
    Image(Input),
}

impl QuerySpec {
    /// The query, with `--image` found the way inputs are (one image, no skips).
    pub fn find(&self) -> Result<Query, QueryError> {
        let arg = match self {
            Self::Text(text) => return Ok(Query::Text(text.clone())),
            Self::Image(arg) => arg,
        };
        let mut found = None;
        let events = inputs::discover(std::slice::from_ref(arg), None, &InputOptions::default())
            .map_err(QueryError::Find)?;
        for event in events {
            match event {
                Event::Input(input) if found.is_none() => found = Some(input),
                Event::Input(_) => return Err(QueryError::SeveralImages { arg: arg.clone() }),
                Event::Skipped { path, reason } => {
                    return Err(QueryError::Skipped { path, reason })
                }
                Event::Error(err) => return Err(QueryError::Input(err)),
            }
        }
        found
            .map(Query::Image)
            .ok_or_else(|| QueryError::NoImage { arg: arg.clone() })
    }
}

impl Query {
    /// Leaves the query image out of `inputs` (the same file, however it was named), so an
    /// image search does not find itself first; says so with `--verbose`.
    pub fn leave_out_of(&self, inputs: &mut Vec<Input>, progress: &dyn Progress) {
        let Query::Image(Input {
            source: Source::File(path),
            ..
        }) = self
        else {
            return;
        };
        if exclude_file(inputs, path) > 0 {
            progress.say(
                Level::Detail,
                &format_args!("left the query image {} out of the results", path.display()),
            );
        }
    }

    /// How a stored row of the query image is keyed ([`Input::key`], to leave it out of a
    /// table search).
    pub fn own_row(&self) -> Option<String> {
        match self {
            Query::Image(input) => Some(input.key()),
            Query::Text(_) => None,
        }
    }

    /// The query's embedding with `job`'s model, `checkpoint` (warning about a text cut to
    /// the model's context); a failure to read the image is the run's, not one file's.
    pub fn embed(
        &self,
        checkpoint: &Checkpoint,
        job: &Job,
        progress: &dyn Progress,
    ) -> Result<Vec<f32>, QueryError> {
        match self {
            Query::Text(text) => text_query(checkpoint, text, progress),
            Query::Image(input) => {
                let (mut done, _) = job.collect(vec![input.clone()])?;
                done.pop()
                    .ok_or(QueryError::NotEmbedded)?
                    .embedding
                    .map_err(|cause| QueryError::Image {
                        display: input.display.clone(),
                        cause: Box::new(cause),
                    })
            }
        }
    }
}

/// The embedding of a text query (warning when it was cut to the model's context).
fn text_query(
    checkpoint: &Checkpoint,
    text: &str,
    progress: &dyn Progress,
) -> Result<Vec<f32>, QueryError> {
    let prompts = [text.to_string()];
    let embedded = checkpoint.embed_prompts(&prompts)?;
    checkpoint::warn_truncated(
        &prompts,
        &embedded.truncated,
        checkpoint.model().text_context(),
        progress,
    );
    embedded
        .embeddings
        .to_vec2::<f32>()
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .ok_or(QueryError::NoTextEmbedding)
}

/// Matches ranked 1, 2, ... from `(path, similarity)` pairs, best first.
pub fn matches(ranked: impl IntoIterator<Item = (String, f32)>) -> Vec<Match> {
    ranked
        .into_iter()
        .enumerate()
        .map(|(rank, (path, similarity))| Match {
            rank: rank + 1,
            path,
            similarity,
        })
        .collect()
}

/// Embeds `inputs` with `job` and ranks them by cosine similarity to `query`: the best
/// `n`, best first, and the run's tally (`done` images searched).
pub fn rank_inputs(
    job: &Job,
    inputs: Vec<Input>,
    query: &[f32],
    n: usize,
    progress: &dyn Progress,
) -> Result<(Vec<Match>, Tally), JobError> {
    let query = CosineQuery::new(query);
    let names: Vec<String> = inputs.iter().map(|input| input.display.clone()).collect();
    let mut top = TopN::new(n);
    let mut index = 0;
    let mut sink = SinkFn(|batch: &[Embedded], _: &dyn Progress| {
        for done in batch {
            if let Ok(row) = &done.embedding {
                top.push(Hit {
                    index,
                    similarity: query.similarity(row),
                });
            }
            index += 1;
        }
        Ok(())
    });
    let tally = job.run(inputs, &mut sink, progress)?;
    let ranked = top
        .into_sorted()
        .into_iter()
        .map(|hit| (names[hit.index].clone(), hit.similarity));
    Ok((matches(ranked), tally))
}

/// Independent f64 accumulators per sum: a single running sum is one long chain of
/// dependent additions, which the CPU cannot overlap; eight chains it can (and the compiler
/// can put them in vector registers).
const LANES: usize = 8;

/// `(a·b, b·b)` summed in f64 over [`LANES`] accumulators.
fn dot_and_norm(a: &[f32], b: &[f32]) -> (f64, f64) {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut dot = [0.0f64; LANES];
    let mut bb = [0.0f64; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            let (x, y) = (f64::from(x[i]), f64::from(y[i]));
            dot[i] += x * y;
            bb[i] += y * y;
        }
    }
    let (mut dot, mut bb) = (dot.iter().sum::<f64>(), bb.iter().sum::<f64>());
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        bb += y * y;
    }
    (dot, bb)
}

/// Cosine similarity of two vectors, summed in f64. A zero vector is similar to nothing
/// (0), rather than NaN.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    CosineQuery::new(a).similarity(b)
}

/// A query to score many embeddings against: its norm is taken once, not per candidate.
#[derive(Debug, Clone)]
pub struct CosineQuery {
    query: Vec<f32>,
    norm: f64,
}

impl CosineQuery {
    /// Prepares `query` (any length; a zero query is similar to nothing).
    pub fn new(query: &[f32]) -> Self {
        let (_, aa) = dot_and_norm(query, query);
        Self {
            query: query.to_vec(),
            norm: aa.sqrt(),
        }
    }

    /// The cosine similarity of the query and `row`, as [`cosine`] defines it.
    pub fn similarity(&self, row: &[f32]) -> f32 {
        let (dot, bb) = dot_and_norm(&self.query, row);
        if self.norm == 0.0 || bb == 0.0 {
            return 0.0;
        }
        (dot / (self.norm * bb.sqrt())) as f32
    }
}

/// Scales `v` to unit L2 norm in place; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// One ranked candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position of the candidate in the input order.
    pub index: usize,
    /// Its cosine similarity to the query.
    pub similarity: f32,
}

impl Hit {
    /// NaN ranks below everything, so a broken embedding never tops a search.
    fn key(&self) -> f32 {
        if self.similarity.is_nan() {
            f32::NEG_INFINITY
        } else {
            self.similarity
        }
    }
}

/// Orders hits so that the better one is greater: higher similarity, then earlier input.
#[derive(Debug, Clone, Copy)]
struct Better(Hit);

impl Ord for Better {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .key()
            .total_cmp(&other.0.key())
            .then(other.0.index.cmp(&self.0.index))
    }
}

impl PartialOrd for Better {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Better {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Better {}

/// The `n` best hits seen so far, in memory proportional to `n` rather than to the number
/// of candidates, so a search streams over any number of images.
#[derive(Debug)]
pub struct TopN {
    n: usize,
    /// A min-heap: the worst hit kept is on top, ready to be displaced.
    heap: BinaryHeap<Reverse<Better>>,
}

impl TopN {
    /// Keeps the best `n` hits.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            heap: BinaryHeap::with_capacity(n.min(1 << 16) + 1),
        }
    }

    /// Offers a candidate; the order of offers does not change the result.
    pub fn push(&mut self, hit: Hit) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() < self.n {
            self.heap.push(Reverse(Better(hit)));
        } else if self
            .heap
            .peek()
            .is_some_and(|Reverse(worst)| Better(hit) > *worst)
        {
            self.heap.pop();
            self.heap.push(Reverse(Better(hit)));
        }
    }

    /// The hits kept, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        // Ascending order of Reverse is descending order of Better: best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(Better(hit))| hit)
            .collect()
    }
}

/// Ranks `candidates` by cosine similarity to `query` and returns the best `n`, best first.
pub fn top_n<'a>(
    query: &[f32],
    candidates: impl IntoIterator<Item = &'a [f32]>,
    n: usize,
) -> Vec<Hit> {
    let query = CosineQuery::new(query);
    let mut top = TopN::new(n);
    for (index, candidate) in candidates.into_iter().enumerate() {
        top.push(Hit {
            index,
            similarity: query.similarity(candidate),
        });
    }
    top.into_sorted()
}

/// Leaves out the inputs that are the file `query` itself (the same file by canonical path,
/// however it was named), so an image search does not find its own query first. Returns how
/// many were left out.
pub fn exclude_file(inputs: &mut Vec<Input>, query: &Path) -> usize {
    let Ok(query) = query.canonicalize() else {
        return 0;
    };
    let before = inputs.len();
    inputs.retain(|input| match &input.source {
        Source::File(path) => path.canonicalize().map_or(true, |p| p != query),
        Source::Url(_) => true,
    });
    before - inputs.len()
}

/// One line of search output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// 1 for the best match.
    pub rank: usize,
    /// The image, as its input was displayed.
    pub path: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

/// Writes search results: a table with a header, a JSON array, JSON Lines, or CSV/TSV with a
/// `rank,path,similarity` header.
pub fn write_results<W: Write>(mut out: W, format: Format, results: &[Match]) -> io::Result<W> {
    match format {
        Format::Table => {
            writeln!(out, "{:>4}  {:>10}  path", "rank", "similarity")?;
            for r in results {
                writeln!(out, "{:>4}  {:>10.4}  {}", r.rank, r.similarity, r.path)?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, results)?;
            writeln!(out)?;
        }
        Format::Jsonl => {
            for r in results {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            }
        }
        Format::Csv | Format::Tsv => {
            let (separator, escape): (&str, fn(&str) -> String) = if format == Format::Tsv {
                ("\t", tsv_field)
            } else {
                (",", csv_field)
            };
            writeln!(out, "rank{separator}path{separator}similarity")?;
            for r in results {
                writeln!(
                    out,
                    "{}{separator}{}{separator}{}",
                    r.rank,
                    escape(&r.path),
                    r.similarity
                )?;
            }
        }
    }
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(index: usize, similarity: f32) -> Hit {
        Hit { index, similarity }
    }

    #[test]
    fn lanes_give_the_sequential_f64_sum_for_every_length() {
        // Deterministic values in [-1, 1).
        let mut state = 0x2545_f491_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for len in [1, 3, 7, 8, 9, 17, 512, 768] {
            let a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(&b) {
                let (x, y) = (f64::from(x), f64::from(y));
                dot += x * y;
                aa += x * x;
                bb += y * y;
            }
            let want = (dot / (aa.sqrt() * bb.sqrt())) as f32;
            let query = CosineQuery::new(&a);
            assert!((query.similarity(&b) - want).abs() <= 1e-7, "length {len}");
            assert_eq!(query.similarity(&b), cosine(&a, &b));
        }
    }

    #[test]
    fn cosine_matches_the_definition_and_survives_zero() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(cosine(&[2.0, 4.0], &[-1.0, -2.0]), -1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[1.0, 2.0], &[0.0, 0.0]), 0.0);
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0f32; 3];
        normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn top_n_is_the_head_of_a_full_sort_with_ties_in_input_order() {
        let query = [1.0, 0.0];
        let rows: Vec<[f32; 2]> = vec![
            [0.0, 1.0],  // 0.0
            [1.0, 1.0],  // 0.707
            [2.0, 0.0],  // 1.0
            [1.0, 0.0],  // 1.0, tie with 2: later
            [-1.0, 0.0], // -1.0
            [3.0, 3.0],  // 0.707, tie with 1
        ];
        let hits = top_n(&query, rows.iter().map(|r| r.as_slice()), 4);
        let order: Vec<usize> = hits.iter().map(|h| h.index).collect();
        assert_eq!(order, [2, 3, 1, 5]);
        assert_eq!(hits[0].similarity, 1.0);
        let all = top_n(&query, rows.iter().map(|r| r.as_slice()), 100);
        assert_eq!(all.len(), 6);
        assert_eq!(all.last().map(|h| h.index), Some(4));
        assert!(top_n(&query, rows.iter().map(|r| r.as_slice()), 0).is_empty());
    }

    #[test]
    fn offer_order_does_not_matter_and_nan_ranks_last() {
        let hits = [
            hit(0, 0.5),
            hit(1, f32::NAN),
            hit(2, 0.9),
            hit(3, 0.5),
            hit(4, -0.2),
            hit(5, 0.9),
        ];
        let ranked = |order: &[usize], n: usize| {
            let mut top = TopN::new(n);
            for &i in order {
                top.push(hits[i]);
            }
            top.into_sorted()
                .iter()
                .map(|h| h.index)
                .collect::<Vec<_>>()
        };
        assert_eq!(ranked(&[0, 1, 2, 3, 4, 5], 6), [2, 5, 0, 3, 4, 1]);
        assert_eq!(ranked(&[5, 4, 3, 2, 1, 0], 6), [2, 5, 0, 3, 4, 1]);
        assert_eq!(ranked(&[1, 3, 5, 0, 2, 4], 3), [2, 5, 0]);
        assert_eq!(ranked(&[1], 3), [1]);
    }

    #[test]
    fn the_query_file_is_excluded_by_identity_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let input = |path: &Path| Input {
            display: path.display().to_string(),
            source: Source::File(path.to_path_buf()),
        };
        let mut inputs = vec![
            input(&a),
            input(&b),
            input(&dir.path().join(".").join("a.png")),
        ];
        assert_eq!(exclude_file(&mut inputs, &a), 2);
        assert_eq!(inputs, [input(&b)]);
        assert_eq!(exclude_file(&mut inputs, &dir.path().join("none.png")), 0);
    }

    #[test]
    fn every_format_holds_rank_path_and_similarity() {
        let results = [
            Match {
                rank: 1,
                path: "a, b.jpg".into(),
                similarity: 0.5,
            },
            Match {
                rank: 2,
                path: "c.jpg".into(),
                similarity: -0.25,
            },
        ];
        let render = |format| {
            String::from_utf8(write_results(Vec::new(), format, &results).unwrap()).unwrap()
        };
        assert_eq!(
            render(Format::Csv),
            "rank,path,similarity\n1,\"a, b.jpg\",0.5\n2,c.jpg,-0.25\n"
        );
        assert_eq!(
            render(Format::Tsv),
            "rank\tpath\tsimilarity\n1\ta, b.jpg\t0.5\n2\tc.jpg\t-0.25\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(json[1]["path"], "c.jpg");
        assert_eq!(json[0]["rank"], 1);
        let jsonl = render(Format::Jsonl);
        let last: serde_json::Value = serde_json::from_str(jsonl.lines().nth(1).unwrap()).unwrap();
        assert_eq!(last["similarity"], -0.25);
        assert_eq!(
            render(Format::Table),
            "rank  similarity  path\n   1      0.5000  a, b.jpg\n   2     -0.2500  c.jpg\n"
        );
    }
}
