//! Multi-head self-attention on the fused q/k/v projection.
//!
//! The projection's output row for a token is `[q | k | v]`, each `heads * head_dim`
//! wide; head `h` is the slice at `h * head_dim` of each. Scores, softmax and the weighted
//! sum of values are computed per (sequence, head) in one task as two matrix products on
//! the packed f32 kernels, and the context is written into the `(tokens, hidden)` layout
//! the output projection reads. The query weights already carry the 1/sqrt(head_dim) scale.

use super::dispatch;
use super::gemm::{matmul_serial, Epilogue, PackedMatrix};
use super::math::{exp, Act};
use super::Isa;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Token `i` attends only to tokens `0..=i` (the text tower's causal mask).
    pub causal: bool,
}

/// Where one head's context rows go: row `i` at `offset + i * stride`, `head_dim` wide.
#[derive(Debug, Clone, Copy)]
struct Place {
    offset: usize,
    stride: usize,
}

/// Per-task buffers: the head's queries, its score matrix, its context.
#[derive(Default)]
struct Scratch {
    queries: Vec<f32>,
    scores: Vec<f32>,
    context: Vec<f32>,
}

/// One head as two matrix products on the packed f32 kernels: scores `Q Kᵀ` (the keys
/// packed as the weight), a softmax per row, context `P V` (the values packed as the
/// transposed weight). Packing a head costs one pass over its keys and values; the
/// products then run at the kernels' rate instead of one query at a time.
#[inline(always)]
fn one_head(
    qkv: &[f32],
    shape: Heads,
    b: usize,
    h: usize,
    scratch: &mut Scratch,
    ctx: &mut [f32],
    place: Place,
) {
    let hidden = shape.heads * shape.head_dim;
    let (d, seq) = (shape.head_dim, shape.seq);
    let row =
        |t: usize, part: usize| &qkv[(b * seq + t) * 3 * hidden + part * hidden + h * d..][..d];
    let isa = Isa::detect();
    let plain = Epilogue {
        bias: None,
        act: Act::Identity,
        accumulate: false,
    };
    let queries = &mut scratch.queries;
    queries.clear();
    for i in 0..seq {
        queries.extend_from_slice(row(i, 0));
    }
    let keys = PackedMatrix::pack_serial(seq, d, isa, true, |j| row(j, 1));
    let scores = &mut scratch.scores;
    scores.resize(seq * seq, 0.0);
    matmul_serial(queries, seq, &keys, &plain, scores);
    for (i, s) in scores.chunks_exact_mut(seq).enumerate() {
        let visible = if shape.causal { i + 1 } else { seq };
        softmax(s, visible);
    }
    let values = PackedMatrix::pack_serial(d, seq, isa, false, |t| row(t, 2));
    let context = &mut scratch.context;
    context.resize(seq * d, 0.0);
    matmul_serial(scores, seq, &values, &plain, context);
    for (i, c) in context.chunks_exact(d).enumerate() {
        ctx[place.offset + i * place.stride..][..d].copy_from_slice(c);
    }
}

/// Softmax of the first `visible` scores in place; the rest (masked keys) become 0.
#[inline(always)]
fn softmax(scores: &mut [f32], visible: usize) {
    let (live, masked) = scores.split_at_mut(visible);
    masked.fill(0.0);
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = live.chunks_exact(16);
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = l.max(v);
        }
    }
    max = lanes.into_iter().fold(max, f32::max);
    // Exponentials in one loop and their sum in another, so both vectorise (a float sum
    // in the same loop would pin it to one lane).
    for s in live.iter_mut() {
        *s = exp(*s - max);
    }
    let inv = 1.0 / sum(live);
    for s in live.iter_mut() {
        *s *= inv;
    }
}

/// The context of one query of one head: `q` against the first `visible` of the keys
/// (`keys` transposed, `(head_dim, padded)`), softmax, the weighted sum of `values(j)`.
#[inline(always)]
fn one_query<'a>(
    q: &[f32],
    keys: &[f32],
    padded: usize,
    visible: usize,
    values: &impl Fn(usize) -> &'a [f32],
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = q.len();
    scores.clear();
    scores.resize(padded, 0.0);
    let mut j0 = 0;
    while j0 + 64 <= padded {
        score_chunk::<64>(q, keys, padded, j0, scores);
        j0 += 64;
    }
    while j0 < padded {
        score_chunk::<16>(q, keys, padded, j0, scores);
        j0 += 16;
    }
    // Masked and padding keys weigh exp(-87) = 2e-38 each against a sum of at least 1.
    scores[visible..].fill(f32::NEG_INFINITY);
    let mut lanes = [f32::NEG_INFINITY; 16];
    for chunk in scores.chunks_exact(16) {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = l.max(v);
        }
    }
    let max = lanes.into_iter().fold(f32::NEG_INFINITY, f32::max);
    // Exponentials in one loop and their sum in another, so both vectorise (a float
    // sum in the same loop would pin it to one lane).
    for s in scores.iter_mut() {
        *s = exp(*s - max);
    }
    let inv = 1.0 / sum(scores);
    let probs = &scores[..visible];
    let mut c0 = 0;
    while c0 + 64 <= d {
        weigh_chunk::<64>(probs, inv, values, c0, out);
        c0 += 64;
    }
    while c0 + 16 <= d {
        weigh_chunk::<16>(probs, inv, values, c0, out);
        c0 += 16;
    }
    while c0 < d {
        weigh_chunk::<1>(probs, inv, values, c0, out);
        c0 += 1;
    }
}

/// Scores of query `q` against keys `j0..j0 + W` (`keys` transposed, rows of `padded`),
/// the `W` sums held in registers across the whole head dimension.
#[inline(always)]
fn score_chunk<const W: usize>(
    q: &[f32],
    keys: &[f32],
    padded: usize,
    j0: usize,
    scores: &mut [f32],
) {
    let mut acc = [0.0f32; W];
    for (dd, &qd) in q.iter().enumerate() {
        let k: &[f32; W] = keys[dd * padded + j0..][..W]
            .try_into()
            .unwrap_or(&[0.0; W]);
        for (a, &k) in acc.iter_mut().zip(k) {
            *a = qd.mul_add(k, *a);
        }
    }
    scores[j0..j0 + W].copy_from_slice(&acc);
}

/// Context columns `c0..c0 + W` of one query: the value rows weighed by `probs * inv`, the
/// `W` sums held in registers across all keys.
#[inline(always)]
fn weigh_chunk<'a, const W: usize>(
    probs: &[f32],
    inv: f32,
    values: &impl Fn(usize) -> &'a [f32],
    c0: usize,
    out: &mut [f32],
) {
    let mut acc = [0.0f32; W];
    for (j, &p) in probs.iter().enumerate() {
        let p = p * inv;
        let v: &[f32; W] = values(j)[c0..][..W].try_into().unwrap_or(&[0.0; W]);
        for (a, &v) in acc.iter_mut().zip(v) {
            *a = p.mul_add(v, *a);
        }
    }
    out[c0..c0 + W].copy_from_slice(&acc);
}

/// The sum of `values` in 16 partial sums the compiler keeps in one vector register.
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Heads `heads.0..heads.1` of sequence `b`. With `dense`, `ctx` holds only this one head,
/// `(seq, head_dim)`; otherwise it is the sequence's `(seq, hidden)` block.
#[inline(always)]
fn heads_of_one_sequence(
    qkv: &[f32],
    shape: Heads,
    b: usize,
    heads: (usize, usize),
    dense: bool,
    ctx: &mut [f32],
) {
    let mut scratch = Scratch::default();
    let hidden = shape.heads * shape.head_dim;
    for h in heads.0..heads.1 {
        let place = if dense {
            Place {
                offset: 0,
                stride: shape.head_dim,
            }
        } else {
            Place {
                offset: h * shape.head_dim,
                stride: hidden,
            }
        };
        one_head(qkv, shape, b, h, &mut scratch, ctx, place);
    }
}

dispatch! {
    fn heads_dispatch(qkv: &[f32], shape: Heads, b: usize, heads: (usize, usize), dense: bool, ctx: &mut [f32]) => heads_of_one_sequence
}

/// `qkv`: `(batch * seq, 3 * hidden)`; writes the attention context, `(batch * seq,
/// hidden)`, into `ctx`.
pub(crate) fn attention(qkv: &[f32], shape: Heads, ctx: &mut [f32]) {
    let hidden = shape.heads * shape.head_dim;
    let tokens = shape.batch * shape.seq;
    assert_eq!(qkv.len(), tokens * 3 * hidden, "qkv shape");
    assert_eq!(ctx.len(), tokens * hidden, "context shape");
    if tokens == 0 {
        return;
    }
    use rayon::prelude::*;
    let seq_len = shape.seq * hidden;
    if shape.batch >= 4 * rayon::current_num_threads() {
        ctx.par_chunks_mut(seq_len)
            .enumerate()
            .for_each(|(b, ctx)| heads_dispatch(qkv, shape, b, (0, shape.heads), false, ctx));
    } else {
        // Few sequences: one task per head. Heads write disjoint columns of the same rows,
        // so each task fills its own (seq, head_dim) block, copied in afterwards.
        let d = shape.head_dim;
        let parts: Vec<(usize, usize, Vec<f32>)> = (0..shape.batch)
            .flat_map(|b| (0..shape.heads).map(move |h| (b, h)))
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(b, h)| {
                let mut part = vec![0.0f32; shape.seq * d];
                heads_dispatch(qkv, shape, b, (h, h + 1), true, &mut part);
                (b, h, part)
            })
            .collect();
        for (b, h, part) in parts {
            for (i, row) in part.chunks_exact(d).enumerate() {
                ctx[b * seq_len + i * hidden + h * d..][..d].copy_from_slice(row);
            }
        }
    }
}

/// Keys and values of one attention source (a sequence's key/value cache, or the states of
/// an encoder that a decoder cross-attends to), laid out for [`attend`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvView<'a> {
    /// Keys transposed per head, `(heads, head_dim, padded)`; columns past `len` are zero.
    pub keys_t: &'a [f32],
    /// Columns per key row: `len` or more, a multiple of 16.
    pub padded: usize,
    /// Values, row-major `(len, hidden)` (longer buffers are fine).
    pub values: &'a [f32],
    /// Keys present.
    pub len: usize,
}

/// The query side of an [`attend`] call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queries {
    /// Query rows per source; source `s` owns rows `s * per_source..`.
    pub per_source: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Floats from one query row to the next (the queries may sit inside a wider row).
    pub stride: usize,
    /// The queries are the last `per_source` keys of their source: query `i` sees keys
    /// `0..len - per_source + i + 1` (a decoder's self-attention over its cache).
    pub causal: bool,
}

#[inline(always)]
fn attend_source(q: &[f32], shape: Queries, src: KvView<'_>, ctx: &mut [f32]) {
    let (d, n) = (shape.head_dim, shape.per_source);
    let hidden = shape.heads * d;
    let mut scores = Vec::new();
    for h in 0..shape.heads {
        let keys = &src.keys_t[h * d * src.padded..][..d * src.padded];
        let values = |j: usize| &src.values[j * hidden + h * d..][..d];
        for i in 0..n {
            let visible = if shape.causal {
                src.len + 1 + i - n
            } else {
                src.len
            };
            let query = &q[i * shape.stride + h * d..][..d];
            let out = &mut ctx[i * hidden + h * d..][..d];
            one_query(query, keys, src.padded, visible, &values, &mut scores, out);
        }
    }
}

dispatch! {
    fn attend_dispatch(q: &[f32], shape: Queries, src: KvView<'_>, ctx: &mut [f32]) => attend_source
}

/// Multi-head attention of the queries in `q` over each source's keys and values: source
/// `s` takes query rows `s * per_source..`; the contexts go to `ctx`, `(rows, hidden)`.
pub(crate) fn attend(q: &[f32], shape: Queries, sources: &[KvView<'_>], ctx: &mut [f32]) {
    let (d, n) = (shape.head_dim, shape.per_source);
    let hidden = shape.heads * d;
    let rows = sources.len() * n;
    assert!(shape.stride >= hidden, "query stride");
    assert!(
        rows == 0 || q.len() >= (rows - 1) * shape.stride + hidden,
        "query shape"
    );
    assert_eq!(ctx.len(), rows * hidden, "context shape");
    for src in sources {
        assert!(
            src.len <= src.padded
                && src.padded.is_multiple_of(16)
                && src.keys_t.len() >= shape.heads * d * src.padded
                && src.values.len() >= src.len * hidden
                && (!shape.causal || src.len >= n),
            "key/value shapes"
        );
    }
    if rows == 0 {
        return;
    }
    let work: usize = sources.iter().map(|s| s.len * n * hidden).sum();
    let sequence = |(s, ctx): (usize, &mut [f32])| {
        attend_dispatch(&q[s * n * shape.stride..], shape, sources[s], ctx)
    };
    // Below about 2^18 multiply-adds, handing work to other threads costs more than it saves.
    if sources.len() > 1 && work >= 1 << 18 && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        ctx.par_chunks_mut(n * hidden)
            .enumerate()
            .for_each(sequence);
    } else {
        ctx.chunks_mut(n * hidden).enumerate().for_each(sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(qkv: &[f32], s: Heads) -> Vec<f64> {
        let hidden = s.heads * s.head_dim;
        let mut ctx = vec![0.0f64; s.batch * s.seq * hidden];
        let at = |b: usize, t: usize, part: usize, h: usize, e: usize| {
            qkv[(b * s.seq + t) * 3 * hidden + part * hidden + h * s.head_dim + e] as f64
        };
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..s.seq {
                    let scores: Vec<f64> = (0..s.seq)
                        .map(|j| {
                            if s.causal && j > i {
                                f64::NEG_INFINITY
                            } else {
                                (0..s.head_dim)
                                    .map(|e| at(b, i, 0, h, e) * at(b, j, 1, h, e))
                                    .sum()
                            }
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = w.iter().sum();
                    for e in 0..s.head_dim {
                        ctx[(b * s.seq + i) * hidden + h * s.head_dim + e] =
                            (0..s.seq).map(|j| w[j] / total * at(b, j, 2, h, e)).sum();
                    }
                }
            }
        }
        ctx
    }

    /// Keys and values of `len` rows, laid out as [`attend`] reads them.
    fn source(
        rows: &[Vec<f32>],
        values: &[Vec<f32>],
        heads: usize,
        d: usize,
        extra: usize,
    ) -> (Vec<f32>, Vec<f32>, usize) {
        let len = rows.len();
        let padded = (len + extra).div_ceil(16) * 16;
        let mut keys_t = vec![0.0; heads * d * padded];
        for (j, row) in rows.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                keys_t[(c / d * d + c % d) * padded + j] = v;
            }
        }
        (keys_t, values.concat(), padded)
    }

    #[test]
    fn attend_over_caches_matches_the_fused_kernel() {
        // Each case: sources, queries per source, heads, head width, causal.
        for &(batch, n, heads, d, causal) in &[
            (1, 1, 1, 4, true),
            (2, 3, 2, 8, true),
            (3, 5, 3, 20, false),
            (1, 70, 2, 72, true),
            (4, 1, 4, 16, false),
        ] {
            let hidden = heads * d;
            let s = Heads {
                batch,
                seq: n,
                heads,
                head_dim: d,
                causal,
            };
            let len = batch * n * 3 * hidden;
            let qkv: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.5)
                .collect();
            let mut want = vec![0.0; batch * n * hidden];
            attention(&qkv, s, &mut want);
            let part = |b: usize, t: usize, p: usize| {
                qkv[(b * n + t) * 3 * hidden + p * hidden..][..hidden].to_vec()
            };
            let built: Vec<_> = (0..batch)
                .map(|b| {
                    let keys: Vec<Vec<f32>> = (0..n).map(|t| part(b, t, 1)).collect();
                    let values: Vec<Vec<f32>> = (0..n).map(|t| part(b, t, 2)).collect();
                    source(&keys, &values, heads, d, 5)
                })
                .collect();
            let views: Vec<KvView> = built
                .iter()
                .map(|(k, v, padded)| KvView {
                    keys_t: k,
                    padded: *padded,
                    values: v,
                    len: n,
                })
                .collect();
            let shape = Queries {
                per_source: n,
                heads,
                head_dim: d,
                stride: 3 * hidden,
                causal,
            };
            let mut got = vec![f32::NAN; want.len()];
            attend(&qkv, shape, &views, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-5,
                    "{batch} {n} {heads} {d} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn a_causal_query_at_the_end_of_a_cache_sees_every_key() {
        // One new query against 9 cached keys: its context is the full softmax over them.
        let (heads, d, len) = (2, 3, 9);
        let hidden = heads * d;
        let keys: Vec<Vec<f32>> = (0..len)
            .map(|j| {
                (0..hidden)
                    .map(|c| ((j * 5 + c * 3) % 7) as f32 * 0.3 - 1.0)
                    .collect()
            })
            .collect();
        let values: Vec<Vec<f32>> = (0..len)
            .map(|j| (0..hidden).map(|c| (j * hidden + c) as f32 * 0.1).collect())
            .collect();
        let q: Vec<f32> = (0..hidden).map(|c| c as f32 * 0.2 - 0.4).collect();
        let (keys_t, vals, padded) = source(&keys, &values, heads, d, 0);
        let view = KvView {
            keys_t: &keys_t,
            padded,
            values: &vals,
            len,
        };
        let mut got = vec![0.0; hidden];
        let shape = Queries {
            per_source: 1,
            heads,
            head_dim: d,
            stride: hidden,
            causal: true,
        };
        attend(&q, shape, &[view], &mut got);
        for h in 0..heads {
            let scores: Vec<f64> = keys
                .iter()
                .map(|k| (0..d).map(|e| (q[h * d + e] * k[h * d + e]) as f64).sum())
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = w.iter().sum();
            for e in 0..d {
                let want: f64 = (0..len)
                    .map(|j| w[j] / total * values[j][h * d + e] as f64)
                    .sum();
                assert!((got[h * d + e] as f64 - want).abs() < 1e-5, "{h} {e}");
            }
        }
    }

    #[test]
    fn attention_matches_softmax_of_scores_times_values() {
        for &(batch, seq, heads, head_dim, causal) in &[
            (1, 1, 1, 1, false),
            (1, 5, 2, 3, true),
            (2, 7, 3, 20, false),
            (3, 50, 2, 64, true),
            (9, 4, 1, 17, false),
            // Keys past one 64-wide chunk, head widths past one 64-wide chunk (16 and 8 over).
            (1, 70, 2, 72, true),
            (2, 100, 1, 80, false),
        ] {
            let s = Heads {
                batch,
                seq,
                heads,
                head_dim,
                causal,
            };
            let len = batch * seq * 3 * heads * head_dim;
            let qkv: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.5)
                .collect();
            let mut ctx = vec![f32::NAN; batch * seq * heads * head_dim];
            attention(&qkv, s, &mut ctx);
            let want = reference(&qkv, s);
            for (i, (&g, &w)) in ctx.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() < 2e-5, "{s:?} [{i}]: {g} vs {w}");
            }
        }
    }
}
