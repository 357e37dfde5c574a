//! Comparison against real Pillow/transformers outputs, generated outside the repository.
//!
//! Write the cases with `python tests/fixtures/make_resize_goldens.py --parity-dir <dir>`
//! (Pillow 13.0.0, transformers 5.23.0: tests/fixtures/requirements.txt), then run
//! `VLM_PARITY_DIR=<dir> cargo test --lib preprocess::parity -- --ignored --nocapture`.
//! `<dir>/cases.json` lists raw `resize` inputs and Pillow outputs, `pipeline` images with
//! `CLIPImageProcessorPil` pixel values, and `decode` images with the RGB array
//! transformers' processor resizes (decode differences are printed, not asserted: lossy
//! codecs and 16-bit files differ legitimately).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{decode_file, resize, PreprocessConfig, Preprocessor, Resample};

fn read(dir: &Path, v: &Value) -> Vec<u8> {
    std::fs::read(dir.join(v.as_str().unwrap())).unwrap()
}

fn dim(case: &Value, key: &str) -> u32 {
    case[key].as_u64().unwrap() as u32
}

#[test]
#[ignore = "needs VLM_PARITY_DIR with Python-generated cases"]
fn matches_pillow_and_transformers() {
    let dir = PathBuf::from(std::env::var("VLM_PARITY_DIR").expect("set VLM_PARITY_DIR"));
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let (mut resize_cases, mut resize_bad) = (0, 0);
    let (mut pipe_cases, mut pipe_max) = (0, 0f32);
    let mut decode_exact = true;
    for case in &cases {
        match case["kind"].as_str().unwrap() {
            "resize" => {
                let (w, h) = (dim(case, "w"), dim(case, "h"));
                let (ow, oh) = (dim(case, "out_w"), dim(case, "out_h"));
                let src = image::RgbImage::from_raw(w, h, read(&dir, &case["src"])).unwrap();
                let filter = Resample::from_pil(case["filter"].as_i64().unwrap()).unwrap();
                let got = resize::resize_window(&src, ow, oh, filter, 0..ow, 0..oh);
                let want = read(&dir, &case["expected"]);
                resize_cases += 1;
                if got != want {
                    resize_bad += 1;
                    let max = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
                    let n = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                    println!(
                        "resize MISMATCH {w}x{h}->{ow}x{oh} {filter:?}: {n} samples, max {max:?}"
                    );
                }
            }
            "pipeline" => {
                let cfg = PreprocessConfig::from_json_str(
                    &case["config"].to_string(),
                    Path::new("case.json"),
                )
                .unwrap();
                let img = decode_file(&dir.join(case["image"].as_str().unwrap())).unwrap();
                let got = Preprocessor::new(cfg).preprocess(&img).unwrap();
                let want: Vec<f32> = read(&dir, &case["expected"])
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                assert_eq!(got.len(), want.len(), "{case}");
                let max = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                pipe_cases += 1;
                pipe_max = pipe_max.max(max);
                if max > 0.0 {
                    println!("pipeline diff {max} for {}", case["image"]);
                }
            }
            "decode" => {
                let name = case["image"].as_str().unwrap();
                let got = match decode_file(&dir.join(name)) {
                    Ok(img) => img,
                    Err(e) => {
                        println!("decode {name:<18} ERROR {e}");
                        decode_exact = false;
                        continue;
                    }
                };
                let want = read(&dir, &case["expected"]);
                let (w, h) = (dim(case, "w"), dim(case, "h"));
                if got.dimensions() != (w, h) {
                    println!("decode {name:<18} SIZE {:?} vs {w}x{h}", got.dimensions());
                    decode_exact = false;
                    continue;
                }
                let diffs: Vec<u8> = got
                    .as_raw()
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| a.abs_diff(*b))
                    .collect();
                let max = diffs.iter().copied().max().unwrap_or(0);
                let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
                let n = diffs.iter().filter(|&&d| d > 0).count();
                decode_exact &= max == 0;
                println!(
                    "decode {name:<18} max {max:>3} mean {mean:.4} differing {n:>6}/{:<6} {}",
                    diffs.len(),
                    case["note"].as_str().unwrap_or("")
                );
            }
            other => panic!("unknown case kind {other}"),
        }
    }
    println!(
        "resize: {resize_cases} cases, {resize_bad} mismatched; pipeline: {pipe_cases} cases, \
         max |diff| {pipe_max}; decode all exact: {decode_exact}"
    );
    assert_eq!(resize_bad, 0);
    assert!(pipe_max <= 1e-6);
}

/// Share of samples within 1 level of `want`, and the largest difference.
fn closeness(got: &[u8], want: &[u8]) -> (f64, u8) {
    assert_eq!(got.len(), want.len());
    let near = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.abs_diff(**b) <= 1)
        .count();
    let max = got.iter().zip(want).map(|(a, b)| a.abs_diff(*b)).max();
    (near as f64 / got.len() as f64, max.unwrap_or(0))
}

/// The committed JPEGs of every layout against the pixels Pillow 13 (libjpeg-turbo 3.1)
/// decodes them to (`tests/fixtures/make_jpeg_parity.py`). The bounds are today's: zune-jpeg
/// differs from libjpeg-turbo in its IDCT rounding, chroma upsampling and colour
/// conversion, so they guard against regressions, not for parity.
#[test]
fn committed_jpegs_stay_near_pillow() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg_parity");
    // (subsampling, share within 1 level today, largest difference today).
    for (sub, floor, ceiling) in [("444", 0.998, 3), ("422", 0.955, 3), ("420", 0.915, 3)] {
        for mode in ["base", "prog"] {
            let name = format!("chelsea_{sub}_{mode}");
            let got = decode_file(&dir.join(format!("{name}.jpg"))).unwrap();
            let want = image::open(dir.join(format!("{name}.png")))
                .unwrap()
                .into_rgb8();
            let (near, max) = closeness(got.as_raw(), want.as_raw());
            let bytes = std::fs::read(dir.join(format!("{name}.jpg"))).unwrap();
            let other = super::jpeg::decode_reduced(&bytes, 1, usize::MAX).unwrap();
            let (other_near, other_max) = closeness(other.as_raw(), want.as_raw());
            println!(
                "{name}: zune-jpeg {:.3}% within 1, max {max}; jpeg-decoder {:.3}% within 1, max {other_max}",
                100.0 * near,
                100.0 * other_near
            );
            assert!(near >= floor && max <= ceiling, "{name}: {near} {max}");
        }
    }
}
