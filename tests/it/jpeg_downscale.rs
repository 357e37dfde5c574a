//! `--jpeg-downscale`: JPEGs decoded at 1/2, 1/4 or 1/8 scale in the DCT domain. Hostile
//! files still give a result or an error naming them, never a panic; camera-size photos keep
//! their probabilities (within a margin over what `examples/jpeg_downscale.rs` measures) and
//! their top label; colour, greyscale and EXIF orientation are handled as without the flag;
//! the embedding cache keeps the two apart.

use std::path::{Path, PathBuf};

use crate::common::{self, fixtures, stderr, vlm};
use candle_core::Device;
use image::{imageops, RgbImage};
use serde_json::Value;
use vlm::labels::Template;
use vlm::preprocess::{
    decode_bytes_region, decode_bytes_with, decode_file_region, decode_file_with, DecodeOptions,
    PreprocessConfig, PreprocessError, Preprocessor, ResizeTarget,
};
use vlm::probe::ModelIdentity;
use vlm::source::ModelFiles;
use vlm::Checkpoint;

fn photo(name: &str) -> RgbImage {
    image::open(fixtures().join("images").join(name))
        .unwrap()
        .into_rgb8()
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(image)
        .unwrap();
    out
}

/// A fixture photo upscaled to `width` x `height` with +-12 levels of pseudo-random noise,
/// standing in for a camera photo's sensor noise.
fn camera_photo(name: &str, width: u32, height: u32) -> RgbImage {
    let mut image = imageops::resize(
        &photo(name),
        width,
        height,
        imageops::FilterType::CatmullRom,
    );
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for v in image.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *v = (i16::from(*v) + (seed % 25) as i16 - 12).clamp(0, 255) as u8;
    }
    image
}

/// The fixture photos tiled at their own resolution: full-resolution detail everywhere, the
/// hard case for a reduced decode.
fn mosaic(width: u32, height: u32) -> RgbImage {
    let tiles: Vec<RgbImage> = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.png"]
        .into_iter()
        .map(photo)
        .collect();
    let mut out = RgbImage::new(width, height);
    let mut i = 0;
    for x in (0..width).step_by(224) {
        let mut y = 0;
        while y < height {
            let tile = &tiles[i % tiles.len()];
            imageops::replace(&mut out, tile, i64::from(x), i64::from(y));
            y += tile.height();
            i += 1;
        }
    }
    out
}

fn downscaling(side: u32) -> DecodeOptions {
    DecodeOptions {
        jpeg_downscale: Some(side),
        ..DecodeOptions::default()
    }
}

/// Resize and crop to `side` pixels, leaving 0-255 sample values.
fn levels(side: u32) -> Preprocessor {
    Preprocessor::new(PreprocessConfig {
        size: ResizeTarget::ShortestEdge(side),
        crop_size: (side, side),
        do_rescale: false,
        do_normalize: false,
        ..PreprocessConfig::default()
    })
}

/// (max, mean) absolute difference.
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let mean = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    (max, mean)
}

#[test]
fn hostile_files_give_a_result_or_an_error_naming_them() {
    // The decompression bombs are decoded here, in the test process: cap its memory.
    if common::in_capped_child(
        module_path!(),
        "hostile_files_give_a_result_or_an_error_naming_them",
    ) {
        return;
    }
    let p = levels(40);
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("hostile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !matches!(p.extension().and_then(|e| e.to_str()), Some("py" | "md")))
        .collect();
    files.sort();
    let mut reduced = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let normal = decode_file_with(path, &DecodeOptions::default());
        // Side 1 reduces every JPEG of 16 pixels or more by 8; 40 is the tiny model's.
        for side in [1, 40] {
            match (decode_file_region(path, &downscaling(side)), &normal) {
                (Ok(decoded), Ok(full)) => {
                    let (w, h) = decoded.image().dimensions();
                    let (fw, fh) = full.dimensions();
                    assert_eq!(decoded.full_size(), (fw, fh), "{name}");
                    // The normal path's size, or that size reduced with the aspect kept.
                    assert!(w <= fw && h <= fh && (w < fw) == (h < fh), "{name}");
                    reduced += usize::from(w < fw);
                    let pixels = p.preprocess_decoded(&decoded).unwrap();
                    assert!(pixels.iter().all(|v| v.is_finite()), "{name}");
                }
                (Err(PreprocessError::TooLarge { .. }), Err(PreprocessError::TooLarge { .. })) => {}
                (Err(e), Err(_)) => assert!(e.to_string().contains(name), "{name}: {e}"),
                // The memory limit counts what a decode takes, and a reduced decode takes
                // less (the pixels; a progressive file's coefficients stay): a file refused
                // at full size for memory may fit reduced, never the other way round.
                (Ok(_), Err(PreprocessError::TooMuchMemory { .. })) => {}
                // One decoder (libjpeg-turbo) reads every JPEG at either scale: the flag
                // changes the size, never whether a file decodes.
                (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
                    panic!("{name}: the flag changed the outcome")
                }
            }
        }
    }
    // cmyk.jpg and jpeg_named.png at least were really decoded reduced.
    assert!(reduced >= 2, "{reduced}");
}

/// A 2-component JPEG, which libjpeg cannot colour-convert to RGB: the same error (not a
/// panic) with and without the flag.
#[test]
fn two_component_jpeg_is_not_a_panic() {
    let mut bytes = jpeg(&camera_photo("coffee.png", 64, 64));
    // SOF0: FF C0, length 17, precision, height, width, 3 components of 3 bytes.
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    assert_eq!(bytes[sof + 9], 3);
    bytes[sof + 3] -= 3;
    bytes[sof + 9] = 2;
    bytes.drain(sof + 16..sof + 19);
    // SOS: FF DA, length 12, 3 components of 2 bytes.
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    assert_eq!(bytes[sos + 4], 3);
    bytes[sos + 3] -= 2;
    bytes[sos + 4] = 2;
    bytes.drain(sos + 9..sos + 11);
    let normal = decode_bytes_with(&bytes, Path::new("two.jpg"), &DecodeOptions::default());
    let reduced = decode_bytes_with(&bytes, Path::new("two.jpg"), &downscaling(1));
    match (normal, reduced) {
        (Err(a), Err(e)) => {
            eprintln!("two.jpg: {e}");
            assert!(e.to_string().contains("two.jpg"), "{e}");
            assert_eq!(a.to_string(), e.to_string());
        }
        (a, b) => panic!("expected the same error both ways: {a:?} / {b:?}"),
    }
}

#[test]
fn colour_greyscale_and_orientation_match_the_normal_path() {
    let grey = image::DynamicImage::ImageRgb8(photo("camera_gray.png")).into_luma8();
    let mut grey_jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut grey_jpeg, 90)
        .encode_image(&grey)
        .unwrap();
    let read = |name: &str| std::fs::read(fixtures().join("images").join(name)).unwrap();
    // (name, bytes, reduction at side 20, i.e. keeping 40 pixels).
    let cases = [
        ("chelsea_cmyk.jpg", read("chelsea_cmyk.jpg"), 2),
        ("coffee_exif6.jpg", read("coffee_exif6.jpg"), 2),
        ("grey.jpg", grey_jpeg, 4),
    ];
    let p = levels(40);
    for (name, bytes, factor) in cases {
        let full = decode_bytes_with(&bytes, Path::new(name), &DecodeOptions::default()).unwrap();
        let reduced = decode_bytes_region(&bytes, Path::new(name), &downscaling(20)).unwrap();
        let (w, h) = full.dimensions();
        assert_eq!(reduced.full_size(), (w, h), "{name}");
        let size = (w.div_ceil(factor), h.div_ceil(factor));
        assert_eq!(reduced.image().dimensions(), size, "{name}");
        let (max, mean) = diff(
            &p.preprocess(&full).unwrap(),
            &p.preprocess_decoded(&reduced).unwrap(),
        );
        // Measured: max 2 / mean 0.30 (CMYK), 14 / 1.37 (rotated), 16 / 1.12 (grey).
        assert!(max <= 32.0 && mean < 2.5, "{name}: max {max}, mean {mean}");
    }
}

fn probabilities(classifier: &Checkpoint, prompts: &[String], bytes: &[u8]) -> Vec<f32> {
    let text = classifier.embed_prompts(prompts).unwrap();
    let pixels = classifier
        .pixels_from_bytes(bytes, Path::new("camera.jpg"))
        .unwrap();
    let ranked = classifier
        .rank(&classifier.embed_pixels(&[pixels]).unwrap(), &text)
        .unwrap();
    let mut out = vec![0f32; prompts.len()];
    for score in &ranked[0] {
        out[score.index] = score.probability;
    }
    out
}

fn top(p: &[f32]) -> usize {
    (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
}

#[test]
fn camera_size_jpegs_keep_probabilities_and_top_label() {
    let images = [
        (
            "noise 3000x2000",
            jpeg(&camera_photo("chelsea.png", 3000, 2000)),
        ),
        ("mosaic 2001x3001", jpeg(&mosaic(2001, 3001))),
    ];
    // CLIP's own 224-pixel preprocessing: reduced by 4, pixels within a few levels.
    let clip = levels(224);
    for (name, bytes) in &images {
        let reduced = decode_bytes_region(bytes, Path::new("c.jpg"), &downscaling(224)).unwrap();
        let (w, h) = reduced.image().dimensions();
        assert_eq!(w.min(h), 500 + u32::from(name.contains("2001")), "{name}");
        let full = decode_bytes_with(bytes, Path::new("c.jpg"), &DecodeOptions::default()).unwrap();
        let (max, mean) = diff(
            &clip.preprocess(&full).unwrap(),
            &clip.preprocess_decoded(&reduced).unwrap(),
        );
        // Measured: max 2 / mean 0.32 (noise), max 13 / mean 0.58 (mosaic).
        assert!(max <= 24.0 && mean < 1.2, "{name}: max {max}, mean {mean}");
    }

    for model in ["tiny-quickgelu", "tiny-gelu-f16"] {
        let dir = fixtures().join("models").join(model);
        let mut classifier =
            Checkpoint::load(&ModelFiles::from_dir(&dir).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(classifier.compute_fingerprint(), "family clip; f32");
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("reference/{model}.json"))).unwrap(),
        )
        .unwrap();
        let template = Template::new(reference["template"].as_str().unwrap()).unwrap();
        let prompts: Vec<String> = reference["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| template.apply(l.as_str().unwrap()))
            .collect();
        let full: Vec<Vec<f32>> = images
            .iter()
            .map(|(_, b)| probabilities(&classifier, &prompts, b))
            .collect();
        classifier.set_decode_options(
            DecodeOptions::default().with_jpeg_downscale(classifier.preprocessor().config()),
        );
        assert_eq!(
            classifier.compute_fingerprint(),
            "family clip; f32; jpeg-downscale"
        );
        for ((name, bytes), full) in images.iter().zip(&full) {
            let fast = probabilities(&classifier, &prompts, bytes);
            let (max, _) = diff(full, &fast);
            // Measured: at most 0.014 here, 0.0153 over the example's 16 images.
            assert!(max < 0.05, "{model} {name}: {full:?} vs {fast:?}");
            assert_eq!(top(full), top(&fast), "{model} {name}");
        }
    }
}

/// Downscaling moves embeddings only slightly, so a probe fitted with or without it applies
/// either way, while cached embeddings are kept apart.
#[test]
fn probes_apply_either_way() {
    let files = ModelFiles::from_dir(&fixtures().join("models/tiny-quickgelu")).unwrap();
    let mut classifier = Checkpoint::load(&files, &Device::Cpu).unwrap();
    let plain = ModelIdentity::of(&files, &classifier).unwrap();
    let cache_key = classifier.compute_fingerprint();
    classifier.set_decode_options(
        DecodeOptions::default().with_jpeg_downscale(classifier.preprocessor().config()),
    );
    assert_eq!(ModelIdentity::of(&files, &classifier).unwrap(), plain);
    assert_ne!(classifier.compute_fingerprint(), cache_key);
}

#[test]
fn cli_flag_classifies_and_keeps_its_own_cache_entries() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("photos");
    std::fs::create_dir(&images).unwrap();
    for (i, name) in ["chelsea.png", "coffee.png", "rocket.png"]
        .iter()
        .enumerate()
    {
        let bytes = jpeg(&camera_photo(name, 1200, 900));
        std::fs::write(images.join(format!("{i}.jpg")), bytes).unwrap();
    }
    let cache = dir.path().join("cache");
    let run = |flag: bool| {
        let mut command = vlm();
        command
            .args([
                "classify",
                "-f",
                "jsonl",
                "--verbose",
                "--labels",
                "cat,coffee,rocket",
            ])
            .arg(format!("--cache={}", cache.display()))
            .arg("--model")
            .arg(fixtures().join("models/tiny-quickgelu"))
            .arg(&images);
        if flag {
            command.arg("--jpeg-downscale");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let records: Vec<Value> = String::from_utf8(output.stdout.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (records, stderr(&output))
    };
    let (full, first) = run(false);
    assert!(first.contains("image encoder ran on 3 images"), "{first}");
    // Not served from the full decode's cache entries...
    let (fast, second) = run(true);
    assert!(second.contains("image encoder ran on 3 images"), "{second}");
    // ...but from its own.
    let (_, third) = run(true);
    assert!(third.contains("image encoder ran on 0 images"), "{third}");

    assert_eq!(full.len(), 3);
    for (a, b) in full.iter().zip(&fast) {
        assert_eq!(a["path"], b["path"]);
        let ra = a["results"].as_array().unwrap();
        let rb = b["results"].as_array().unwrap();
        assert_eq!(ra[0]["label"], rb[0]["label"], "{a} / {b}");
        for x in ra {
            let y = rb.iter().find(|y| y["label"] == x["label"]).unwrap();
            let d = (x["probability"].as_f64().unwrap() - y["probability"].as_f64().unwrap()).abs();
            assert!(d < 0.05, "{a} / {b}");
        }
    }
}
