//! Multi-head self-attention on the fused q/k/v projection, without copying heads apart.
//!
//! The projection's output row for a token is `[q | k | v]`, each `heads * head_dim`
//! wide; head `h` is the slice at `h * head_dim` of each. Scores, softmax and the weighted
//! sum of values are computed per (sequence, head) in one task, the score row staying in
//! L1, and the context is written straight into the `(tokens, hidden)` layout the output
//! projection reads. The query weights already carry the 1/sqrt(head_dim) scale.

use super::dispatch;
use super::math::exp;

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

/// Per-task buffers: one score row and the head's keys transposed.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    keys: Vec<f32>,
}

// Plain `for` loops over slices only: an iterator adaptor's `fold` or `extend` can be
// compiled outside the caller's `#[target_feature]`, which left the scores in SSE without
// FMA (12% of a bf16 batch-32 forward in a profile).
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
    // Keys transposed, `(head_dim, padded)` with rows padded to whole vectors: a query's
    // scores are then `head_dim` vector multiply-adds along the keys instead of `seq` short
    // dot products, with no loop tails.
    let padded = seq.div_ceil(16) * 16;
    let keys = &mut scratch.keys;
    keys.clear();
    keys.resize(d * padded, 0.0);
    for j in 0..seq {
        for (dd, &v) in row(j, 1).iter().enumerate() {
            keys[dd * padded + j] = v;
        }
    }
    let scores = &mut scratch.scores;
    for i in 0..seq {
        let visible = if shape.causal { i + 1 } else { seq };
        scores.clear();
        scores.resize(padded, 0.0);
        let q = row(i, 0);
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
        let out = &mut ctx[place.offset + i * place.stride..][..d];
        let probs = &scores[..visible];
        let values = |j: usize| row(j, 2);
        let mut c0 = 0;
        while c0 + 64 <= d {
            weigh_chunk::<64>(probs, inv, &values, c0, out);
            c0 += 64;
        }
        while c0 + 16 <= d {
            weigh_chunk::<16>(probs, inv, &values, c0, out);
            c0 += 16;
        }
        while c0 < d {
            weigh_chunk::<1>(probs, inv, &values, c0, out);
            c0 += 1;
        }
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
