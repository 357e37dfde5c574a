//! Hostile inputs: broken and lying image files, damaged checkpoints and awkward labels.
//! Each must give a result or a clear error naming the file, never a panic, and memory
//! must stay bounded. Images come from `tests/fixtures/hostile` (see its README.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{self, fixtures, stderr};
use candle_core::Device;
use serde_json::Value;
use vlm::preprocess::{decode_file, PreprocessConfig, PreprocessError, Preprocessor};
use vlm::source::ModelFiles;
use vlm::Checkpoint;

fn hostile_dir() -> PathBuf {
    fixtures().join("hostile")
}

fn model_dir() -> PathBuf {
    fixtures().join("models/tiny-quickgelu")
}

/// The one command builder, under [`common::limit_memory`].
fn vlm() -> Command {
    let mut command = common::vlm();
    common::limit_memory(&mut command);
    command
}

fn jsonl(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL {l:?}: {e}")))
        .collect()
}

fn assert_no_panic(output: &Output) {
    let err = stderr(output);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    assert!(
        !err.contains("memory allocation of"),
        "ran out of the {} MiB data limit (was a file decoded past the pixel limit?): {err}",
        common::DATA_LIMIT >> 20
    );
}

// ---------------------------------------------------------------- images

/// What each hostile file must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Decodes and preprocesses.
    Ok,
    /// Refused from its header as a decompression bomb, before allocating.
    TooLarge,
    /// Some per-file error naming the file.
    Error,
    /// A result or an error, never a panic.
    Either,
    /// Refused as truncated (Pillow: "image file is truncated"), naming the file.
    Truncated,
    /// Refused from its header: decoding would take more memory than the limit.
    Memory,
    /// Refused for its number of scans, before decoding.
    Scans,
}

fn expectations() -> BTreeMap<&'static str, Expect> {
    use Expect::*;
    BTreeMap::from([
        ("animated.gif", Ok),
        ("animated.webp", Ok),
        ("bomb.bmp", TooLarge),
        ("bomb.gif", TooLarge),
        ("bomb.jpg", TooLarge),
        ("bomb.png", TooLarge),
        ("bomb.tiff", TooLarge),
        ("bomb_canvas.webp", TooLarge),
        ("bomb_frame.gif", TooLarge),
        ("bomb_lossless.webp", TooLarge),
        ("bomb_topdown.bmp", TooLarge),
        ("cmyk.jpg", Ok),
        ("corrupt_idat.png", Error),
        ("gif_no_frames.gif", Error),
        ("jpeg_named.png", Ok),
        ("liar_100mp.jpg", Either),
        ("liar_progressive.jpg", Memory),
        ("lossless_16384_wraps.webp", Error),
        ("liar_100mp.png", Error),
        ("liar_100mp.tiff", Error),
        ("palette_transparent.png", Ok),
        ("pixel_1x1.png", Ok),
        ("png_named.jpg", Ok),
        ("rgb_16bit.png", Ok),
        ("scans_600.jpg", Scans),
        ("signature_then_garbage.png", Error),
        ("tall_1x4000.png", Ok),
        ("text_renamed.jpg", Error),
        ("truncated.jpg", Truncated),
        ("truncated.png", Truncated),
        ("truncated.webp", Truncated),
        ("wide_4000x1.png", Ok),
        ("zero_bytes.jpg", Error),
        ("zero_width.png", Error),
    ])
}

/// Every image-named file in the fixture directory (the script and README are not).
fn hostile_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !matches!(p.extension().and_then(|e| e.to_str()), Some("py" | "md")))
        .collect();
    files.sort();
    files
}

fn tiny_preprocessor() -> Preprocessor {
    let config =
        PreprocessConfig::from_file(&model_dir().join("preprocessor_config.json")).unwrap();
    Preprocessor::new(config)
}

#[test]
fn every_fixture_has_an_expectation() {
    let names: Vec<String> = hostile_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<String> = expectations().keys().map(|k| k.to_string()).collect();
    assert_eq!(
        names, expected,
        "regenerate with make_hostile.py and update the table"
    );
    for path in hostile_files() {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 100_000, "{} is {len} bytes", path.display());
    }
}

#[test]
fn hostile_images_through_the_library() {
    if common::in_capped_child(module_path!(), "hostile_images_through_the_library") {
        return;
    }
    let preprocessor = tiny_preprocessor();
    let (h, w) = preprocessor.output_size();
    let expect = expectations();
    for path in hostile_files() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let outcome = decode_file(&path).and_then(|image| preprocessor.preprocess(&image));
        match (&outcome, expect[name]) {
            (Ok(pixels), Expect::Ok | Expect::Either) => {
                assert_eq!(pixels.len(), 3 * h as usize * w as usize, "{name}");
                assert!(pixels.iter().all(|v| v.is_finite()), "{name}");
            }
            (Err(PreprocessError::TooLarge { .. }), Expect::TooLarge)
            | (Err(PreprocessError::Truncated { .. }), Expect::Truncated)
            | (Err(PreprocessError::TooMuchMemory { .. }), Expect::Memory)
            | (Err(PreprocessError::TooManyScans { .. }), Expect::Scans)
            | (Err(_), Expect::Error | Expect::Either) => {
                let message = outcome.as_ref().unwrap_err().to_string();
                assert!(message.contains(name), "{name}: {message}");
            }
            (got, want) => panic!("{name}: expected {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn bomb_errors_say_how_big_and_what_to_do() {
    if common::in_capped_child(module_path!(), "bomb_errors_say_how_big_and_what_to_do") {
        return;
    }
    let err = decode_file(&hostile_dir().join("bomb.png")).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("50000x50000"), "{message}");
    assert!(message.contains("downscale"), "{message}");
}

#[test]
fn hostile_folder_through_the_cli() {
    let output = vlm()
        .args([
            "classify",
            "--labels",
            "cat,dog",
            "-f",
            "jsonl",
            "--verbose",
            "-m",
        ])
        .arg(model_dir())
        .arg(hostile_dir())
        .output()
        .unwrap();
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let records = jsonl(&output);
    let expect = expectations();
    assert_eq!(records.len(), expect.len(), "{records:#?}");
    for (name, want) in &expect {
        let matching: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| Path::new(p).file_name() == Some(name.as_ref()))
            })
            .collect();
        assert_eq!(matching.len(), 1, "{name}: {matching:?}");
        let record = matching[0];
        match want {
            Expect::Ok => assert_eq!(
                record["results"].as_array().map(Vec::len),
                Some(2),
                "{name}: {record}"
            ),
            Expect::TooLarge | Expect::Error => {
                let error = record["error"].as_str().unwrap_or_default();
                assert!(error.contains(name), "{name}: {record}");
            }
            Expect::Truncated | Expect::Memory | Expect::Scans => {
                let error = record["error"].as_str().unwrap_or_default();
                let says = match want {
                    Expect::Truncated => "is truncated",
                    Expect::Memory => "MiB to decode",
                    _ => "610 scans",
                };
                assert!(
                    error.contains(name) && error.contains(says),
                    "{name}: {record}"
                );
            }
            Expect::Either => assert!(
                record.get("results").is_some() || record.get("error").is_some(),
                "{name}: {record}"
            ),
        }
    }
    let peak = common::peak_mib(&output);
    eprintln!("hostile folder: peak memory {peak:.1} MiB");
    assert!(peak < 600.0, "peak memory {peak} MiB");
}

/// Runs the CLI on the fixtures whose names start with `prefix`; returns the peak memory.
fn classify_prefix(prefix: &str) -> f64 {
    let files: Vec<PathBuf> = hostile_files()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    let output = vlm()
        .args([
            "classify",
            "--labels",
            "cat,dog",
            "-f",
            "jsonl",
            "--verbose",
            "-m",
        ])
        .arg(model_dir())
        .args(&files)
        .output()
        .unwrap();
    assert_no_panic(&output);
    assert_eq!(jsonl(&output).len(), files.len());
    common::peak_mib(&output)
}

#[test]
fn bombs_are_refused_in_bounded_memory() {
    // Loading the tiny model alone peaks near 60 MiB; refusing from the header adds nothing.
    let peak = classify_prefix("bomb");
    eprintln!("bombs: peak memory {peak:.1} MiB");
    assert!(peak < 150.0, "peak memory {peak} MiB decoding bombs");
}

#[test]
fn liars_under_the_pixel_limit_stay_within_it() {
    // 100 megapixels declared in a few KB: PNG and TIFF fail on the missing data without
    // touching their buffers; JPEG pads the missing scan with grey and really decodes a
    // 300 MB image, as Pillow would. The pixel limit is what bounds it.
    let peak = classify_prefix("liar");
    eprintln!("liars: peak memory {peak:.1} MiB");
    assert!(peak < 600.0, "peak memory {peak} MiB decoding liars");
}

/// A `width` x `height` JPEG of `space`, progressive or baseline, whose frame header then
/// claims `claimed`: a few KB that libjpeg decodes at the claimed size.
fn jpeg_claiming(
    space: mozjpeg::ColorSpace,
    progressive: bool,
    (width, height): (usize, usize),
    claimed: u16,
) -> Vec<u8> {
    use mozjpeg::ColorSpaceExt;
    let mut compress = mozjpeg::Compress::new(space);
    compress.set_fastest_defaults();
    compress.set_size(width, height);
    compress.set_quality(80.0);
    if progressive {
        compress.set_progressive_mode();
    }
    let mut started = compress.start_compress(Vec::new()).unwrap();
    let samples: Vec<u8> = (0..width * height * space.num_components())
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    started.write_scanlines(&samples).unwrap();
    let mut bytes = started.finish().unwrap();
    let sof = bytes
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0 | 0xC2))
        .unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&claimed.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&claimed.to_be_bytes());
    bytes
}

/// `n` files `{name}{i}.jpg` in `dir`, each `bytes` with a tail of its own, so that
/// nothing could be shared between them.
fn copies(dir: &Path, name: &str, bytes: &[u8], n: u8) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{name}{i}.jpg"));
            let mut bytes = bytes.to_vec();
            bytes.extend_from_slice(&[i; 4]);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

/// `vlm classify` (jsonl, --verbose, under [`common::limit_memory`]) of `files` with `extra`.
fn classify_files(files: &[PathBuf], extra: &[&str]) -> Output {
    let output = vlm()
        .args([
            "classify",
            "--labels",
            "cat,dog",
            "-f",
            "jsonl",
            "--verbose",
        ])
        .args(extra)
        .arg("-m")
        .arg(model_dir())
        .args(files)
        .output()
        .unwrap();
    assert_no_panic(&output);
    output
}

#[test]
fn jpegs_that_would_need_too_much_memory_are_refused_from_the_header() {
    // Progressive CMYK 11000x11000, under the pixel limit, in 3 KB: libjpeg would hold
    // 968 MB of coefficients and then 850 MB of samples and RGB, per file. Eight at once
    // with the default settings, in a process capped at 2 GiB.
    let dir = tempfile::tempdir().unwrap();
    let bytes = jpeg_claiming(mozjpeg::ColorSpace::JCS_CMYK, true, (16, 16), 11_000);
    assert!(bytes.len() < 10_000);
    let files = copies(dir.path(), "cmyk", &bytes, 8);
    let output = classify_files(&files, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let records = jsonl(&output);
    assert_eq!(records.len(), 8);
    for record in &records {
        let error = record["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("11000x11000, progressive CMYK JPEG")
                && error.contains("MiB to decode")
                && error.contains("--max-megapixels"),
            "{record}"
        );
    }
    let peak = common::peak_mib(&output);
    eprintln!("memory-hungry JPEGs: peak memory {peak:.1} MiB");
    assert!(peak < 150.0, "peak memory {peak} MiB");
}

#[test]
fn large_jpegs_decoded_at_once_share_one_memory_limit() {
    // Progressive 4:4:4 at 10000x10000 takes about 900 MB to decode (600 MB of
    // coefficients, 300 MB of pixels), under the 1.4 GiB limit alone; three workers at
    // once would take 2.7 GB, over the 2 GiB cap. Within the shared limit they take turns,
    // and every one is labelled.
    let dir = tempfile::tempdir().unwrap();
    let bytes = jpeg_claiming(mozjpeg::ColorSpace::JCS_RGB, true, (16, 16), 10_000);
    let files = copies(dir.path(), "big", &bytes, 3);
    let output = classify_files(&files, &["--workers", "3"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let records = jsonl(&output);
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r.get("results").is_some()),
        "{records:?}"
    );
    // One at a time: two at once would be over 1.8 GB resident.
    let peak = common::peak_mib(&output);
    eprintln!("3 large JPEGs on 3 workers: peak memory {peak:.1} MiB");
    assert!(peak < 1400.0, "peak memory {peak} MiB");
}

// ---------------------------------------------------------------- checkpoints

/// A copy of the tiny checkpoint that a test may damage.
fn checkpoint_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// A safetensors file split into its JSON header and its data.
struct Safetensors {
    header: serde_json::Map<String, Value>,
    data: Vec<u8>,
}

impl Safetensors {
    fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        Self {
            header: header.as_object().unwrap().clone(),
            data: bytes[8 + n..].to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let head = serde_json::to_vec(&self.header).unwrap();
        let mut out = (head.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.data);
        out
    }

    fn tensor(&mut self, name: &str) -> &mut serde_json::Map<String, Value> {
        self.header[name].as_object_mut().unwrap()
    }
}

const WEIGHTS: &str = "model.safetensors";

fn load(dir: &Path) -> Result<Checkpoint, vlm::Error> {
    let files = ModelFiles::from_dir(dir)?;
    Checkpoint::load(&files, &Device::Cpu)
}

/// Damages a copy of the checkpoint's weights with `damage`, then checks that loading
/// fails (library and CLI) with an error naming `file` and every string in `names`.
fn assert_refused(damage: impl FnOnce(&Path), file: &str, names: &[&str]) {
    let dir = checkpoint_copy();
    damage(dir.path());
    let message = match load(dir.path()) {
        Ok(_) => panic!("damaged checkpoint ({file}, {names:?}) loaded"),
        Err(err) => err.to_string(),
    };
    assert!(message.contains(file), "{message}");
    for name in names {
        assert!(message.contains(name), "expected {name:?} in: {message}");
    }

    let output = vlm()
        .args(["classify", "--labels", "cat,dog", "-m"])
        .arg(dir.path())
        .arg(hostile_dir().join("pixel_1x1.png"))
        .output()
        .unwrap();
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(file), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Safetensors)) {
    let path = dir.join(WEIGHTS);
    let mut st = Safetensors::read(&path);
    edit(&mut st);
    std::fs::write(&path, st.bytes()).unwrap();
}

#[test]
fn missing_weights_file() {
    assert_refused(
        |dir| std::fs::remove_file(dir.join(WEIGHTS)).unwrap(),
        "model.safetensors",
        &[],
    );
}

#[test]
fn config_that_is_not_clip() {
    assert_refused(
        |dir| {
            std::fs::write(
                dir.join("config.json"),
                r#"{"model_type": "bert", "hidden_size": 768}"#,
            )
            .unwrap()
        },
        "config.json",
        &["bert"],
    );
}

#[test]
fn tensor_with_the_wrong_shape() {
    // Same number of values, transposed shape: only the shape check can notice.
    assert_refused(
        |dir| {
            edit_weights(dir, |st| {
                st.tensor("text_projection.weight")["shape"] = serde_json::json!([32, 16]);
            })
        },
        WEIGHTS,
        &["text_projection.weight"],
    );
}

#[test]
fn tensor_with_the_wrong_dtype() {
    // Same byte count as integers: loading them as weights would be silent garbage.
    assert_refused(
        |dir| {
            edit_weights(dir, |st| {
                st.tensor("visual_projection.weight")["dtype"] = Value::from("I32");
            })
        },
        WEIGHTS,
        &["visual_projection.weight"],
    );
}

#[test]
fn missing_tensor() {
    assert_refused(
        |dir| {
            edit_weights(dir, |st| {
                // Renamed, so the data stays contiguous and only the name is missing.
                let info = st
                    .header
                    .remove("vision_model.encoder.layers.1.mlp.fc2.bias")
                    .unwrap();
                st.header.insert("unused.bias".into(), info);
            })
        },
        WEIGHTS,
        &["vision_model.encoder.layers.1.mlp.fc2.bias"],
    );
}

#[test]
fn truncated_weights() {
    assert_refused(
        |dir| {
            let path = dir.join(WEIGHTS);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        },
        WEIGHTS,
        &[],
    );
}

#[test]
fn header_offsets_past_the_end() {
    assert_refused(
        |dir| {
            edit_weights(dir, |st| {
                let len = st.data.len() as u64;
                st.tensor("logit_scale")["data_offsets"] =
                    serde_json::json!([len + 1_000_000, len + 1_000_004]);
            })
        },
        WEIGHTS,
        &[],
    );
}

#[test]
fn header_size_disagrees_with_shape() {
    assert_refused(
        |dir| {
            edit_weights(dir, |st| {
                let offsets = st.tensor("text_projection.weight")["data_offsets"].clone();
                let start = offsets[0].as_u64().unwrap();
                st.tensor("text_projection.weight")["data_offsets"] =
                    serde_json::json!([start, start + 4]);
            })
        },
        WEIGHTS,
        &[],
    );
}

#[test]
fn header_length_larger_than_the_file() {
    for declared in [1u64 << 20, u64::MAX, 99_000_000] {
        assert_refused(
            |dir| {
                let path = dir.join(WEIGHTS);
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.truncate(4096);
                bytes[..8].copy_from_slice(&declared.to_le_bytes());
                std::fs::write(&path, bytes).unwrap();
            },
            WEIGHTS,
            &[],
        );
    }
}

#[test]
fn header_that_is_not_json() {
    assert_refused(
        |dir| {
            let path = dir.join(WEIGHTS);
            let mut bytes = 16u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{\"a\": [1, 2, 3 ");
            bytes.extend_from_slice(&[0; 64]);
            std::fs::write(&path, bytes).unwrap();
        },
        WEIGHTS,
        &[],
    );
}

// ---------------------------------------------------------------- labels

fn classify_labels(args: &[&str]) -> Output {
    let output = vlm()
        .args(["classify", "-f", "jsonl", "-m"])
        .arg(model_dir())
        .arg(hostile_dir().join("pixel_1x1.png"))
        .args(args)
        .output()
        .unwrap();
    assert_no_panic(&output);
    output
}

fn result_labels(output: &Output) -> Vec<String> {
    let records = jsonl(output);
    assert_eq!(records.len(), 1, "{}", stderr(output));
    let mut labels: Vec<String> = records[0]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", records[0]))
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    labels.sort();
    labels
}

#[test]
fn bad_label_lists_are_usage_errors() {
    for (labels, message) in [
        ("", "no labels"),
        ("   ", "no labels"),
        (",", "label 1 is empty"),
        ("cat, ,dog", "label 2 is empty"),
        ("cat,dog,cat", "given twice"),
        ("cat, dog ,cat ", "given twice"),
        ("cat|,dog", "empty synonym"),
        ("cat|kitten,cat", "given twice"),
    ] {
        let output = classify_labels(&["--labels", labels]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{labels:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{labels:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn empty_labels_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels.txt");
    std::fs::write(&file, "# only a comment\n\n   \n").unwrap();
    let output = classify_labels(&["--labels-file", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no labels"), "{}", stderr(&output));
}

#[test]
fn quotes_commas_and_scripts_survive() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels.txt");
    let labels = [
        "a \"quoted\" cat",
        "dog, small",
        "it's a 'bird'",
        "猫",
        "🐶 emoji dog",
        "كلب",
        "כלב",
        "e\u{301}clair \u{200f}rtl-mark",
        "tab\there",
    ];
    std::fs::write(&file, labels.join("\n")).unwrap();
    let output = classify_labels(&["--labels-file", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut want: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    want.sort();
    assert_eq!(result_labels(&output), want);

    let output = classify_labels(&["--labels", "猫,🐶,كلب,כלב"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(result_labels(&output).len(), 4);
}

#[test]
fn labels_longer_than_the_context_are_truncated_with_a_warning() {
    let long = vec!["very"; 200].join(" ") + " long cat";
    let output = classify_labels(&["--labels", &format!("{long},dog")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("truncated"), "{}", stderr(&output));
    assert_eq!(result_labels(&output).len(), 2);

    // Thousands of characters with no spaces, and emoji, one token each or more.
    let emoji = "🐱".repeat(500);
    let output = classify_labels(&["--labels", &format!("{emoji},{}", "x".repeat(5000))]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("truncated"), "{}", stderr(&output));
}

#[test]
fn thousands_of_labels_are_encoded_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels.txt");
    let labels: Vec<String> = (0..3000).map(|i| format!("thing number {i}")).collect();
    std::fs::write(&file, labels.join("\n")).unwrap();
    let output = classify_labels(&["--labels-file", file.to_str().unwrap(), "--verbose"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let records = jsonl(&output);
    assert_eq!(records.len(), 1);
    let results = records[0]["results"].as_array().unwrap();
    assert!(!results.is_empty());
    let total: f64 = results
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .sum();
    assert!(total <= 1.0 + 1e-3, "{total}");
    let peak = common::peak_mib(&output);
    eprintln!("3000 labels: peak memory {peak:.1} MiB");
    assert!(peak < 400.0, "peak memory {peak} MiB for 3000 labels");
}
