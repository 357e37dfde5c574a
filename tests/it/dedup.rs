//! `vlm dedup` on the near-duplicate set of `common::near_duplicates`.

use std::path::PathBuf;

use crate::common::near_duplicates::write_set;

/// Writes the set to $VLM_NEAR_DUP_DIR with a `truth.tsv` (path, group, kind), to measure
/// a model's similarities on it (docs/photos.md says how the default threshold was chosen).
#[test]
#[ignore]
fn write_the_near_duplicate_set() {
    let dir = PathBuf::from(std::env::var("VLM_NEAR_DUP_DIR").expect("set VLM_NEAR_DUP_DIR"));
    let scenes: usize = std::env::var("VLM_NEAR_DUP_SCENES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let samples = write_set(&dir, scenes, 2026);
    let truth: String = samples
        .iter()
        .map(|s| format!("{}\t{}\t{}\n", s.path.display(), s.group, s.kind))
        .collect();
    std::fs::write(dir.join("truth.tsv"), truth).unwrap();
}

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{self, vlm};

/// The checkpoint whose embedding is a picture's colour layout (make_dedup_fixture.py): the
/// random-weight fixtures put every picture in one direction, so dedup measured on them
/// would mean nothing.
fn thumbnail_model() -> PathBuf {
    common::fixtures().join("models/thumbnail")
}

/// `vlm dedup` with `args`, its groups parsed from JSON Lines.
fn dedup(args: &[&str]) -> (Vec<Value>, String) {
    let output = vlm()
        .arg("dedup")
        .args(args)
        .arg("-f")
        .arg("jsonl")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", common::stderr(&output));
    let groups = String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (groups, common::stderr(&output))
}

/// Pairwise precision and recall of `groups` against the set's truth: a pair of files is
/// found when they share a group, right when they are copies of one picture.
fn precision_recall(groups: &[Value], truth: &BTreeMap<String, usize>) -> (f64, f64, usize) {
    let mut found = BTreeMap::new();
    for g in groups {
        for m in g["members"].as_array().unwrap() {
            found.insert(
                m["path"].as_str().unwrap().to_string(),
                g["group"].as_u64().unwrap(),
            );
        }
    }
    let paths: Vec<&String> = truth.keys().collect();
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let same = truth[*a] == truth[*b];
            let grouped = matches!((found.get(*a), found.get(*b)), (Some(x), Some(y)) if x == y);
            match (same, grouped) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    (precision, recall, tp + fn_)
}

#[test]
fn near_duplicates_are_found_at_the_default_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let samples = write_set(dir.path(), 60, 7);
    let truth: BTreeMap<String, usize> = samples
        .iter()
        .map(|s| (s.path.display().to_string(), s.group))
        .collect();
    let folder = dir.path().to_str().unwrap();
    let model = thumbnail_model();
    let (groups, _) = dedup(&[folder, "--model", model.to_str().unwrap(), "-q"]);
    let (precision, recall, pairs) = precision_recall(&groups, &truth);
    eprintln!(
        "near-duplicate set: {} files, {pairs} copy pairs; at the default threshold {}: precision {precision:.3}, recall {recall:.3}",
        truth.len(),
        vlm::dedup::DEFAULT_THRESHOLD
    );
    assert!(pairs > 50, "the set has too few copies: {pairs}");
    assert!(
        precision >= 0.98 && recall >= 0.98,
        "precision {precision}, recall {recall}"
    );
    for g in &groups {
        let members = g["members"].as_array().unwrap();
        assert_eq!(members[0]["similarity"], 1.0);
        let paths: Vec<&str> = members
            .iter()
            .map(|m| m["path"].as_str().unwrap())
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "members in input order");
    }
    // The same set through a random-weight checkpoint: the test above could not tell.
    let (groups, _) = dedup(&[
        folder,
        "--model",
        common::tiny_model().to_str().unwrap(),
        "-q",
    ]);
    let (precision, _, _) = precision_recall(&groups, &truth);
    assert!(
        precision < 0.5,
        "random weights found the copies: {precision}"
    );
}

#[test]
fn the_thumbnail_checkpoint_embeds_as_transformers_does() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("reference/thumbnail.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for image in reference["images"].as_array().unwrap() {
        let file = common::fixtures().join(image["file"].as_str().unwrap());
        let out = dir.path().join("e.jsonl");
        let status = vlm()
            .arg("embed")
            .arg(&file)
            .arg("--model")
            .arg(thumbnail_model())
            .arg("-o")
            .arg(&out)
            .arg("-q")
            .status()
            .unwrap();
        assert!(status.success());
        let line: Value = serde_json::from_str(
            std::fs::read_to_string(&out)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let got: Vec<f64> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = image["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len());
        // vlm writes unit embeddings; transformers' are raw projections.
        let unit = |v: &[f64]| {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / norm).collect::<Vec<f64>>()
        };
        let (got, want) = (unit(&got), unit(&want));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "{}: off by {worst}", file.display());
    }
}

#[test]
fn groups_go_to_a_table_a_review_page_and_linked_folders() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let samples = write_set(&set, 8, 3);
    let before: Vec<Vec<u8>> = samples
        .iter()
        .map(|s| std::fs::read(&s.path).unwrap())
        .collect();
    let model = thumbnail_model();
    let cache = dir.path().join("cache");
    let page = dir.path().join("dups.html");
    let dest = dir.path().join("groups");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = vec![
            set.display().to_string(),
            "--model".into(),
            model.display().to_string(),
            format!("--cache={}", cache.display()),
        ];
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let run = |extra: &[&str]| {
        let output = vlm().arg("dedup").args(args(extra)).output().unwrap();
        assert!(output.status.success(), "{}", common::stderr(&output));
        output
    };
    // A dry run of the folders plans links and makes none.
    let output = run(&[
        "--organize",
        "link",
        "--dest",
        dest.to_str().unwrap(),
        "--dry-run",
        "-f",
        "jsonl",
    ]);
    let groups: Vec<Value> = String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!groups.is_empty());
    assert!(common::stderr(&output).contains("would link"));
    assert!(!dest.exists());
    // The table, the page and the links, with the embeddings from the cache.
    let output = run(&[
        "--report",
        page.to_str().unwrap(),
        "--organize",
        "link",
        "--dest",
        dest.to_str().unwrap(),
        "-v",
    ]);
    let table = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(table.starts_with("group 1  ("), "{table}");
    assert!(table.contains("  1.0000  "), "{table}");
    let stderr = common::stderr(&output);
    assert!(
        stderr.contains(&format!(
            "({} embeddings reused from the cache)",
            samples.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("by exact all-pairs"), "{stderr}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("\"kind\":\"duplicates\""));
    let members: usize = groups
        .iter()
        .map(|g| g["members"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        std::fs::read_dir(dir.path().join("dups_files/t"))
            .unwrap()
            .count(),
        members
    );
    for (n, g) in groups.iter().enumerate() {
        let folder = dest.join(format!("group-{:04}", n + 1));
        for m in g["members"].as_array().unwrap() {
            let path = Path::new(m["path"].as_str().unwrap());
            let link = folder.join(path.file_name().unwrap());
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                std::fs::canonicalize(path).unwrap()
            );
        }
    }
    let after: Vec<Vec<u8>> = samples
        .iter()
        .map(|s| std::fs::read(&s.path).unwrap())
        .collect();
    assert_eq!(before, after, "an image was changed");
    assert_eq!(
        std::fs::read_dir(&set).unwrap().count(),
        samples.len(),
        "a file was added or removed"
    );
}

/// With --in no image is read, so the flags that choose which to read would be silently
/// ignored: they are refused before anything connects.
#[test]
fn input_filters_are_refused_with_in() {
    let list = tempfile::tempdir().unwrap();
    let files = list.path().join("files.txt");
    std::fs::write(&files, "a.jpg\n").unwrap();
    let files = files.to_str().unwrap();
    for extra in [
        &["--files-from", files][..],
        &["--ext", "jpg"],
        &["--exclude", "*.png"],
        &["--shard", "1/2"],
        &["--max-depth", "1"],
    ] {
        let output = vlm()
            .args(["dedup", "--in", "postgresql://nobody@127.0.0.1:1/none"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = common::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("cannot be used with"),
            "{extra:?}: {stderr}"
        );
    }
}
