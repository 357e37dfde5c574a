//! Layer normalisation over the rows of a matrix: one pass for the mean, one for the
//! variance and one to write, all over a row that stays in the L1 cache.

use super::dispatch;

#[inline(always)]
fn layer_norm_rows(x: &[f32], dim: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    for (row, dst) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mut lanes = [0.0f32; 16];
        let chunks = row.chunks_exact(16);
        let mut tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for i in 0..16 {
                lanes[i] += c[i];
            }
        }
        let mean = (lanes.iter().sum::<f32>() + tail) / dim as f32;
        lanes = [0.0; 16];
        let chunks = row.chunks_exact(16);
        tail = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for i in 0..16 {
                let d = c[i] - mean;
                lanes[i] += d * d;
            }
        }
        let var = (lanes.iter().sum::<f32>() + tail) / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((d, &v), &g), &b) in dst.iter_mut().zip(row).zip(gamma).zip(beta) {
            *d = (v - mean) * inv * g + b;
        }
    }
}

dispatch! {
    /// Normalises each `dim`-wide row of `x` into `out`: `(x - mean) / sqrt(var + eps) *
    /// gamma + beta`, with the biased variance as torch's `layer_norm`.
    fn layer_norm_serial(x: &[f32], dim: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) => layer_norm_rows
}

/// [`layer_norm_serial`] over rayon when there are many rows.
pub(crate) fn layer_norm(
    x: &[f32],
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    assert!(
        dim > 0 && x.len().is_multiple_of(dim) && out.len() == x.len(),
        "layer norm shapes"
    );
    assert!(
        gamma.len() == dim && beta.len() == dim,
        "layer norm parameters"
    );
    const ROWS_PER_TASK: usize = 64;
    let rows = x.len() / dim;
    if rows <= ROWS_PER_TASK || rayon::current_num_threads() == 1 {
        return layer_norm_serial(x, dim, gamma, beta, eps, out);
    }
    use rayon::prelude::*;
    x.par_chunks(dim * ROWS_PER_TASK)
        .zip(out.par_chunks_mut(dim * ROWS_PER_TASK))
        .for_each(|(x, out)| layer_norm_serial(x, dim, gamma, beta, eps, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_matches_the_definition() {
        for &(rows, dim) in &[(1, 1), (3, 7), (2, 16), (130, 33), (5, 768)] {
            let x: Vec<f32> = (0..rows * dim)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.07 + 3.0)
                .collect();
            let gamma: Vec<f32> = (0..dim).map(|i| 0.5 + i as f32 * 0.01).collect();
            let beta: Vec<f32> = (0..dim).map(|i| i as f32 * -0.02).collect();
            let mut out = vec![f32::NAN; x.len()];
            layer_norm(&x, dim, &gamma, &beta, 1e-5, &mut out);
            for r in 0..rows {
                let row: Vec<f64> = x[r * dim..][..dim].iter().map(|&v| v as f64).collect();
                let mean = row.iter().sum::<f64>() / dim as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
                for j in 0..dim {
                    let want =
                        (row[j] - mean) / (var + 1e-5).sqrt() * gamma[j] as f64 + beta[j] as f64;
                    let got = out[r * dim + j] as f64;
                    assert!(
                        (got - want).abs() < 2e-5,
                        "{rows}x{dim} [{r},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
