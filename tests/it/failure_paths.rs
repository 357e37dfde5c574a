//! Failure handling and cache validity through the `vlm` binary, each test guarding a bug
//! that was planted in a copy of the code and passed every other test (issue 10): stale
//! cached embeddings after a preprocessing change, a missing path that did not fail the
//! run, and training labels shifted past an unreadable image.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::common::{self, fixtures, stderr, vlm};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn jsonl(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL {l:?}: {e}")))
        .collect()
}

/// path -> label -> probability.
fn probabilities(records: &[Value]) -> BTreeMap<String, BTreeMap<String, f64>> {
    records
        .iter()
        .map(|r| {
            let results = r["results"]
                .as_array()
                .unwrap_or_else(|| panic!("no results in {r}"));
            let probs = results
                .iter()
                .map(|x| {
                    (
                        x["label"].as_str().unwrap().to_string(),
                        x["probability"].as_f64().unwrap(),
                    )
                })
                .collect();
            (r["path"].as_str().unwrap().to_string(), probs)
        })
        .collect()
}

/// The largest difference between two runs' probabilities over the same images and labels.
fn max_difference(a: &[Value], b: &[Value]) -> f64 {
    let (a, b) = (probabilities(a), probabilities(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut max = 0.0_f64;
    for (path, probs) in &a {
        for (label, p) in probs {
            max = max.max((p - b[path][label]).abs());
        }
    }
    max
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Changing how pixels are prepared changes every embedding, so the cache must not hand
/// back the old ones: the namespace includes `preprocessor_config.json`'s content.
#[test]
fn editing_the_preprocessor_config_invalidates_cached_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&fixtures().join("models/tiny-quickgelu"), &model);
    let images = tmp.path().join("imgs");
    std::fs::create_dir(&images).unwrap();
    for name in ["chelsea.png", "astronaut.png", "coffee.png", "rocket.png"] {
        std::fs::copy(fixtures().join("images").join(name), images.join(name)).unwrap();
    }
    let cache = format!("--cache={}", tmp.path().join("cache").display());
    let run = |cached: bool| {
        let mut command = vlm();
        command
            .args(["classify", "-f", "jsonl", "--verbose", "--labels"])
            .arg("cat,dog,astronaut,coffee,rocket,car")
            .arg("--model")
            .arg(&model)
            .arg(&images);
        if cached {
            command.arg(&cache);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        (jsonl(&output), stderr(&output))
    };

    let (before, log) = run(true);
    assert!(log.contains("image encoder ran on 4 images"), "{log}");

    // Other mean and std, nearest-neighbour resampling and a wider resize before the crop.
    let config_path = model.join("preprocessor_config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["image_mean"] = serde_json::json!([0.3, 0.6, 0.2]);
    config["image_std"] = serde_json::json!([0.5, 0.2, 0.4]);
    config["resample"] = serde_json::json!(0);
    config["size"]["shortest_edge"] = serde_json::json!(64);
    std::fs::write(&config_path, config.to_string()).unwrap();

    let (want, _) = run(false);
    let moved = max_difference(&before, &want);
    eprintln!("the edit moves probabilities by up to {moved:.3}");
    assert!(
        moved > 0.05,
        "the edit must change the answers for this test to mean anything (moved {moved})"
    );
    let (after, log) = run(true);
    assert!(
        log.contains("image encoder ran on 4 images"),
        "cached embeddings of the old preprocessing were reused: {log}"
    );
    let diff = max_difference(&after, &want);
    assert!(
        diff <= 1e-6,
        "a cached run after the edit differs from an uncached one by {diff}"
    );
    // The new namespace is cached in its turn.
    let (again, log) = run(true);
    assert!(
        log.contains("image encoder ran on 0 images (4 embeddings reused"),
        "{log}"
    );
    assert!(max_difference(&again, &want) <= 1e-6);
}

/// `vlm classify --cache DIR --verbose` of `inputs` with `extra`; the exit code, records
/// and log.
fn classify_cached(cache: &Path, inputs: &[&Path], extra: &[&str]) -> (i32, Vec<Value>, String) {
    let output = vlm()
        .args([
            "classify",
            "-f",
            "jsonl",
            "--verbose",
            "--labels",
            "cat,dog",
            "--model",
        ])
        .arg(fixtures().join("models/tiny-quickgelu"))
        .arg(format!("--cache={}", cache.display()))
        .args(extra)
        .args(inputs)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        jsonl(&output),
        stderr(&output),
    )
}

/// The cache's entries: `DIR/<namespace>/<2 hex>/<64 hex>.emb`.
fn cache_entries(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut entries = Vec::new();
    for namespace in std::fs::read_dir(cache).unwrap() {
        let namespace = namespace.unwrap().path();
        for shard in std::fs::read_dir(&namespace).unwrap() {
            let shard = shard.unwrap().path();
            if shard.is_dir() {
                entries.extend(
                    std::fs::read_dir(&shard)
                        .unwrap()
                        .map(|e| e.unwrap().path()),
                );
            }
        }
    }
    entries
}

/// A cache hit skips decoding, not the truncation check: an embedding stored under a cut
/// file's content hash (by an older vlm that decoded it, or planted) never answers for it.
#[test]
fn a_cut_jpeg_is_refused_even_when_its_embedding_is_cached() {
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let bytes = std::fs::read(fixtures().join("jpeg_parity/chelsea_444_base.jpg")).unwrap();
    let good = tmp.path().join("good.jpg");
    std::fs::write(&good, &bytes).unwrap();
    let (code, _, log) = classify_cached(&cache, &[&good], &[]);
    assert_eq!(code, 0, "{log}");
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    // The entry, planted under the hashes of a cut copy and of an intact one with bytes
    // after its end (a different file that decodes the same).
    let plant = |name: &str, content: &[u8]| {
        let path = tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        let hex: String = Sha256::digest(content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let shard = entries[0]
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(&hex[..2]);
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::copy(&entries[0], shard.join(format!("{hex}.emb"))).unwrap();
        path
    };
    let cut = plant("cut.jpg", &bytes[..bytes.len() * 6 / 10]);
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"trailing bytes");
    let intact = plant("intact.jpg", &trailing);
    let (code, records, log) = classify_cached(&cache, &[&intact, &cut], &[]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("image encoder ran on 0 images (1 embeddings reused"),
        "the planted entries are hits: {log}"
    );
    assert!(records[0]["results"].is_array(), "{}", records[0]);
    let error = records[1]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cut.jpg is truncated"), "{}", records[1]);
}

/// The compute mode is part of the cache namespace: a run in another --dtype encodes every
/// image again instead of taking the first run's embeddings.
#[test]
fn each_dtype_keeps_embeddings_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let images =
        ["chelsea.png", "astronaut.png", "coffee.png"].map(|n| fixtures().join("images").join(n));
    let inputs: Vec<&Path> = images.iter().map(|p| p.as_path()).collect();
    for (dtype, ran) in [("f32", 3), ("f16", 3), ("f32", 0), ("f16", 0)] {
        let (code, records, log) = classify_cached(&cache, &inputs, &["--dtype", dtype]);
        assert_eq!(code, 0, "{log}");
        assert_eq!(records.len(), 3);
        assert!(
            log.contains(&format!("image encoder ran on {ran} images")),
            "--dtype {dtype}: {log}"
        );
    }
}

/// A path that does not exist is a failed input even when nothing else fails: exit 1 and
/// counted in the summary (a test pairing it with an undecodable file cannot tell).
#[test]
fn a_missing_path_alone_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.png");
    let output = vlm()
        .args(["classify", "-f", "jsonl", "-l", "cat,dog", "-m"])
        .arg(common::tiny_model())
        .arg(&missing)
        .output()
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("labelled 0, failed 1,"), "{err}");
    assert!(err.contains("missing.png"), "{err}");
    let records = jsonl(&output);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["path"], missing.display().to_string());
    assert!(records[0]["error"].is_string(), "{}", records[0]);

    // Next to a good image: still exit 1, and only the missing path counts as failed.
    let good = fixtures().join("images/chelsea.png");
    let output = vlm()
        .args(["classify", "-l", "cat,dog", "-m"])
        .arg(common::tiny_model())
        .arg(&good)
        .arg(&missing)
        .output()
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("labelled 1, failed 1,"), "{err}");
}

/// `vlm fit` in `dir` on `train/`, writing `out`; returns the run.
fn fit(dir: &Path, out: &str, extra: &[&str]) -> Output {
    vlm()
        .current_dir(dir)
        .args(["fit", "train", "--out", out, "--model"])
        .arg(common::tiny_model())
        .args(extra)
        .output()
        .unwrap()
}

/// An unreadable training image is left out, and nothing else changes: every other image
/// keeps its own label and its side of the held-out split, so the probe is the one trained
/// without the file, byte for byte.
#[test]
fn an_unreadable_training_image_changes_nothing_else() {
    // Without a held-out part, and with half held out under two split seeds: with seed 1
    // the broken file's hash puts it among the held-out half of its class, with seed 5
    // among the training half.
    for (holdout, seed) in [("0", "1"), ("0.5", "1"), ("0.5", "5")] {
        let dir = tempfile::tempdir().unwrap();
        // Commands run in the folder with relative paths: the split hashes each image's
        // path below `train`, the same in both runs.
        common::draw_domain(&dir.path().join("train"), 4, 12, 5);
        let extra = ["--holdout", holdout, "--seed", seed];
        let clean = fit(dir.path(), "clean.safetensors", &extra);
        assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));

        // A PNG signature and header with the data cut off: found as an image, fails to
        // decode. It sorts second in the first class folder, so every later image would
        // take its neighbour's label if the failure lost its place.
        let whole = std::fs::read(dir.path().join("train/blue/00.png")).unwrap();
        std::fs::write(dir.path().join("train/blue/00a.png"), &whole[..60]).unwrap();
        let broken = fit(dir.path(), "broken.safetensors", &extra);
        let err = stderr(&broken);
        assert_eq!(broken.status.code(), Some(1), "{err}");
        assert!(err.contains("00a.png"), "{err}");
        assert!(err.contains("failed 1 "), "{err}");

        assert_eq!(
            stdout(&broken).replace("broken.safetensors", "clean.safetensors"),
            stdout(&clean),
            "holdout {holdout}, seed {seed}: the reports differ"
        );
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        assert!(
            read("broken.safetensors") == read("clean.safetensors"),
            "holdout {holdout}, seed {seed}: the probe trained with an unreadable image differs \
             from the one trained without it"
        );
    }
}
