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
