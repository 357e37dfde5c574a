//! Caption benchmark: times `vlm::caption::Captioner` on preprocessed pixels, batch by
//! batch, and prints captions/s, tokens/s and every generated sequence as JSON, for
//! `examples/compare_transformers.py --caption` to set beside transformers' `generate` on
//! the same checkpoint and pixels (and to check the tokens are identical).
//!
//! cargo build --release --example caption_bench
//! target/release/examples/caption_bench MODEL_DIR PIXELS.safetensors \
//!     --batch-sizes 1,8 --max-new-tokens 20 --beams 1 --min-seconds 4 [--dtype bf16|int8]
//!
//! PIXELS.safetensors holds `pixel_values`, (images, 3, size, size) f32. Each batch size
//! runs over the first `batch` images, repeated until `--min-seconds` have passed (at least
//! twice, after one untimed run); a batch's time covers the vision transformer and
//! generation, not decoding files. Nothing here is a test.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use vlm::caption::{Captioner, GenerationOptions};
use vlm::model::{LoadOptions, Precision};
use vlm::source::ModelFiles;

fn main() -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let (mut batches, mut new_tokens, mut beams, mut min_seconds) = (vec![1usize, 8], 20, 1, 4.0);
    let mut precision = Precision::Float(DType::F32);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--batch-sizes" => {
                batches = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--max-new-tokens" => new_tokens = value()?.parse()?,
            "--beams" => beams = value()?.parse()?,
            "--min-seconds" => min_seconds = value()?.parse()?,
            "--dtype" => {
                precision = match value()?.as_str() {
                    "f32" => Precision::Float(DType::F32),
                    "bf16" => Precision::Float(DType::BF16),
                    "int8" => Precision::Int8,
                    other => bail!("--dtype {other}: use f32, bf16 or int8"),
                }
            }
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [model, pixels] = positional.as_slice() else {
        bail!("usage: caption_bench MODEL_DIR PIXELS.safetensors [--batch-sizes 1,8] [--max-new-tokens 20] [--beams 1] [--min-seconds 4] [--dtype f32|bf16|int8]");
    };
    let files = ModelFiles::from_dir(model)?;
    let started = Instant::now();
    let captioner = Captioner::load(&files, &Device::Cpu, precision, &LoadOptions::default())?;
    let load_s = started.elapsed().as_secs_f64();
    let tensors = candle_core::safetensors::load(pixels, &Device::Cpu)?;
    let all = tensors
        .get("pixel_values")
        .context("the pixels file holds no `pixel_values`")?;
    let images: Vec<Vec<f32>> = (0..all.dim(0)?)
        .map(|i| all.get(i)?.flatten_all()?.to_vec1::<f32>())
        .collect::<Result<_, _>>()?;
    let options = GenerationOptions {
        num_beams: beams,
        max_new_tokens: Some(new_tokens),
        ..Default::default()
    };
    let mut rows = Vec::new();
    for &batch in &batches {
        if batch > images.len() {
            bail!(
                "batch {batch} needs {batch} images, the file holds {}",
                images.len()
            );
        }
        let run = || -> anyhow::Result<(f64, f64, Vec<vlm::caption::Generated>)> {
            let t = Instant::now();
            let encoded = captioner.encode(&images[..batch])?;
            let vision = t.elapsed().as_secs_f64();
            let refs: Vec<_> = encoded.iter().collect();
            let out = captioner.caption(&refs, None, &options)?;
            Ok((t.elapsed().as_secs_f64(), vision, out))
        };
        let (_, _, first) = run()?;
        let (mut times, mut vision) = (Vec::new(), Vec::new());
        let clock = Instant::now();
        while times.len() < 2 || clock.elapsed().as_secs_f64() < min_seconds {
            let (t, v, _) = run()?;
            times.push(t);
            vision.push(v);
        }
        times.sort_by(f64::total_cmp);
        vision.sort_by(f64::total_cmp);
        let seconds = times[times.len() / 2];
        let tokens: usize = first.iter().map(|g| g.generated).sum();
        rows.push(serde_json::json!({
            "batch": batch,
            "seconds_per_batch": seconds,
            "vision_seconds_per_batch": vision[vision.len() / 2],
            "captions_per_s": batch as f64 / seconds,
            "tokens_per_s": tokens as f64 / seconds,
            "runs": times.len(),
            "sequences": first.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
            "log_probs": first.iter().map(|g| g.log_prob).collect::<Vec<_>>(),
        }));
    }
    let report = serde_json::json!({
        "kernels": captioner.kernels(),
        "threads": rayon::current_num_threads(),
        "load_seconds": load_s,
        "beams": beams,
        "max_new_tokens": new_tokens,
        "rows": rows,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
