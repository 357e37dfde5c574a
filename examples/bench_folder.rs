//! Folder benchmark: labels a folder of generated camera-size JPEGs with a random-weight
//! checkpoint of the exact openai/clip-vit-base-patch32 shapes, through the `vlm` binary,
//! and prints images/second, the share of time the encoder waited for input, and peak RSS.
//!
//! cargo build --release && cargo run --release --example bench_folder -- \
//!     --work /tmp/vlm-bench --images 500 --size 3000x2000
//!
//! The checkpoint (~600 MB) and the images are made once under --work and reused;
//! `--checkpoint DIR` uses another checkpoint instead (e.g. the tiny test fixture, to see
//! how memory grows with the number of images rather than with the model). Figures go in
//! BENCHMARKS.md; nothing here is a test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};

/// openai/clip-vit-base-patch32's config.json, trimmed to what the architecture needs.
const B32_CONFIG: &str = r#"{
  "model_type": "clip", "projection_dim": 512, "logit_scale_init_value": 2.6592,
  "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
    "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 2, "pad_token_id": 1},
  "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5}
}"#;

const B32_PREPROCESSOR: &str = r#"{"do_resize": true, "size": {"shortest_edge": 224},
  "resample": 3, "do_center_crop": true, "crop_size": {"height": 224, "width": 224},
  "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true,
  "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}"#;

struct Args {
    work: PathBuf,
    checkpoint: Option<PathBuf>,
    images: usize,
    width: u32,
    height: u32,
    extra: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        work: std::env::temp_dir().join("vlm-bench"),
        checkpoint: None,
        images: 500,
        width: 3000,
        height: 2000,
        extra: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--work" => args.work = PathBuf::from(value()?),
            "--images" => args.images = value()?.parse()?,
            "--checkpoint" => args.checkpoint = Some(PathBuf::from(value()?)),
            "--size" => {
                let size = value()?;
                let (w, h) = size.split_once('x').context("--size is WIDTHxHEIGHT")?;
                (args.width, args.height) = (w.parse()?, h.parse()?);
            }
            "--" => args.extra.extend(it.by_ref()),
            other => {
                bail!("unknown flag {other}; use --work DIR --images N --size WxH [-- vlm flags]")
            }
        }
    }
    Ok(args)
}

/// Random weights with the B/32 tensor names and shapes, std 1/sqrt(fan_in).
fn make_checkpoint(dir: &Path) -> anyhow::Result<()> {
    if dir.join("model.safetensors").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: String, shape: &[usize]| -> anyhow::Result<()> {
        let tensor = if name.ends_with(".bias") {
            Tensor::zeros(shape, DType::F32, &device)?
        } else if name.contains("layer_norm") || name.contains("layrnorm") {
            Tensor::ones(shape, DType::F32, &device)?
        } else {
            let fan_in = shape[1..].iter().product::<usize>().max(1);
            Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, shape, &device)?
        };
        tensors.insert(name, tensor);
        Ok(())
    };
    let tower = |add: &mut dyn FnMut(String, &[usize]) -> anyhow::Result<()>,
                 prefix: &str,
                 h: usize,
                 i: usize| {
        for l in 0..12 {
            let p = format!("{prefix}.encoder.layers.{l}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                add(format!("{p}.self_attn.{proj}.weight"), &[h, h])?;
                add(format!("{p}.self_attn.{proj}.bias"), &[h])?;
            }
            for norm in ["layer_norm1", "layer_norm2"] {
                add(format!("{p}.{norm}.weight"), &[h])?;
                add(format!("{p}.{norm}.bias"), &[h])?;
            }
            add(format!("{p}.mlp.fc1.weight"), &[i, h])?;
            add(format!("{p}.mlp.fc1.bias"), &[i])?;
            add(format!("{p}.mlp.fc2.weight"), &[h, i])?;
            add(format!("{p}.mlp.fc2.bias"), &[h])?;
        }
        anyhow::Ok(())
    };
    tower(&mut add, "text_model", 512, 2048)?;
    tower(&mut add, "vision_model", 768, 3072)?;
    add(
        "text_model.embeddings.token_embedding.weight".into(),
        &[49408, 512],
    )?;
    add(
        "text_model.embeddings.position_embedding.weight".into(),
        &[77, 512],
    )?;
    add("text_model.final_layer_norm.weight".into(), &[512])?;
    add("text_model.final_layer_norm.bias".into(), &[512])?;
    add("vision_model.embeddings.class_embedding".into(), &[768])?;
    add(
        "vision_model.embeddings.patch_embedding.weight".into(),
        &[768, 3, 32, 32],
    )?;
    add(
        "vision_model.embeddings.position_embedding.weight".into(),
        &[50, 768],
    )?;
    for norm in ["pre_layrnorm", "post_layernorm"] {
        add(format!("vision_model.{norm}.weight"), &[768])?;
        add(format!("vision_model.{norm}.bias"), &[768])?;
    }
    add("text_projection.weight".into(), &[512, 512])?;
    add("visual_projection.weight".into(), &[512, 768])?;
    tensors.insert("logit_scale".into(), Tensor::new(100f32.ln(), &device)?);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    std::fs::write(dir.join("config.json"), B32_CONFIG)?;
    std::fs::write(dir.join("preprocessor_config.json"), B32_PREPROCESSOR)?;
    // The real CLIP tokenizer ships with the test fixtures.
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/tiny-quickgelu/tokenizer.json");
    std::fs::copy(tokenizer, dir.join("tokenizer.json"))?;
    Ok(())
}

/// Smooth gradients with some texture, saved as quality-90 JPEGs (like a camera's).
fn make_images(dir: &Path, count: usize, width: u32, height: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..count {
        let path = dir.join(format!("{i:05}.jpg"));
        if path.exists() {
            continue;
        }
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            let t = (x * 255 / width) as u8;
            let u = (y * 255 / height) as u8;
            let n = ((x ^ y).wrapping_mul(2654435761u32.wrapping_add(i as u32)) >> 27) as u8;
            image::Rgb([t.wrapping_add(n), u, (i as u8).wrapping_mul(37) ^ n])
        });
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90).encode_image(&image)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let checkpoint = match &args.checkpoint {
        Some(dir) => dir.clone(),
        None => {
            let dir = args.work.join("clip-b32-random");
            make_checkpoint(&dir)?;
            dir
        }
    };
    let images = args.work.join(format!(
        "jpeg-{}-{}x{}",
        args.images, args.width, args.height
    ));
    make_images(&images, args.images, args.width, args.height)?;
    eprintln!("setup: {:.1} s", started.elapsed().as_secs_f64());

    let exe = std::env::current_exe()?;
    let vlm = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("vlm"))
        .context("cannot locate the vlm binary")?;
    if !vlm.exists() {
        bail!(
            "{} not found; run `cargo build --release` first",
            vlm.display()
        );
    }
    let started = Instant::now();
    let output = Command::new(&vlm)
        .args([
            "classify",
            "--verbose",
            "--labels",
            "cat,dog,car,tree",
            "-f",
            "jsonl",
            "-o",
        ])
        .arg(args.work.join("out.jsonl"))
        .arg("--model")
        .arg(&checkpoint)
        .arg(&images)
        .args(&args.extra)
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("vlm failed: {report}");
    }
    println!("{report}");
    println!(
        "{} images of {}x{} in {wall:.2} s wall: {:.2} images/s (threads: {})",
        args.images,
        args.width,
        args.height,
        args.images as f64 / wall,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}
