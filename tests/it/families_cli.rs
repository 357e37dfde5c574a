//! Every command on the non-CLIP families' tiny checkpoints: classify (scoring reported,
//! multi-label thresholds per scoring, few-shot examples, probes), eval (and `--models`),
//! fit, embed, search, the embedding cache and bench.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::{self, fixtures};
use serde_json::Value;

fn model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn image(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

fn vlm(command: &str) -> Command {
    let mut vlm = common::vlm();
    vlm.arg(command);
    vlm
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        command,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn jsonl(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

fn classify(model_name: &str, extra: &[&str]) -> Vec<Value> {
    jsonl(&run(vlm("classify")
        .arg("--model")
        .arg(model(model_name))
        .arg(image("chelsea.png"))
        .arg(image("coffee.png"))
        .arg(image("rocket.png"))
        .args(["--labels", "cat,dog,coffee,rocket", "--format", "jsonl"])
        .args(extra)))
}

fn probabilities(record: &Value) -> Vec<f64> {
    record["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .collect()
}

#[test]
fn classify_says_which_scoring_each_family_uses() {
    for (name, scoring) in [
        ("siglip", "sigmoid"),
        ("siglip2", "sigmoid"),
        ("metaclip2", "softmax"),
        ("openclip-quickgelu", "softmax"),
        ("openclip-squash", "softmax"),
    ] {
        let records = classify(name, &[]);
        assert_eq!(records.len(), 3);
        for record in &records {
            assert_eq!(record["scoring"], scoring, "{name}");
            let total: f64 = probabilities(record).iter().sum();
            if scoring == "softmax" {
                assert!(
                    (total - 1.0).abs() < 1e-4,
                    "{name}: softmax sums to {total}"
                );
            } else {
                // Independent per label: the siglip fixture's scores are all above 0.5.
                assert!((total - 1.0).abs() > 0.1, "{name}: sigmoids sum to {total}");
            }
        }
    }
    let csv = run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(image("chelsea.png"))
        .args(["--labels", "cat,dog", "--format", "csv"]));
    let text = String::from_utf8_lossy(&csv.stdout);
    assert!(text.lines().nth(1).unwrap().ends_with(",sigmoid"), "{text}");
}

/// With sigmoid scoring, --multi-label and --min-probability act on each label's own
/// probability; with softmax scoring --multi-label acts on the cosine.
#[test]
fn multi_label_thresholds_follow_the_scoring() {
    for threshold in ["0.6", "0.7"] {
        for record in classify("siglip", &["--multi-label", "--threshold", threshold]) {
            let t: f64 = threshold.parse().unwrap();
            let want: Vec<&str> = record["results"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["probability"].as_f64().unwrap() >= t)
                .map(|r| r["label"].as_str().unwrap())
                .collect();
            let got: Vec<&str> = record["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            assert_eq!(got, want, "threshold {threshold}");
        }
    }
    // The default, 0.5, is the boundary SigLIP was trained for.
    let records = classify("siglip", &["--multi-label"]);
    for record in &records {
        let selected = record["labels"].as_array().unwrap().len();
        let above = probabilities(record).iter().filter(|&&p| p >= 0.5).count();
        assert_eq!(selected, above);
    }
    let output = vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(image("chelsea.png"))
        .args(["--labels", "cat,dog", "--multi-label", "--threshold", "1.5"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "a probability above 1 is refused"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("sigmoid"));

    for record in classify("metaclip2", &["--multi-label", "--threshold", "0.1"]) {
        let want: Vec<&str> = record["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["similarity"].as_f64().unwrap() >= 0.1)
            .map(|r| r["label"].as_str().unwrap())
            .collect();
        assert_eq!(record["labels"], serde_json::json!(want));
    }

    for record in classify("siglip", &["--min-probability", "0.75"]) {
        let top = probabilities(&record)[0];
        assert_eq!(record["uncertain"], top < 0.75, "{record}");
    }
}

fn domain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::draw_domain(&dir.path().join("train"), 4, 6, 11);
    common::draw_domain(&dir.path().join("test"), 4, 4, 12);
    dir
}

/// `vlm eval --models` gives, per model, exactly what `vlm eval --model` gives alone.
#[test]
fn eval_models_rows_equal_separate_evals() {
    let dir = domain();
    let test = dir.path().join("test");
    let names = ["siglip", "metaclip2", "openclip-squash"];
    let list = names
        .iter()
        .map(|n| model(n).display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let table = run(vlm("eval").arg(&test).args(["--models", &list, "-q"]));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let rows = json(&run(vlm("eval")
        .arg(&test)
        .args(["--models", &list, "--format", "json", "-q"])));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), names.len());
    for pair in rows.windows(2) {
        assert!(
            pair[0]["top1"].as_f64() >= pair[1]["top1"].as_f64(),
            "best first"
        );
    }
    for name in names {
        let dir_name = model(name).display().to_string();
        let row = rows
            .iter()
            .find(|r| r["model"] == dir_name.as_str())
            .unwrap_or_else(|| panic!("no row for {name}"));
        let alone = json(&run(vlm("eval")
            .arg(&test)
            .arg("--model")
            .arg(model(name))
            .args(["--format", "json", "-q"])));
        assert_eq!(row["top1"], alone["top1"], "{name}");
        assert_eq!(row["top_k"], alone["top_k"], "{name}");
        assert_eq!(row["macro_f1"], alone["macro"]["f1"], "{name}");
        assert_eq!(row["images"], alone["images"], "{name}");
        assert!(row["weights_bytes"].as_u64().unwrap() > 10_000, "{name}");
        assert!(row["images_per_second"].as_f64().unwrap() > 0.0, "{name}");
        assert_eq!(
            row["scoring"],
            if name == "siglip" {
                "sigmoid"
            } else {
                "softmax"
            }
        );
        assert!(table.contains(&dir_name), "{table}");
    }
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains("tests/fixtures/models"))
            .count(),
        names.len() + 1,
        "one row per model plus the best line: {table}"
    );
}

/// Few-shot examples and a linear probe on a SigLIP checkpoint.
#[test]
fn examples_and_probes_work_with_sigmoid_scoring() {
    let dir = domain();
    let labels = "red,green,blue,yellow";
    let zero = jsonl(&run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(dir.path().join("test"))
        .args(["--labels", labels, "--format", "jsonl"])));
    // Weight 0: the examples change nothing, the sigmoid scores are the zero-shot ones.
    let weightless = jsonl(&run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(dir.path().join("test"))
        .arg("--examples")
        .arg(dir.path().join("train"))
        .args([
            "--examples-weight",
            "0",
            "--labels",
            labels,
            "--format",
            "jsonl",
        ])));
    assert_eq!(zero.len(), 16);
    for (a, b) in zero.iter().zip(&weightless) {
        assert_eq!(b["scoring"], "sigmoid");
        for (p, q) in probabilities(a).iter().zip(probabilities(b)) {
            assert!((p - q).abs() < 1e-6, "{a} vs {b}");
        }
    }
    let strong = jsonl(&run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(dir.path().join("test"))
        .arg("--examples")
        .arg(dir.path().join("train"))
        .args(["--examples-weight", "100", "--examples-sharpness", "50"])
        .args(["--labels", labels, "--format", "jsonl"])));
    assert!(strong
        .iter()
        .zip(&zero)
        .any(|(s, z)| probabilities(s) != probabilities(z)));

    let probe = dir.path().join("probe.safetensors");
    run(vlm("fit")
        .arg(dir.path().join("train"))
        .arg("--out")
        .arg(&probe)
        .arg("--model")
        .arg(model("siglip"))
        .arg("-q"));
    let probed = jsonl(&run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(dir.path().join("test"))
        .arg("--probe")
        .arg(&probe)
        .args(["--format", "jsonl"])));
    assert_eq!(probed.len(), 16);
    for record in &probed {
        assert_eq!(record["scoring"], "probe-softmax");
        let total: f64 = probabilities(record).iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
    // A probe fitted on one family's embeddings is refused on another's.
    let output = vlm("classify")
        .arg("--model")
        .arg(model("siglip2"))
        .arg(dir.path().join("test"))
        .arg("--probe")
        .arg(&probe)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// embed, search and the embedding cache with each family; the cache keeps families apart.
#[test]
fn embed_search_and_cache_work_per_family() {
    let dir = domain();
    let test = dir.path().join("test");
    let cache = dir.path().join("cache");
    let cache_arg = format!("--cache={}", cache.display());
    for name in ["siglip", "metaclip2", "openclip-quickgelu"] {
        let out = dir.path().join(format!("{name}.jsonl"));
        run(vlm("embed")
            .arg("--model")
            .arg(model(name))
            .arg(&test)
            .arg("-o")
            .arg(&out)
            .args([&cache_arg, "-q"]));
        let rows: Vec<Value> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 16, "{name}");
        let hits = jsonl(&run(vlm("search")
            .arg("a red square")
            .arg(&test)
            .arg("--model")
            .arg(model(name))
            .args(["--top", "3", "--format", "jsonl", &cache_arg, "-q"])));
        assert_eq!(hits.len(), 3, "{name}");
    }
    // Cached embeddings come back for the same family and give the same scores.
    let first = jsonl(&run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(&test)
        .args(["--labels", "red,blue", "--format", "jsonl", &cache_arg])));
    let again = run(vlm("classify")
        .arg("--model")
        .arg(model("siglip"))
        .arg(&test)
        .args([
            "--labels", "red,blue", "--format", "jsonl", &cache_arg, "-v",
        ]));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("image encoder ran on 0 images"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    for (a, b) in first.iter().zip(jsonl(&again)) {
        assert_eq!(probabilities(a), probabilities(&b));
    }
}

#[test]
fn bench_runs_each_family() {
    for name in ["siglip", "openclip-squash"] {
        let output = run(vlm("bench").arg("--model").arg(model(name)).args([
            "--batch-sizes",
            "1,2",
            "--text-prompts",
            "4",
            "--seconds",
            "0.2",
            "--json",
        ]));
        let report: Value = json(&output);
        assert!(report.is_object(), "{name}: {report}");
    }
}
