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

/// The committed JPEGs of every layout against the pixels Pillow 13 (libjpeg-turbo 3.2)
/// decodes them to (`tests/fixtures/make_jpeg_parity.py`). vlm decodes JPEGs with
/// libjpeg-turbo's decoder set up as Pillow sets it up (accurate integer IDCT, fancy chroma
/// upsampling, libjpeg's colour tables), so every sample is equal; the bound (99.9% within
/// one level) is the parity target, the equality check says how close it really is.
#[test]
fn committed_jpegs_stay_near_pillow() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg_parity");
    let mut names: Vec<String> = ["444", "422", "420"]
        .iter()
        .flat_map(|sub| ["base", "prog"].map(|mode| format!("chelsea_{sub}_{mode}")))
        .collect();
    // Adobe CMYK (the photo fixture), through Pillow's naive CMYK -> RGB conversion.
    names.push("../images/chelsea_cmyk".to_string());
    for name in names {
        let got = decode_file(&dir.join(format!("{name}.jpg"))).unwrap();
        let png = name.trim_start_matches("../images/");
        let want = image::open(dir.join(format!("{png}.png")))
            .unwrap()
            .into_rgb8();
        assert_eq!(got.dimensions(), want.dimensions(), "{name}");
        let (near, max) = closeness(got.as_raw(), want.as_raw());
        let equal = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "{name}: {:.3}% within 1 level, {:.3}% equal, max difference {max}",
            100.0 * near,
            100.0 * equal as f64 / got.as_raw().len() as f64
        );
        assert!(near >= 0.999, "{name}: {near} within 1 level, max {max}");
        assert_eq!(
            max, 0,
            "{name}: libjpeg-turbo's pixels should be Pillow's exactly"
        );
    }
}
