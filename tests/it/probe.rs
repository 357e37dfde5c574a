//! `vlm fit` and `vlm classify --probe` on a generated colour domain, with the tiny
//! random-weight checkpoint: its prompts rank the colours by chance, its image embeddings
//! still carry the colour, so a probe must beat the prompts clearly.
//!
//! Commands run inside the temporary directory with relative paths, so the held-out split
//! (a hash of each image's path) is the same on every run.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{self, stderr};
use serde_json::Value;

fn vlm(dir: &Path, args: &[&str]) -> Output {
    common::vlm().current_dir(dir).args(args).output().unwrap()
}

const LABELS: &str = "red,green,blue,yellow";

fn model() -> String {
    common::tiny_model().display().to_string()
}

fn other_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-gelu-f16")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Training images (16 per colour) and a separate test set (12 per colour, another seed).
fn domain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::draw_domain(&dir.path().join("train"), 4, 16, 1);
    common::draw_domain(&dir.path().join("test"), 4, 12, 2);
    dir
}

fn fit(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let model = model();
    let mut args = vec!["fit", "train", "--out", out, "--model", &model];
    args.extend_from_slice(extra);
    let output = vlm(dir, &args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    output
}

/// Share of JSON Lines records whose top label is the image's folder.
fn accuracy(output: &Output) -> f64 {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    let records: Vec<Value> = stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 48);
    let right = records
        .iter()
        .filter(|r| {
            let path = Path::new(r["path"].as_str().unwrap());
            let truth = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            r["results"][0]["label"] == truth
        })
        .count();
    right as f64 / records.len() as f64
}

/// The value after "NAME accuracy:" in `vlm fit`'s report, as a fraction.
fn reported(report: &str, name: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(&format!("{name} accuracy:")))
        .unwrap_or_else(|| panic!("no {name} accuracy in {report}"));
    let percent = line
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .split('%')
        .next()
        .unwrap();
    percent.parse::<f64>().unwrap() / 100.0
}

/// The `__metadata__` of a safetensors file.
fn metadata(path: &Path) -> serde_json::Map<String, Value> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header["__metadata__"].as_object().unwrap().clone()
}

#[test]
fn a_probe_beats_the_prompts_and_chance() {
    let dir = domain();
    let report = stdout(&fit(dir.path(), "probe.safetensors", &[]));
    let model = model();
    let jsonl = ["--format", "jsonl", "--model", &model, "test"];
    let zero_shot = accuracy(&vlm(
        dir.path(),
        &[&["classify", "--labels", LABELS], &jsonl[..]].concat(),
    ));
    let probe = accuracy(&vlm(
        dir.path(),
        &[&["classify", "--probe", "probe.safetensors"], &jsonl[..]].concat(),
    ));
    eprintln!("{report}zero-shot {zero_shot:.3}, probe {probe:.3} on the test set");
    assert!(probe >= 0.8, "probe {probe}");
    assert!(
        probe >= zero_shot + 0.25,
        "probe {probe} vs zero-shot {zero_shot}"
    );
    assert!(reported(&report, "train") >= 0.9, "{report}");
    assert!(reported(&report, "held-out") >= 0.75, "{report}");
    assert!(reported(&report, "zero-shot") <= 0.5, "{report}");

    let meta = metadata(&dir.path().join("probe.safetensors"));
    assert_eq!(meta["format"], "vlm-linear-probe");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["labels"], r#"["blue","green","red","yellow"]"#);
    assert_eq!(meta["embedding_dim"], "16");
    assert_eq!(meta["model_id"], model.as_str());
    assert_eq!(meta["model_fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(meta["train_seed"], "0");
}

#[test]
fn probe_results_keep_the_record_shape() {
    let dir = domain();
    fit(dir.path(), "probe.safetensors", &["--epochs", "50"]);
    let model = model();
    let output = vlm(
        dir.path(),
        &[
            "classify",
            "--probe",
            "probe.safetensors",
            "--model",
            &model,
            "--format",
            "jsonl",
            "test/red/00.png",
        ],
    );
    let record: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let results = record["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    // The similarity is the probe's logit: the probabilities are their softmax.
    let logits: Vec<f64> = results
        .iter()
        .map(|r| r["similarity"].as_f64().unwrap())
        .collect();
    let total: f64 = logits.iter().map(|l| l.exp()).sum();
    for (result, logit) in results.iter().zip(&logits) {
        let p = result["probability"].as_f64().unwrap();
        assert!((p - logit.exp() / total).abs() < 1e-5, "{results:?}");
        assert_eq!(result["prompt"], "");
    }
    assert!(logits.windows(2).all(|w| w[0] >= w[1]), "{logits:?}");
    let table = vlm(
        dir.path(),
        &[
            "classify",
            "--probe",
            "probe.safetensors",
            "--model",
            &model,
            "test/red/00.png",
        ],
    );
    assert!(stdout(&table).contains(" logit "), "{}", stdout(&table));
}

#[test]
fn the_same_seed_gives_the_same_file() {
    let dir = domain();
    fit(dir.path(), "a.safetensors", &["--seed", "3"]);
    fit(dir.path(), "b.safetensors", &["--seed", "3"]);
    fit(dir.path(), "c.safetensors", &["--seed", "4"]);
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert_eq!(read("a.safetensors"), read("b.safetensors"));
    // Another seed holds out other images, so the weights differ, not just the metadata.
    let weights = |name: &str| {
        let tensors =
            candle_core::safetensors::load(dir.path().join(name), &candle_core::Device::Cpu)
                .unwrap();
        tensors["weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_ne!(weights("a.safetensors"), weights("c.safetensors"));
}

#[test]
fn a_probe_for_another_model_is_refused() {
    let dir = domain();
    fit(dir.path(), "probe.safetensors", &["--epochs", "20"]);
    let other = other_model().display().to_string();
    let output = vlm(
        dir.path(),
        &[
            "classify",
            "--probe",
            "probe.safetensors",
            "--model",
            &other,
            "test",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("probe.safetensors")
            && message.contains("tiny-quickgelu")
            && message.contains("tiny-gelu-f16")
            && message.contains("vlm fit"),
        "{message}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn probe_arguments_are_checked() {
    let dir = domain();
    let model = model();
    // Exactly one of --labels, --labels-file and --probe.
    let both = vlm(
        dir.path(),
        &[
            "classify",
            "--probe",
            "p.safetensors",
            "--labels",
            LABELS,
            "--model",
            &model,
            "test",
        ],
    );
    assert_eq!(both.status.code(), Some(2));
    assert!(stderr(&both).contains("--probe"), "{}", stderr(&both));
    let none = vlm(dir.path(), &["classify", "--model", &model, "test"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("--probe"), "{}", stderr(&none));
    // A file that is not a probe.
    let weights = common::tiny_model().join("model.safetensors");
    let weights = weights.display().to_string();
    let foreign = vlm(
        dir.path(),
        &["classify", "--probe", &weights, "--model", &model, "test"],
    );
    assert_eq!(foreign.status.code(), Some(2));
    assert!(
        stderr(&foreign).contains("not a vlm probe"),
        "{}",
        stderr(&foreign)
    );
    // Training options.
    for (bad, flag) in [
        ("--holdout=1", "--holdout"),
        ("--l2=-1", "--l2"),
        ("--epochs=0", "--epochs"),
    ] {
        let output = vlm(
            dir.path(),
            &[
                "fit",
                "train",
                "--out",
                "p.safetensors",
                "--model",
                &model,
                bad,
            ],
        );
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(stderr(&output).contains(flag), "{}", stderr(&output));
    }
    assert!(!dir.path().join("p.safetensors").exists());
}
