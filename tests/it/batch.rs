//! Batch labelling of folders through the `vlm` binary: discovery, per-file errors,
//! kill-and-resume, the embedding cache, prompt ensembles, --organize and --shard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{fixtures, stderr, vlm};
use image::{Rgb, RgbImage};
use serde_json::Value;

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub(crate) fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or bad line {l:?}: {e}")))
        .collect()
}

/// A picture that differs with `seed`, so the model gives each its own answer.
pub(crate) fn picture(seed: u32, width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(7 + seed) ^ y.wrapping_mul(13 + 3 * seed);
        Rgb([
            (v % 251) as u8,
            ((v / 3 + seed * 40) % 253) as u8,
            ((x + y + seed * 17) % 255) as u8,
        ])
    })
}

pub(crate) fn save(image: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save(path).unwrap();
}

/// `root/NNN.png`: ten different pictures of `width` x `height`, copied under `total`
/// names (many inputs, cheap to make).
pub(crate) fn many_pictures(root: &Path, total: usize, width: u32, height: u32) {
    for i in 0..10 {
        save(
            &picture(i, width, height),
            &root.join(format!("{i:03}.png")),
        );
    }
    for i in 10..total {
        std::fs::copy(
            root.join(format!("{:03}.png", i % 10)),
            root.join(format!("{i:03}.png")),
        )
        .unwrap();
    }
}

/// Starts `command`, which writes `total` JSON Lines to `out`, and kills it (SIGKILL on
/// Unix) once `out` holds at least `at_least` lines; the kill must land mid-run.
pub(crate) fn kill_mid_run(
    command: &mut std::process::Command,
    out: &Path,
    at_least: usize,
    total: usize,
) {
    let mut child = command.stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = std::fs::read_to_string(out).map_or(0, |t| t.lines().count());
        if lines >= at_least || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = std::fs::read_to_string(out).unwrap().lines().count();
    assert!(
        (at_least..total).contains(&done_before),
        "the kill must land mid-run, {done_before} lines"
    );
}

/// path -> (label -> probability) from JSONL records with results.
fn probabilities(records: &[Value]) -> BTreeMap<String, BTreeMap<String, f64>> {
    records
        .iter()
        .filter(|r| r.get("results").is_some())
        .map(|r| {
            let probs = r["results"]
                .as_array()
                .unwrap()
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

fn assert_same_results(a: &[Value], b: &[Value], tolerance: f64) {
    let (a, b) = (probabilities(a), probabilities(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, probs) in &a {
        for (label, p) in probs {
            let q = b[path][label];
            assert!((p - q).abs() <= tolerance, "{path} {label}: {p} vs {q}");
        }
    }
}

/// The tree of the acceptance test: nested folders, a symlink loop, hidden files,
/// non-images, broken images, and one picture under two names.
pub(crate) fn messy_tree(root: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut good = BTreeSet::new();
    let mut broken = BTreeSet::new();
    let add = |rel: &str, seed: u32, set: &mut BTreeSet<String>| {
        let path = root.join(rel);
        save(&picture(seed, 60, 40), &path);
        set.insert(path.display().to_string());
    };
    add("a.png", 1, &mut good);
    add("nested/b.jpg", 2, &mut good);
    add("nested/deeper/c.png", 3, &mut good);
    add("nested/deeper/c-copy.png", 3, &mut good);
    add("nested/deeper/d.bmp", 4, &mut good);
    add(".hidden/e.png", 5, &mut BTreeSet::new());
    add(".f.png", 6, &mut BTreeSet::new());
    // A PNG without an extension is recognised by its content.
    let bare = root.join("nested/no-extension");
    std::fs::copy(root.join("a.png"), &bare).unwrap();
    good.insert(bare.display().to_string());
    std::fs::write(root.join("notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("nested/README"), "not an image either").unwrap();
    for (name, bytes) in [
        ("broken.jpg", b"this is text named .jpg".to_vec()),
        ("empty.png", Vec::new()),
    ] {
        std::fs::write(root.join(name), bytes).unwrap();
        broken.insert(root.join(name).display().to_string());
    }
    let png = std::fs::read(root.join("a.png")).unwrap();
    std::fs::write(root.join("nested/truncated.png"), &png[..png.len() / 2]).unwrap();
    broken.insert(root.join("nested/truncated.png").display().to_string());
    #[cfg(unix)]
    std::os::unix::fs::symlink(root, root.join("nested/deeper/loop")).unwrap();
    (good, broken)
}

#[test]
fn a_messy_tree_is_labelled_once_per_image_and_broken_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let (good, broken) = messy_tree(&root);
    let output = vlm()
        .args([
            "classify",
            "--format",
            "jsonl",
            "--labels",
            "cat,dog,car",
            "--model",
        ])
        .arg(model_dir("tiny-quickgelu"))
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "broken files make the exit status 1: {}",
        stderr(&output)
    );
    let records = jsonl(&String::from_utf8_lossy(&output.stdout));
    let labelled: Vec<String> = records
        .iter()
        .filter(|r| r.get("results").is_some())
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    let failed: BTreeSet<String> = records
        .iter()
        .filter(|r| r.get("error").is_some())
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labelled.len(), good.len(), "each image once: {labelled:?}");
    assert_eq!(labelled.iter().cloned().collect::<BTreeSet<_>>(), good);
    assert_eq!(failed, broken);
    let summary = stderr(&output);
    assert!(
        summary.contains(&format!("labelled {}, failed {}", good.len(), broken.len())),
        "{summary}"
    );
}

#[test]
fn a_killed_run_resumes_to_exactly_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("many");
    // Large enough that the run is still going when the kill lands; ten distinct pictures
    // copied under 300 names keep the setup cheap.
    many_pictures(&root, 300, 640, 480);
    let run = |out: &Path, resume: bool| {
        let mut command = vlm();
        command
            .args([
                "classify",
                "-q",
                "--labels",
                "cat,dog,car",
                "-b",
                "2",
                "-j",
                "1",
                "--output",
            ])
            .arg(out)
            .arg("--model")
            .arg(model_dir("tiny-quickgelu"))
            .arg(&root);
        if resume {
            command.arg("--resume");
        }
        command
    };

    let whole = dir.path().join("whole.jsonl");
    assert!(run(&whole, false).status().unwrap().success());
    let expected = jsonl(&std::fs::read_to_string(&whole).unwrap());
    assert_eq!(expected.len(), 300);

    let partial = dir.path().join("partial.jsonl");
    kill_mid_run(&mut run(&partial, false), &partial, 30, 300);

    assert!(run(&partial, true).status().unwrap().success());
    let resumed = jsonl(&std::fs::read_to_string(&partial).unwrap());
    let paths: Vec<&str> = resumed
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = paths.iter().copied().collect();
    assert_eq!(paths.len(), 300, "every image exactly once");
    assert_eq!(unique.len(), 300);
    assert_same_results(&resumed, &expected, 1e-5);
}

#[test]
fn a_relabel_run_reuses_cached_embeddings_and_matches_an_uncached_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for i in 0..12 {
        save(&picture(i, 90, 70), &root.join(format!("{i}.png")));
    }
    let cache = dir.path().join("cache");
    let run = |labels: &str, cached: bool| {
        let mut command = vlm();
        command
            .args([
                "classify",
                "-f",
                "jsonl",
                "--verbose",
                "-b",
                "5",
                "--labels",
                labels,
                "--model",
            ])
            .arg(model_dir("tiny-gelu-f16"))
            .arg(&root);
        if cached {
            command.arg(format!("--cache={}", cache.display()));
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (
            jsonl(&String::from_utf8(output.stdout.clone()).unwrap()),
            stderr(&output),
        )
    };

    let (_, first) = run("cat,dog", true);
    assert!(first.contains("image encoder ran on 12 images"), "{first}");
    let (cached, second) = run("car,tree,boat", true);
    assert!(
        second.contains("image encoder ran on 0 images (12 embeddings reused"),
        "{second}"
    );
    let (uncached, _) = run("car,tree,boat", false);
    assert_same_results(&cached, &uncached, 1e-6);
}

#[test]
fn template_ensembles_match_transformers() {
    for model in ["tiny-quickgelu", "tiny-gelu-f16"] {
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("reference/{model}.json"))).unwrap(),
        )
        .unwrap();
        let ensemble = &reference["ensemble"];
        let labels: Vec<&str> = reference["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let images: Vec<&Value> = reference["images"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "lossless" && i["file"] == i["compare_to"])
            .collect();
        let output = vlm()
            .args([
                "classify",
                "-f",
                "jsonl",
                "--templates",
                ensemble["templates"].as_str().unwrap(),
            ])
            .arg("--labels")
            .arg(labels.join(","))
            .arg("--model")
            .arg(model_dir(model))
            .args(
                images
                    .iter()
                    .map(|i| fixtures().join(i["file"].as_str().unwrap())),
            )
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let records = jsonl(&String::from_utf8(output.stdout).unwrap());
        let mut far_from_plain = false;
        for (record, image) in records.iter().zip(&images) {
            let index = reference["images"]
                .as_array()
                .unwrap()
                .iter()
                .position(|i| i == *image)
                .unwrap();
            let want = ensemble["probs"][index].as_array().unwrap();
            let plain = image["probs"].as_array().unwrap();
            for result in record["results"].as_array().unwrap() {
                let label = labels.iter().position(|l| *l == result["label"]).unwrap();
                let got = result["probability"].as_f64().unwrap();
                let want = want[label].as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 3e-3,
                    "{model} {}: {got} vs {want}",
                    image["file"]
                );
                far_from_plain |= (want - plain[label].as_f64().unwrap()).abs() > 0.02;
            }
        }
        assert!(
            far_from_plain,
            "{model}: the ensemble reference equals the single-template one"
        );
    }
}

#[test]
fn organize_sorts_copies_with_suffixes_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    // Same file name in two folders: the second must get a suffix, not overwrite.
    save(&picture(1, 50, 50), &root.join("x/img.png"));
    save(&picture(1, 50, 50), &root.join("y/img.png"));
    save(&picture(2, 50, 50), &root.join("z.png"));
    let dest = dir.path().join("sorted");
    let run = |extra: &[&str]| {
        let output = vlm()
            .args([
                "classify",
                "-f",
                "jsonl",
                "--labels",
                "cat,dog",
                "--organize",
                "copy",
                "--dest",
            ])
            .arg(&dest)
            .args(extra)
            .arg("--model")
            .arg(model_dir("tiny-quickgelu"))
            .arg(&root)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (
            jsonl(&String::from_utf8(output.stdout.clone()).unwrap()),
            stderr(&output),
        )
    };

    let (_, plan) = run(&["--dry-run"]);
    assert!(!dest.exists(), "--dry-run created {}", dest.display());
    assert_eq!(plan.matches("would copy").count(), 3, "{plan}");

    let (records, _) = run(&[]);
    let top = |path: &Path| -> String {
        records
            .iter()
            .find(|r| r["path"] == path.display().to_string())
            .map(|r| r["results"][0]["label"].as_str().unwrap().to_string())
            .unwrap()
    };
    let first = dest.join(top(&root.join("x/img.png"))).join("img.png");
    let second = dest.join(top(&root.join("y/img.png"))).join("img-1.png");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(root.join("x/img.png")).unwrap()
    );
    assert!(second.exists(), "the clash got no suffix");
    assert!(dest.join(top(&root.join("z.png"))).join("z.png").exists());
    assert!(root.join("x/img.png").exists(), "copy must keep the source");

    // A second run never overwrites what the first placed.
    run(&[]);
    assert!(first.with_file_name("img-2.png").exists());
}

#[test]
fn shards_partition_the_inputs_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    for i in 0..25 {
        save(&picture(i, 20, 20), &root.join(format!("{i}.png")));
    }
    let paths = |shard: Option<&str>| -> Vec<String> {
        let mut command = vlm();
        command
            .args(["classify", "-f", "jsonl", "--labels", "cat,dog", "--model"])
            .arg(model_dir("tiny-quickgelu"))
            .arg(&root);
        if let Some(shard) = shard {
            command.args(["--shard", shard]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        jsonl(&String::from_utf8(output.stdout).unwrap())
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    let all: BTreeSet<String> = paths(None).into_iter().collect();
    assert_eq!(all.len(), 25);
    let mut union = BTreeSet::new();
    for k in 1..=3 {
        for path in paths(Some(&format!("{k}/3"))) {
            assert!(union.insert(path.clone()), "{path} is in two shards");
        }
    }
    assert_eq!(union, all);
    let output = vlm()
        .args(["classify", "x.png", "-l", "a", "--shard", "4/3"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("K/N"), "{}", stderr(&output));
}
