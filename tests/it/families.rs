//! Parity of every non-CLIP family with its reference, on the tiny checkpoints that
//! `tests/fixtures/make_family_fixtures.py` builds: transformers 5.23.0 for SigLIP, SigLIP 2
//! fixed-res and MetaCLIP 2 (Hugging Face layout), open_clip 3.3.0 for the open_clip layout.

use crate::common::fixtures;
use crate::parity::{load, max_abs_diff};
use candle_core::{Device, Tensor};
use serde_json::Value;
use vlm::family::{Family, Scoring};
use vlm::labels::Template;
use vlm::source::ModelFiles;
use vlm::Checkpoint;

/// (fixture, family it must be detected as).
const MODELS: [(&str, Family); 5] = [
    ("siglip", Family::Siglip),
    ("siglip2", Family::Siglip),
    ("metaclip2", Family::MetaClip2),
    ("openclip-quickgelu", Family::OpenClip),
    ("openclip-squash", Family::OpenClip),
];

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn family_and_scoring_are_detected_from_the_files() {
    for (model, family) in MODELS {
        let r = load(model);
        assert_eq!(r.classifier.family(), family, "{model}");
        // Cached embeddings are keyed by the family too.
        assert!(
            r.classifier
                .compute_fingerprint()
                .contains(&format!("family {}", family.name())),
            "{model}"
        );
        let want = r.json["scoring"].as_str().unwrap();
        assert_eq!(r.classifier.scoring().name(), want, "{model}");
        if let Some(pipeline) = r.json.get("pipeline_scoring").and_then(Value::as_str) {
            // What transformers' zero-shot pipeline itself reported for this checkpoint.
            assert_eq!(r.classifier.scoring().name(), pipeline, "{model}");
        }
        let scale = r.json["logit_scale"].as_f64().unwrap() as f32;
        assert!((r.classifier.model().logit_scale() - scale).abs() < 1e-6);
        let bias = r.json["logit_bias"].as_f64().unwrap_or(0.0) as f32;
        assert!((r.classifier.model().logit_bias() - bias).abs() < 1e-6);
    }
    assert_eq!(Family::Siglip.scoring(), Scoring::Sigmoid);
}

#[test]
fn token_ids_match_the_reference_tokenizers() {
    for (model, _) in MODELS {
        let r = load(model);
        let mut checked = 0;
        for prompt in r.json["prompts"].as_array().unwrap() {
            let text = prompt["text"].as_str().unwrap();
            let tokens = r.classifier.tokenizer().encode(text).unwrap();
            assert_eq!(
                tokens.ids,
                ids(&prompt["input_ids"]),
                "{model}: ids for {text:?}"
            );
            assert_eq!(
                tokens.truncated,
                prompt["truncated"].as_bool().unwrap(),
                "{model}: truncation flag for {text:?}"
            );
            checked += 1;
        }
        assert!(checked >= 13, "{model}: only {checked} prompts");
    }
}

#[test]
fn text_embeddings_match_the_reference() {
    for (model, _) in MODELS {
        let r = load(model);
        let sequences: Vec<Vec<u32>> = r.json["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| ids(&p["input_ids"]))
            .collect();
        let got = r.classifier.model().encode_text(&sequences).unwrap();
        let diff = max_abs_diff(&got, &r.tensors["text_embeds"]);
        eprintln!("{model}: text embeddings, max abs difference {diff:e}");
        assert!(diff <= 1e-4, "{model}: text embeddings differ by {diff}");
    }
}

#[test]
fn image_embeddings_match_the_reference() {
    for (model, _) in MODELS {
        let r = load(model);
        let count = r.json["images"].as_array().unwrap().len();
        let pixels: Vec<Tensor> = (0..count)
            .map(|i| r.tensors[&format!("pixel_values.{i}")].clone())
            .collect();
        let got = r
            .classifier
            .model()
            .encode_images(&Tensor::stack(&pixels, 0).unwrap())
            .unwrap();
        let diff = max_abs_diff(&got, &r.tensors["image_embeds"]);
        eprintln!("{model}: image embeddings, max abs difference {diff:e}");
        assert!(diff <= 1e-4, "{model}: image embeddings differ by {diff}");
    }
}

/// From image files to probabilities, through each family's own preprocessing and scoring.
#[test]
fn files_to_probabilities_match_the_reference() {
    for (model, _) in MODELS {
        let r = load(model);
        let labels: Vec<String> = r.json["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        let template = Template::new(r.json["template"].as_str().unwrap()).unwrap();
        let prompts: Vec<String> = labels.iter().map(|l| template.apply(l)).collect();
        let text = r.classifier.embed_prompts(&prompts).unwrap();
        let label_diff = max_abs_diff(&text.embeddings, &r.tensors["label_embeds"]);
        assert!(
            label_diff <= 1e-4,
            "{model}: label embeddings differ by {label_diff}"
        );

        for (i, image) in r.json["images"].as_array().unwrap().iter().enumerate() {
            let file = image["file"].as_str().unwrap();
            let lossless = image["kind"] == "lossless";
            let pixels = r.classifier.load_pixels(&fixtures().join(file)).unwrap();
            let reference = r.tensors[&format!("pixel_values.{i}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(
                pixels.len(),
                reference.len(),
                "{model}: {file}: pixel count"
            );
            let pixel_diff = pixels
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            if lossless {
                assert!(
                    pixel_diff <= 0.02,
                    "{model}: {file}: pixels differ by {pixel_diff}"
                );
            }
            let embedded = r.classifier.embed_pixels(&[pixels]).unwrap();
            let ranked = r.classifier.rank(&embedded, &text).unwrap().remove(0);
            let want: Vec<f32> = image["probs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap() as f32)
                .collect();
            let tolerance = if lossless { 3e-3 } else { 1e-2 };
            let prob_diff = ranked
                .iter()
                .map(|s| (s.probability - want[s.index]).abs())
                .fold(0.0, f32::max);
            eprintln!("{model}: {file}: pixels {pixel_diff:.4}, probabilities {prob_diff:.2e}");
            assert!(
                prob_diff <= tolerance,
                "{model}: {file}: probabilities differ by {prob_diff}"
            );
            assert_eq!(
                labels[ranked[0].index],
                image["top1"].as_str().unwrap(),
                "{model}: {file}: top-1"
            );
        }
    }
}

/// SigLIP's text tower sees its padding: a prompt shorter than the fixed length is padded
/// by the tokenizer, and the tower refuses anything else rather than pool a wrong position.
#[test]
fn siglip_text_must_come_padded_to_the_fixed_length() {
    let r = load("siglip2");
    let tokens = r.classifier.tokenizer().encode("a cat").unwrap();
    assert_eq!(tokens.ids.len(), 64);
    assert_eq!(
        r.classifier.tokenizer().pad_id(),
        Some(0),
        "Gemma pads with <pad> = 0"
    );
    let first_pad = tokens.ids.iter().position(|&id| id == 0).unwrap();
    assert_eq!(tokens.ids[first_pad - 1], 1, "<eos> = 1 ends the prompt");
    let err = r
        .classifier
        .model()
        .encode_text(&[tokens.ids[..first_pad].to_vec()])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("64"), "{err}");
}

/// Families vlm cannot run are refused before any weights are read, saying what they are.
#[test]
fn unknown_families_and_layouts_are_refused_with_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for file in [
        "tokenizer.json",
        "preprocessor_config.json",
        "model.safetensors",
    ] {
        std::fs::write(dir.join(file), "not read").unwrap();
    }
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "siglip2", "text_config": {}, "vision_config": {}}"#,
    )
    .unwrap();
    let files = ModelFiles::from_dir(dir).unwrap();
    let err = Checkpoint::load(&files, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("siglip2") && err.contains("NaFlex"), "{err}");

    let oc = tmp.path().join("oc");
    std::fs::create_dir(&oc).unwrap();
    std::fs::write(
        oc.join("open_clip_config.json"),
        r#"{"model_cfg": {"vision_cfg": {"timm_model_name": "fastvit_mci2"}}}"#,
    )
    .unwrap();
    std::fs::write(oc.join("open_clip_model.safetensors"), "not read").unwrap();
    let files = ModelFiles::from_dir(&oc).unwrap();
    let err = Checkpoint::load(&files, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fastvit_mci2"), "{err}");
}

/// A SigLIP `tokenizer.json` without the post-processor that appends the end-of-sequence
/// token (the Hub files' pipelines are not all known): vlm appends it, as
/// `SiglipTokenizer._add_eos_if_not_present` does, and the ids still match.
#[test]
fn siglip_appends_the_eos_a_tokenizer_file_leaves_out() {
    for model in ["siglip", "siglip2"] {
        let r = load(model);
        let source = fixtures().join("models").join(model);
        let tmp = tempfile::tempdir().unwrap();
        let mut tokenizer: Value =
            serde_json::from_str(&std::fs::read_to_string(source.join("tokenizer.json")).unwrap())
                .unwrap();
        tokenizer["post_processor"] = Value::Null;
        std::fs::write(tmp.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
        std::fs::copy(
            source.join("tokenizer_config.json"),
            tmp.path().join("tokenizer_config.json"),
        )
        .unwrap();
        let bare =
            vlm::model::family::siglip::tokenizer(Some(&tmp.path().join("tokenizer.json")), 64)
                .unwrap();
        for prompt in r.json["prompts"].as_array().unwrap() {
            let text = prompt["text"].as_str().unwrap();
            let tokens = bare.encode(text).unwrap();
            assert_eq!(tokens.ids, ids(&prompt["input_ids"]), "{model}: {text:?}");
            assert_eq!(tokens.truncated, prompt["truncated"].as_bool().unwrap());
        }
    }
}
