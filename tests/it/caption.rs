//! Parity of BLIP captions and answers with transformers 5.23's `generate`, on the tiny
//! checkpoints `tests/fixtures/make_blip_fixtures.py` builds: pixels, image encodings,
//! first-step logits, the generated ids, the decoded strings and the log-probabilities, for
//! greedy and beam search under every generation setting, and the settings read from the
//! checkpoint's own files.

use std::collections::HashMap;

use crate::common::fixtures;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use vlm::caption::{Captioner, EarlyStopping, GenerationOptions, ImageEncoding};
use vlm::model::blip::BlipTask;
use vlm::model::{Int8Kernel, LoadOptions, Precision};
use vlm::source::ModelFiles;

struct Fixture {
    json: Value,
    tensors: HashMap<String, Tensor>,
    captioner: Captioner,
    encodings: Vec<ImageEncoding>,
}

fn load(name: &str) -> Fixture {
    let dir = fixtures();
    let text = std::fs::read_to_string(dir.join(format!("reference/blip-{name}.json"))).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let tensors = candle_core::safetensors::load(
        dir.join(format!("reference/blip-{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let files = ModelFiles::from_dir(&dir.join("models").join(format!("blip-{name}"))).unwrap();
    let captioner =
        Captioner::load(&files, &Device::Cpu, DType::F32, &LoadOptions::default()).unwrap();
    let pixels: Vec<Vec<f32>> = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            captioner
                .load_pixels(&dir.join(f.as_str().unwrap()))
                .unwrap()
        })
        .collect();
    let encodings = captioner.encode(&pixels).unwrap();
    Fixture {
        json,
        tensors,
        captioner,
        encodings,
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// The generation settings of a case, as it passed them to `generate`.
fn options(settings: &Value) -> GenerationOptions {
    let mut o = GenerationOptions::default();
    let Some(map) = settings.as_object() else {
        return o;
    };
    for (key, value) in map {
        let int = || value.as_u64().unwrap() as usize;
        match key.as_str() {
            "num_beams" => o.num_beams = int(),
            "max_new_tokens" => o.max_new_tokens = Some(int()),
            "max_length" => o.max_length = Some(int()),
            "min_length" => o.min_length = int(),
            "no_repeat_ngram_size" => o.no_repeat_ngram_size = int(),
            "repetition_penalty" => o.repetition_penalty = value.as_f64().unwrap() as f32,
            "length_penalty" => o.length_penalty = value.as_f64().unwrap() as f32,
            "early_stopping" => {
                o.early_stopping = match value {
                    Value::Bool(true) => EarlyStopping::Finished,
                    Value::Bool(false) => EarlyStopping::Heuristic,
                    _ => EarlyStopping::Never,
                }
            }
            other => panic!("setting {other} is not mapped"),
        }
    }
    o
}

#[test]
fn pixels_and_image_encodings_match_the_reference() {
    for name in ["caption", "vqa", "files"] {
        let f = load(name);
        let dir = fixtures();
        let images = f.json["images"].as_array().unwrap();
        assert!(images.len() >= 10);
        let mut worst = 0.0f32;
        for (i, file) in images.iter().enumerate() {
            let pixels = f
                .captioner
                .load_pixels(&dir.join(file.as_str().unwrap()))
                .unwrap();
            let want = values(&f.tensors[&format!("pixel_values.{i}")]);
            let diff = max_diff(&pixels, &want);
            assert!(diff <= 1e-5, "{name}: pixels of {file} differ by {diff}");
            let diff = max_diff(
                f.encodings[i].values(),
                &values(&f.tensors[&format!("vision.{i}")]),
            );
            worst = worst.max(diff);
        }
        eprintln!("{name}: image encodings, max abs difference {worst:e}");
        assert!(worst <= 1e-4, "{name}: image encodings differ by {worst}");
    }
}

/// A case's images (from `encodings`), its prompt or question, and its settings.
fn case_inputs<'a>(
    encodings: &'a [ImageEncoding],
    case: &'a Value,
) -> (Vec<&'a ImageEncoding>, Option<&'a str>, GenerationOptions) {
    let images = case["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &encodings[r["image"].as_u64().unwrap() as usize])
        .collect();
    let text = case
        .get("prompt")
        .or_else(|| case.get("question"))
        .and_then(Value::as_str);
    (images, text, options(&case["settings"]))
}

/// Captions, or answers to `text` for a question-answering checkpoint.
fn generate(
    captioner: &Captioner,
    images: &[&ImageEncoding],
    text: Option<&str>,
    options: &GenerationOptions,
) -> Vec<vlm::caption::Generated> {
    if captioner.task() == BlipTask::Answer {
        let questions = vec![text.unwrap(); images.len()];
        captioner.answer(images, &questions, options).unwrap()
    } else {
        captioner.caption(images, text, options).unwrap()
    }
}

/// Every case of a fixture: first-step logits, ids, strings and log-probabilities.
fn check_cases(name: &str) -> (usize, usize) {
    let f = load(name);
    let (mut sequences, mut worst_logit, mut worst_score) = (0, 0.0f32, 0.0f64);
    let mut beams_checked = 0;
    for case in f.json["cases"].as_array().unwrap() {
        let case_name = case["name"].as_str().unwrap();
        let results = case["results"].as_array().unwrap();
        let (images, text, options) = case_inputs(&f.encodings, case);
        // First-step logits, one row per image.
        let logits = f.captioner.first_step_logits(&images, text).unwrap();
        let want = &f.tensors[&format!("logits.{case_name}")];
        let diff = max_diff(&logits.concat(), &values(want));
        worst_logit = worst_logit.max(diff);
        assert!(
            diff <= 1e-4,
            "{name}/{case_name}: first-step logits differ by {diff}"
        );
        let got = generate(&f.captioner, &images, text, &options);
        for (g, want) in got.iter().zip(results) {
            let image = want["image"].as_u64().unwrap();
            assert_eq!(
                g.tokens,
                ids(&want["tokens"]),
                "{name}/{case_name}: ids for image {image}"
            );
            assert_eq!(
                g.text,
                want["text"].as_str().unwrap(),
                "{name}/{case_name}: text for image {image}"
            );
            assert_eq!(g.ended, want["ended"].as_bool().unwrap());
            let score = want["log_prob"].as_f64().unwrap();
            let diff = (g.log_prob - score).abs();
            worst_score = worst_score.max(diff);
            assert!(
                diff <= 1e-4 * score.abs().max(1.0),
                "{name}/{case_name}: log-probability {} vs {score} for image {image}",
                g.log_prob
            );
            sequences += 1;
            if options.num_beams > 1 {
                beams_checked += 1;
            }
        }
    }
    eprintln!(
        "{name}: {sequences} sequences ({beams_checked} by beam search) identical; first-step \
         logits within {worst_logit:e}, log-probabilities within {worst_score:e}"
    );
    (sequences, beams_checked)
}

#[test]
fn captions_match_transformers_generate() {
    let (sequences, beams) = check_cases("caption");
    assert!(sequences >= 100 && beams >= 40, "{sequences} {beams}");
}

#[test]
fn answers_match_transformers_generate() {
    let (sequences, beams) = check_cases("vqa");
    assert!(sequences >= 60 && beams >= 30, "{sequences} {beams}");
}

/// The `blip-files` checkpoint changes every setting transformers reads from the files
/// (start and end tokens, the position table that caps the default length, resampling,
/// mean and std, the tokenizer's clean-up) and sets generation keys transformers ignores
/// (legacy keys in `text_config`, a `generation_config.json`): the reference follows the
/// first and ignores the second, and so must vlm.
#[test]
fn settings_from_the_files_are_followed_as_transformers_follows_them() {
    let dir = fixtures().join("models/blip-files");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let text = &config["text_config"];
    // What is ignored is really there.
    assert_eq!(text["num_beams"], 4);
    assert_eq!(text["max_length"], 5);
    assert!(dir.join("generation_config.json").is_file());
    let f = load("files");
    let blip = f.captioner.config();
    assert_eq!(
        blip.text.bos_token_id,
        f.json["bos_token_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        blip.text.sep_token_id,
        f.json["sep_token_id"].as_u64().unwrap() as u32
    );
    assert_ne!(
        blip.text.bos_token_id,
        f.captioner.tokenizer().encode("x").unwrap()[0]
    );
    assert_eq!(blip.text.max_position_embeddings, 12);
    let (sequences, _) = check_cases("files");
    assert!(sequences >= 40);
    // The default length was capped by the 12 positions: some sequence is exactly 12 long
    // and none longer, though 20 new tokens would otherwise be allowed.
    let cases = f.json["cases"].as_array().unwrap();
    let lengths: Vec<usize> = cases
        .iter()
        .filter(|c| {
            c["settings"]
                .as_object()
                .is_none_or(|m| !m.contains_key("max_new_tokens"))
        })
        .flat_map(|c| c["results"].as_array().unwrap().iter())
        .map(|r| r["tokens"].as_array().unwrap().len())
        .collect();
    assert_eq!(lengths.iter().max(), Some(&12));
}

#[test]
fn the_tokenizer_matches_the_processor() {
    for name in ["caption", "files"] {
        let f = load(name);
        for entry in f.json["tokenizer"].as_array().unwrap() {
            let text = entry["text"].as_str().unwrap();
            let got = f.captioner.tokenizer().encode(text).unwrap();
            assert_eq!(got, ids(&entry["input_ids"]), "{name}: {text:?}");
            assert_eq!(
                f.captioner.tokenizer().decode(&got).unwrap(),
                entry["decoded"].as_str().unwrap(),
                "{name}: decoding {text:?}"
            );
        }
    }
}

/// Sequences that end at different steps in one batch come out as they do one at a time.
#[test]
fn a_batch_gives_each_image_what_it_gets_alone() {
    let f = load("caption");
    let all: Vec<&ImageEncoding> = f.encodings.iter().collect();
    for beams in [1, 3] {
        let options = GenerationOptions {
            num_beams: beams,
            ..Default::default()
        };
        let together = f.captioner.caption(&all, None, &options).unwrap();
        let lengths: std::collections::HashSet<usize> =
            together.iter().map(|g| g.tokens.len()).collect();
        assert!(lengths.len() >= 3, "{beams} beams: lengths {lengths:?}");
        for (i, image) in all.iter().enumerate() {
            let alone = f.captioner.caption(&[image], None, &options).unwrap();
            assert_eq!(
                alone[0].tokens, together[i].tokens,
                "{beams} beams, image {i}"
            );
        }
    }
}

#[test]
fn the_wrong_kind_of_checkpoint_is_refused_with_the_command_that_fits() {
    let f = load("caption");
    let image = &f.encodings[0];
    let err = f
        .captioner
        .answer(&[image], &["what?"], &GenerationOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vlm caption"), "{err}");
    let vqa = load("vqa");
    let err = vqa
        .captioner
        .caption(&[&vqa.encodings[0]], None, &GenerationOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vlm ask"), "{err}");
    // A CLIP checkpoint given to the captioner, before its weights are read.
    let files = ModelFiles::from_dir(&fixtures().join("models/tiny-quickgelu")).unwrap();
    let err = Captioner::load(&files, &Device::Cpu, DType::F32, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vlm classify"), "{err}");
    // And a BLIP checkpoint given to classification.
    let files = ModelFiles::from_dir(&fixtures().join("models/blip-caption")).unwrap();
    let err = vlm::Checkpoint::load(&files, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vlm caption"), "{err}");
}

/// `--dtype int8` captions and answers, on every int8 kernel this CPU runs: how many of the
/// fixtures' sequences keep transformers' f32 ids, and how far the image encodings move.
/// The vision and text stacks' products are int8; the patch embedding and the LM head stay
/// f32 (BENCHMARKS.md, "Captions in int8").
fn int8_keeps_the_reference_tokens(kernel: Int8Kernel) {
    if !kernel.supported() {
        eprintln!(
            "skipped: the {} int8 kernel does not run on this CPU",
            kernel.name()
        );
        return;
    }
    let dir = fixtures();
    let load_options = LoadOptions {
        int8_kernel: Some(kernel),
        ..Default::default()
    };
    let (mut same, mut total) = (0usize, 0usize);
    for name in ["caption", "vqa"] {
        let f = load(name);
        let files = ModelFiles::from_dir(&dir.join("models").join(format!("blip-{name}"))).unwrap();
        let int8 = Captioner::load(&files, &Device::Cpu, Precision::Int8, &load_options).unwrap();
        assert_eq!(int8.kernels(), kernel.label());
        assert!(int8.compute_fingerprint().contains("int8"));
        let pixels: Vec<Vec<f32>> = f.json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| int8.load_pixels(&dir.join(file.as_str().unwrap())).unwrap())
            .collect();
        let encodings = int8.encode(&pixels).unwrap();
        let worst = encodings
            .iter()
            .zip(&f.encodings)
            .map(|(a, b)| cosine(a.values(), b.values()))
            .fold(1.0f32, f32::min);
        eprintln!(
            "{name} ({}): image encodings, least cosine to f32 {worst}",
            kernel.name()
        );
        assert!(
            worst >= 0.995,
            "{name}: int8 image encodings at cosine {worst}"
        );
        let (mut case_same, mut case_total) = (0, 0);
        for case in f.json["cases"].as_array().unwrap() {
            let results = case["results"].as_array().unwrap();
            let (images, text, options) = case_inputs(&encodings, case);
            let got = generate(&int8, &images, text, &options);
            for (g, want) in got.iter().zip(results) {
                case_total += 1;
                if g.tokens == ids(&want["tokens"]) {
                    case_same += 1;
                }
            }
        }
        eprintln!(
            "{name} ({}): {case_same} of {case_total} sequences keep transformers' f32 ids",
            kernel.name()
        );
        same += case_same;
        total += case_total;
    }
    let share = same as f64 / total as f64;
    assert!(
        share >= INT8_SAME_TOKENS,
        "{}: int8 kept the reference ids of {same} of {total} sequences",
        kernel.name()
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The least share of the fixtures' sequences int8 must generate exactly as transformers'
/// f32 does.
const INT8_SAME_TOKENS: f64 = 0.45;

#[test]
fn int8_captions_on_amx_keep_the_reference_tokens() {
    int8_keeps_the_reference_tokens(Int8Kernel::Amx);
}

#[test]
fn int8_captions_on_avx512_vnni_keep_the_reference_tokens() {
    int8_keeps_the_reference_tokens(Int8Kernel::Avx512Vnni);
}

#[test]
fn int8_captions_on_avx_vnni_keep_the_reference_tokens() {
    int8_keeps_the_reference_tokens(Int8Kernel::AvxVnni);
}

#[test]
fn int8_captions_on_avx2_keep_the_reference_tokens() {
    int8_keeps_the_reference_tokens(Int8Kernel::Avx2);
}

#[test]
fn int8_captions_on_the_portable_kernel_keep_the_reference_tokens() {
    int8_keeps_the_reference_tokens(Int8Kernel::Portable);
}
