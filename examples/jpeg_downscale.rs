//! Measures `--jpeg-downscale`: how much faster decoding and preprocessing a camera-size
//! JPEG gets, and how far the pixels and the fixture models' probabilities move.
//!
//! cargo run --release --example jpeg_downscale [-- RUNS]
//!
//! Camera-size test images are made from the fixture photos in a temporary directory, all
//! 3000x2000 JPEGs at quality 90: `up` (upscaled, smooth), `noise` (upscaled plus
//! pseudo-random noise of +-12 levels, like sensor noise) and `mosaic` (photos tiled at
//! their own resolution: full-resolution detail everywhere, the hard case; two of them
//! 3001x2001 and 1500x1001, sizes the reduction does not divide). Timings are the best of
//! RUNS (default 10).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use image::{imageops, RgbImage};
use vlm::labels::Template;
use vlm::preprocess::{
    decode_bytes_region, DecodeOptions, PreprocessConfig, Preprocessor, ResizeTarget,
};
use vlm::source::ModelFiles;
use vlm::Checkpoint;

const PHOTOS: [&str; 4] = ["chelsea", "astronaut", "coffee", "rocket"];
const MODELS: [&str; 2] = ["tiny-quickgelu", "tiny-gelu-f16"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(image)
        .expect("encoding to memory");
    out
}

/// (name, JPEG bytes) of the camera-size images and the fixture JPEGs.
fn images() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let photos: Vec<RgbImage> = PHOTOS
        .iter()
        .map(|p| Ok(image::open(fixtures().join(format!("images/{p}.png")))?.into_rgb8()))
        .collect::<anyhow::Result<_>>()?;
    let mut out = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for (name, photo) in PHOTOS.iter().zip(&photos) {
        let up = imageops::resize(photo, 3000, 2000, imageops::FilterType::CatmullRom);
        out.push((format!("{name}_up"), jpeg(&up)));
        let mut noisy = up;
        for v in noisy.iter_mut() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((seed >> 33) % 25) as i16 - 12;
            *v = (i16::from(*v) + noise).clamp(0, 255) as u8;
        }
        out.push((format!("{name}_noise"), jpeg(&noisy)));
    }
    // The last two sizes are not multiples of the reduction.
    let sizes = [(3000, 2000), (3000, 2000), (3001, 2001), (1500, 1001)];
    for (shift, (width, height)) in sizes.into_iter().enumerate() {
        let mut mosaic = RgbImage::new(width, height);
        let (mut x, mut i) = (0, shift);
        while x < i64::from(width) {
            let mut y = 0;
            while y < i64::from(height) {
                let tile = &photos[i % photos.len()];
                imageops::replace(&mut mosaic, tile, x, y);
                y += i64::from(tile.height());
                i += 1;
            }
            x += 224;
        }
        out.push((format!("mosaic{shift} {width}x{height}"), jpeg(&mosaic)));
    }
    for p in PHOTOS {
        let path = fixtures().join(format!("images/{p}.jpg"));
        out.push((format!("fixture {p}.jpg"), std::fs::read(path)?));
    }
    Ok(out)
}

/// Raw 0-255 samples after resize and crop (no rescale or normalisation), as f32.
fn levels(side: u32) -> Preprocessor {
    Preprocessor::new(PreprocessConfig {
        size: ResizeTarget::ShortestEdge(side),
        crop_size: (side, side),
        do_rescale: false,
        do_normalize: false,
        ..PreprocessConfig::default()
    })
}

fn pixels(p: &Preprocessor, bytes: &[u8], downscale: bool) -> anyhow::Result<Vec<f32>> {
    let mut options = DecodeOptions::default();
    if downscale {
        options = options.with_jpeg_downscale(p.config());
    }
    let image = decode_bytes_region(bytes, Path::new("image.jpg"), &options)?;
    Ok(p.preprocess_decoded(&image)?)
}

/// (max, mean) absolute difference.
fn diff(a: &[f32], b: &[f32]) -> (f32, f64) {
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let max = d.iter().copied().fold(0f32, f32::max);
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64;
    (max, mean)
}

fn best_ms(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(10), |a| a.parse())?;
    let images = images()?;

    println!("pixels after resize and crop, in 0-255 levels: max / mean |full - downscaled|");
    for side in [224, 336] {
        let p = levels(side);
        for (name, bytes) in &images {
            let (max, mean) = diff(&pixels(&p, bytes, false)?, &pixels(&p, bytes, true)?);
            println!("  {side} px  {name:<22} max {max:5.1}  mean {mean:.3}");
        }
    }

    println!("\ndecode + preprocess, best of {runs} (ms): full, downscaled");
    for side in [224, 336] {
        let p = levels(side);
        for (name, bytes) in images.iter().filter(|(n, _)| !n.starts_with("fixture")) {
            let full = best_ms(runs, || pixels(&p, bytes, false).map(drop))?;
            let fast = best_ms(runs, || pixels(&p, bytes, true).map(drop))?;
            println!(
                "  {side} px  {name:<22} {full:7.1} {fast:7.1}  x{:.1}",
                full / fast
            );
        }
    }

    println!("\nfixture models: max |probability difference| over 6 labels, top-1 kept?");
    for model in MODELS {
        let dir = fixtures().join("models").join(model);
        let mut classifier = Checkpoint::load(&ModelFiles::from_dir(&dir)?, &Device::Cpu)?;
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            fixtures().join(format!("reference/{model}.json")),
        )?)?;
        let template = Template::new(reference["template"].as_str().unwrap_or("{}"))?;
        let prompts: Vec<String> = reference["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(|l| template.apply(l)))
            .collect();
        let text = classifier.embed_prompts(&prompts)?;
        let full_options = DecodeOptions::default();
        let fast_options = full_options.with_jpeg_downscale(classifier.preprocessor().config());
        let mut probs = |bytes: &[u8], options: DecodeOptions| -> anyhow::Result<Vec<f32>> {
            classifier.set_decode_options(options);
            let px = classifier.pixels_from_bytes(bytes, Path::new("image.jpg"))?;
            let ranked = classifier.rank(&classifier.embed_pixels(&[px])?, &text)?;
            let mut p = vec![0f32; prompts.len()];
            for s in &ranked[0] {
                p[s.index] = s.probability;
            }
            Ok(p)
        };
        let (mut worst, mut flips) = (0f32, 0);
        for (name, bytes) in &images {
            let a = probs(bytes, full_options)?;
            let b = probs(bytes, fast_options)?;
            let top = |p: &[f32]| {
                p.iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map(|(i, _)| i)
            };
            let (max, _) = diff(&a, &b);
            worst = worst.max(max);
            let same = top(&a) == top(&b);
            flips += usize::from(!same);
            println!(
                "  {model:<15} {name:<22} max {max:.4}  top-1 {}  (top p {:.3})",
                if same { "same" } else { "CHANGED" },
                a.iter().copied().fold(0f32, f32::max)
            );
        }
        println!("  {model}: worst {worst:.4}, top-1 changed on {flips} images");
    }
    Ok(())
}
