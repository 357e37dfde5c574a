//! The packed CPU kernels against candle's ops on the same checkpoint, in one process:
//! images/s at several batch sizes, prompts/s, and how far the embeddings move, for f32,
//! bf16 (where the CPU has it) and int8 on each int8 kernel the CPU runs.
//!
//! cargo run --release --example kernels_vs_candle -- CHECKPOINT_DIR [BATCH...]
//!
//! CHECKPOINT_DIR holds config.json and model.safetensors (a random B/32 one comes from
//! examples/compare_transformers.py). Threads follow RAYON_NUM_THREADS. Each rate is the
//! best of several runs after a warm-up; on a shared machine compare the ratios, not the
//! absolute figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use vlm::model::config::ClipConfig;
use vlm::model::{ClipModel, Int8Kernel, LoadOptions, Precision};

fn best(budget: Duration, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    work()?;
    let start = Instant::now();
    let mut best = f64::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        work()?;
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    Ok(best)
}

fn pixels(batch: usize, size: usize) -> anyhow::Result<Tensor> {
    let data: Vec<f32> = (0..batch * 3 * size * size)
        .map(|i| ((i * 31 % 255) as f32 / 127.5) - 1.0)
        .collect();
    Ok(Tensor::from_vec(
        data,
        (batch, 3, size, size),
        &Device::Cpu,
    )?)
}

fn cosines(a: &Tensor, b: &Tensor) -> anyhow::Result<(f32, f32)> {
    let (a, b) = (a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
    let mut worst_cos = 1.0f32;
    let mut worst_abs = 0.0f32;
    for (x, y) in a.iter().zip(&b) {
        let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let nx: f32 = x.iter().map(|p| p * p).sum::<f32>().sqrt();
        let ny: f32 = y.iter().map(|p| p * p).sum::<f32>().sqrt();
        worst_cos = worst_cos.min(dot / (nx * ny));
        for (p, q) in x.iter().zip(y) {
            worst_abs = worst_abs.max((p - q).abs());
        }
    }
    Ok((worst_cos, worst_abs))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir =
        PathBuf::from(args.next().ok_or_else(|| {
            anyhow::anyhow!("usage: kernels_vs_candle CHECKPOINT_DIR [BATCH...]")
        })?);
    let batches: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let batches = if batches.is_empty() {
        vec![1, 8, 32]
    } else {
        batches
    };
    let config = ClipConfig::from_file(&dir.join("config.json"))?;
    let weights = dir.join("model.safetensors");
    let device = Device::Cpu;
    let budget = Duration::from_secs(3);

    let t = Instant::now();
    let candle = ClipModel::load_on_candle(&config, &weights, &device, DType::F32)?;
    let candle_load = t.elapsed().as_secs_f64();
    let mut models = Vec::new();
    // f32, bf16, and int8 on every int8 kernel this CPU runs.
    let int8 = Int8Kernel::ALL.into_iter().filter(|k| k.supported());
    let loads = [
        (Precision::from(DType::F32), None),
        (DType::BF16.into(), None),
    ]
    .into_iter()
    .chain(int8.map(|k| (Precision::Int8, Some(k))));
    for (precision, int8_kernel) in loads {
        let t = Instant::now();
        let options = LoadOptions {
            int8_kernel,
            ..Default::default()
        };
        match ClipModel::load_with(&config, &weights, &device, precision, &options) {
            Ok(model) => {
                println!(
                    "{:<26} loaded in {:.2} s",
                    model.kernels(),
                    t.elapsed().as_secs_f64()
                );
                models.push(model);
            }
            Err(err) => println!("{}: {err}", precision.name()),
        }
    }
    println!(
        "threads {}; candle loaded in {candle_load:.2} s",
        rayon::current_num_threads()
    );

    let size = candle.image_size();
    for &batch in &batches {
        let input = pixels(batch, size)?;
        let reference = candle.encode_images(&input)?;
        let base = best(budget, || {
            candle.encode_images(&input)?;
            Ok(())
        })?;
        println!(
            "images batch {batch:>3}: candle {:>7.2}/s",
            batch as f64 / base
        );
        for model in &models {
            let (cos, abs) = cosines(&reference, &model.encode_images(&input)?)?;
            let time = best(budget, || {
                model.encode_images(&input)?;
                Ok(())
            })?;
            println!(
                "    {:<26} {:>7.2}/s  x{:.2} candle   min cos {cos:.7}  max |diff| {abs:.2e}",
                model.kernels(),
                batch as f64 / time,
                base / time
            );
        }
    }

    // 256 prompts of 7 to 12 tokens: start, words, end (the ids only need to be in range).
    let vocab = config.text.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..256u32)
        .map(|i| {
            let mut ids = vec![vocab - 2];
            ids.extend((0..5 + i % 6).map(|j| (i * 97 + j * 13) % (vocab - 2)));
            ids.push(vocab - 1);
            ids
        })
        .collect();
    let reference = candle.encode_text(&prompts)?;
    let base = best(budget, || {
        candle.encode_text(&prompts)?;
        Ok(())
    })?;
    println!(
        "text, 256 prompts in one batch: candle {:>7.1}/s",
        256.0 / base
    );
    for model in &models {
        let (cos, abs) = cosines(&reference, &model.encode_text(&prompts)?)?;
        let time = best(budget, || {
            model.encode_text(&prompts)?;
            Ok(())
        })?;
        println!(
            "    {:<26} {:>7.1}/s  x{:.2} candle   min cos {cos:.7}  max |diff| {abs:.2e}",
            model.kernels(),
            256.0 / time,
            base / time
        );
    }
    Ok(())
}
