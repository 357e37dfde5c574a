//! Throughput measurements behind `vlm bench`: the image tower at several batch sizes, the
//! text tower, and the machine's matrix-multiply rate, which bounds both.
//!
//! Each figure is the best of repeated timed runs after one warm-up run: on a shared
//! machine the best run is the one least disturbed by others, and it is what a quiet
//! machine would give.

mod run;

pub use run::{run, BenchError, BenchOptions, ColdStart, FolderRun, Report};

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::kernels::{Bf16Kernel, Int8Kernel};
use crate::model::config::{ClipConfig, TextConfig, VisionConfig};

/// The CPU's model name, where the OS tells it (Linux).
pub fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Images per second at one batch size.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ImageRate {
    pub batch: usize,
    pub images_per_second: f64,
}

/// Prompts per second for a list of distinct prompts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TextRate {
    pub prompts: usize,
    pub prompts_per_second: f64,
}

/// Runs `work` once to warm up, then repeatedly for at least `budget` (and at least twice),
/// and returns the shortest run.
fn best_time(budget: Duration, mut work: impl FnMut() -> Result<()>) -> Result<Duration> {
    work()?;
    let started = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 2 || started.elapsed() < budget {
        let t = Instant::now();
        work()?;
        best = best.min(t.elapsed());
        runs += 1;
    }
    Ok(best)
}

/// Deterministic pixels in the normalised range, so no file or decoder is involved.
fn synthetic_pixels(count: usize, size: usize) -> Vec<Vec<f32>> {
    let len = 3 * size * size;
    (0..count)
        .map(|image| {
            (0..len)
                .map(|i| (((i * 31 + image * 17) % 255) as f32 / 127.5) - 1.0)
                .collect()
        })
        .collect()
}

/// Image-tower throughput at `batch`, from preprocessed pixels to embeddings.
pub fn image_rate(classifier: &Checkpoint, batch: usize, budget: Duration) -> Result<ImageRate> {
    let pixels = synthetic_pixels(batch.max(1), classifier.model().image_size());
    let best = best_time(budget, || classifier.embed_pixels(&pixels).map(drop))?;
    Ok(ImageRate {
        batch,
        images_per_second: batch as f64 / best.as_secs_f64(),
    })
}

/// Text-tower throughput for `count` distinct prompts "a photo of a label N.", tokenised
/// and embedded the way `vlm classify` does it.
pub fn text_rate(classifier: &Checkpoint, count: usize, budget: Duration) -> Result<TextRate> {
    let prompts: Vec<String> = (0..count.max(1))
        .map(|i| format!("a photo of a label {i}."))
        .collect();
    let best = best_time(budget, || classifier.embed_prompts(&prompts).map(drop))?;
    Ok(TextRate {
        prompts: prompts.len(),
        prompts_per_second: prompts.len() as f64 / best.as_secs_f64(),
    })
}

/// The device's f32 matrix-multiply rate in GFLOP/s, on the shape of a B/32 MLP layer at
/// batch 32 ((1600 × 768) · (768 × 3072)): the ceiling for the encoders' matmuls.
pub fn gemm_gflops(device: &Device, budget: Duration) -> Result<f64> {
    let (m, k, n) = (1600, 768, 3072);
    let fill = |len: usize| {
        (0..len)
            .map(|i| ((i % 97) as f32) / 97.0)
            .collect::<Vec<_>>()
    };
    let lhs = Tensor::from_vec(fill(m * k), (m, k), device).map_err(Error::Tensor)?;
    let rhs = Tensor::from_vec(fill(k * n), (k, n), device).map_err(Error::Tensor)?;
    let best = best_time(budget, || {
        let product = lhs.matmul(&rhs).map_err(Error::Tensor)?;
        // A GPU computes lazily; reading one value waits for the result.
        product
            .narrow(0, 0, 1)
            .and_then(|row| row.narrow(1, 0, 1))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(Error::Tensor)?;
        Ok(())
    })?;
    Ok(2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9)
}

/// The packed CPU kernels' matrix-multiply rate in GFLOP/s on the same B/32 MLP shape as
/// [`gemm_gflops`], with the weight packed once beforehand as the model does: f32 on the
/// widest instruction set here (`bf16` None), or bf16 on the given kernel (`None` where the
/// CPU lacks it).
pub fn kernel_gflops(bf16: Option<Bf16Kernel>, budget: Duration) -> Result<Option<f64>> {
    kernel_gflops_on((1600, 768, 3072), bf16, budget)
}

/// [`kernel_gflops`] on another `(m, k, n)` shape.
pub fn kernel_gflops_on(
    (m, k, n): (usize, usize, usize),
    bf16: Option<Bf16Kernel>,
    budget: Duration,
) -> Result<Option<f64>> {
    use crate::kernels::{self, Act, AmxMatrix, Epilogue, Isa, PackedMatrix};
    if bf16.is_some_and(|kernel| !kernel.supported()) {
        return Ok(None);
    }
    let x: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) / 97.0).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i % 89) as f32) / 89.0).collect();
    let mut out = vec![0.0f32; m * n];
    let ep = Epilogue {
        bias: None,
        act: Act::Identity,
        accumulate: false,
    };
    let best = if let Some(kernel) = bf16 {
        let packed = AmxMatrix::pack(&w, n, k);
        best_time(budget, || {
            kernels::matmul_bf16(&x, m, &packed, &ep, &mut out, kernel);
            Ok(())
        })?
    } else {
        let packed = PackedMatrix::pack(&w, n, k, Isa::detect());
        best_time(budget, || {
            kernels::matmul(&x, m, &packed, &ep, &mut out);
            Ok(())
        })?
    };
    Ok(Some(2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9))
}

/// The int8 kernels' rate in GOP/s (a multiply and an add counted as two, as in GFLOP/s)
/// on the same B/32 MLP shape as [`kernel_gflops`], the weight quantised and packed once
/// beforehand, the activations quantised in every call as the model does; `None` where the
/// CPU lacks `kernel`.
pub fn kernel_int8_gops(kernel: Int8Kernel, budget: Duration) -> Result<Option<f64>> {
    kernel_int8_gops_on((1600, 768, 3072), kernel, budget)
}

/// [`kernel_int8_gops`] on another `(m, k, n)` shape.
pub fn kernel_int8_gops_on(
    (m, k, n): (usize, usize, usize),
    kernel: Int8Kernel,
    budget: Duration,
) -> Result<Option<f64>> {
    use crate::kernels::{self, Act, Epilogue, Int8Matrix};
    if !kernel.supported() {
        return Ok(None);
    }
    let x: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) / 97.0 - 0.5).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i % 89) as f32) / 89.0 - 0.5).collect();
    let mut out = vec![0.0f32; m * n];
    let ep = Epilogue {
        bias: None,
        act: Act::Identity,
        accumulate: false,
    };
    let packed = Int8Matrix::pack(&w, n, k, kernel);
    let best = best_time(budget, || {
        kernels::matmul_int8(&x, m, &packed, &ep, &mut out, kernel);
        Ok(())
    })?;
    Ok(Some(2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9))
}

/// Floating-point operations (multiply and add counted apart) of one transformer stack
/// over `seq` tokens: projections, attention products and the MLP.
fn stack_flops(hidden: usize, intermediate: usize, layers: usize, seq: usize) -> f64 {
    let (h, i, s) = (hidden as f64, intermediate as f64, seq as f64);
    let per_layer = 2.0 * s * h * (4.0 * h + 2.0 * i) + 4.0 * s * s * h;
    per_layer * layers as f64
}

/// Floating-point operations of one image through the vision tower (patch embedding,
/// transformer, projection): about 8.8 GFLOP for ViT-B/32.
pub fn image_flops(vision: &VisionConfig, projection_dim: usize) -> f64 {
    let grid = vision.grid();
    let seq = grid * grid + 1;
    let patch = vision.num_channels * vision.patch_size * vision.patch_size;
    let embed = 2.0 * (grid * grid * patch * vision.hidden_size) as f64;
    let project = 2.0 * (vision.hidden_size * projection_dim) as f64;
    embed
        + stack_flops(
            vision.hidden_size,
            vision.intermediate_size,
            vision.num_hidden_layers,
            seq,
        )
        + project
}

/// Floating-point operations of one prompt of `tokens` tokens through the text tower.
pub fn text_flops(text: &TextConfig, projection_dim: usize, tokens: usize) -> f64 {
    stack_flops(
        text.hidden_size,
        text.intermediate_size,
        text.num_hidden_layers,
        tokens,
    ) + 2.0 * (text.hidden_size * projection_dim) as f64
}

/// Images per second the image tower could reach if every operation ran at `gflops`.
pub fn image_bound(config: &ClipConfig, gflops: f64) -> f64 {
    gflops * 1e9 / image_flops(&config.vision, config.projection_dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b32_image_costs_about_8_8_gflop() {
        let config = ClipConfig::from_json_str(
            r#"{"projection_dim": 512, "text_config": {}, "vision_config": {"patch_size": 32}}"#,
            std::path::Path::new("config.json"),
        )
        .unwrap();
        let gflop = image_flops(&config.vision, config.projection_dim) / 1e9;
        assert!((8.7..8.9).contains(&gflop), "{gflop}");
        // Twelve 512-wide layers over ten tokens.
        let text = text_flops(&config.text, 512, 10);
        let expected = 12.0
            * (2.0 * 10.0 * 512.0 * (4.0 * 512.0 + 2.0 * 2048.0) + 4.0 * 100.0 * 512.0)
            + 2.0 * 512.0 * 512.0;
        assert_eq!(text, expected);
    }

    #[test]
    fn kernel_rates_are_positive_and_finite_where_they_run() {
        // A small shape: unoptimised test builds are slow.
        let shape = (40, 64, 96);
        let f32_rate = kernel_gflops_on(shape, None, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert!(f32_rate.is_finite() && f32_rate > 0.0);
        for kernel in [Bf16Kernel::Amx, Bf16Kernel::Avx512Bf16] {
            let bf16_rate = kernel_gflops_on(shape, Some(kernel), Duration::ZERO).unwrap();
            assert_eq!(bf16_rate.is_some(), kernel.supported());
            assert!(bf16_rate.is_none_or(|r| r.is_finite() && r > 0.0));
        }
    }

    #[test]
    fn gemm_rate_is_positive_and_finite() {
        let rate = gemm_gflops(&Device::Cpu, Duration::ZERO).unwrap();
        assert!(rate.is_finite() && rate > 0.0);
    }

    #[test]
    fn best_time_runs_at_least_three_times() {
        let mut runs = 0;
        best_time(Duration::ZERO, || {
            runs += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(runs, 3);
    }
}
