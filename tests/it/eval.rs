//! `vlm eval` end to end on a generated domain and the tiny checkpoint. Every reported
//! number is checked against predictions taken from `vlm classify` on the same images and
//! measured here with the test's own arithmetic.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{self, stderr, vlm};
use serde_json::Value;

/// Sorted, as `vlm eval` orders classes by folder name.
const CLASSES: [&str; 4] = ["blue", "green", "red", "yellow"];
const PER_CLASS: usize = 6;
/// [`wide_domain`]'s classes, sorted.
const WIDE: [&str; 7] = ["blue", "green", "grey", "orange", "purple", "red", "yellow"];
/// A template under which the tiny random model's predictions vary on [`wide_domain`].
const TEMPLATE: &str = "itap of a {}.";

fn eval(dir: &Path, extra: &[&str]) -> Output {
    vlm()
        .arg("eval")
        .arg(dir)
        .arg("--model")
        .arg(common::tiny_model())
        .args(extra)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

fn domain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::draw_domain(dir.path(), CLASSES.len(), PER_CLASS, 3);
    dir
}

/// Seven classes, so that top-5 is not trivially 100%: the four colours, and three more
/// folders holding other pictures of red, green and blue shapes. The names are wrong for
/// those pictures, which only spreads the random model's mistakes; the test checks the
/// arithmetic, not the model.
fn wide_domain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::draw_domain(dir.path(), CLASSES.len(), PER_CLASS, 2);
    let more = tempfile::tempdir().unwrap();
    common::draw_domain(more.path(), 3, PER_CLASS, 3);
    for (from, to) in [("red", "purple"), ("green", "grey"), ("blue", "orange")] {
        std::fs::rename(more.path().join(from), dir.path().join(to)).unwrap();
    }
    dir
}

/// (true class, ranked classes) per image, from `vlm classify` with the same classes, in the
/// same order, and the same template; the true class is the image's folder.
fn classify(dir: &Path, classes: &[&str], template: &str) -> Vec<(usize, Vec<usize>)> {
    let output = vlm()
        .arg("classify")
        .arg(dir)
        .args(["--labels", &classes.join(","), "--template", template])
        .args(["--format", "jsonl", "-q"])
        .arg("--model")
        .arg(common::tiny_model())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let index = |name: &str| classes.iter().position(|c| *c == name).unwrap();
    stdout(&output)
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let path = PathBuf::from(record["path"].as_str().unwrap());
            let folder = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let ranked = record["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| index(r["label"].as_str().unwrap()))
                .collect();
            (index(folder), ranked)
        })
        .collect()
}

fn close(actual: &Value, expected: f64, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual} != {expected}"
    );
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// True if every tag is closed in order.
fn balanced(svg: &str) -> bool {
    let mut stack = Vec::new();
    for piece in svg.split('<').skip(1) {
        let Some((tag, _)) = piece.split_once('>') else {
            return false;
        };
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop() != Some(name.to_string()) {
                return false;
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    stack.is_empty()
}

#[test]
fn every_number_matches_an_independent_computation() {
    let dir = wide_domain();
    let files = tempfile::tempdir().unwrap();
    let csv_path = files.path().join("confusion.csv");
    let svg_path = files.path().join("confusion.svg");
    let output = eval(
        dir.path(),
        &[
            "--template",
            TEMPLATE,
            "--format",
            "json",
            "--most-confused",
            "100",
            "--confusion-csv",
            csv_path.to_str().unwrap(),
            "--heatmap",
            svg_path.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);

    let predictions = classify(dir.path(), &WIDE, TEMPLATE);
    let n = WIDE.len();
    let total = predictions.len();
    assert_eq!(total, n * PER_CLASS);
    let mut confusion = vec![vec![0usize; n]; n];
    for (truth, ranked) in &predictions {
        confusion[*truth][ranked[0]] += 1;
    }
    let correct: usize = (0..n).map(|c| confusion[c][c]).sum();
    let k = 5;
    let in_top_k = predictions
        .iter()
        .filter(|(truth, ranked)| ranked[..k].contains(truth))
        .count();

    // Guards the test's own strength: a domain where every answer is right, or top-5
    // trivially 100%, would check less.
    assert!(
        0 < correct && correct < total && in_top_k < total,
        "pick another seed or template: correct {correct}, top-5 {in_top_k} of {total}"
    );
    assert_eq!(report["classes"], serde_json::json!(WIDE));
    assert_eq!(report["images"], total);
    assert_eq!(report["failed"], serde_json::json!([]));
    assert_eq!(report["k"], k);
    assert_eq!(report["correct"], correct);
    assert_eq!(report["confusion"], serde_json::json!(confusion));
    close(&report["top1"], ratio(correct, total), "top-1");
    close(&report["top_k"], ratio(in_top_k, total), "top-k");

    let (mut sum_p, mut sum_r, mut sum_f, mut present) = (0.0, 0.0, 0.0, 0);
    for c in 0..n {
        let support: usize = confusion[c].iter().sum();
        let predicted: usize = (0..n).map(|t| confusion[t][c]).sum();
        let p = ratio(confusion[c][c], predicted);
        let r = ratio(confusion[c][c], support);
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        let row = &report["per_class"][c];
        assert_eq!(row["label"], WIDE[c]);
        assert_eq!(row["support"], support);
        assert_eq!(row["predicted"], predicted);
        close(&row["precision"], p, "precision");
        close(&row["recall"], r, "recall");
        close(&row["f1"], f, "f1");
        if support > 0 || predicted > 0 {
            present += 1;
            sum_p += p;
            sum_r += r;
            sum_f += f;
        }
    }
    assert_eq!(report["macro"]["classes"], present);
    close(
        &report["macro"]["precision"],
        sum_p / present as f64,
        "macro P",
    );
    close(
        &report["macro"]["recall"],
        sum_r / present as f64,
        "macro R",
    );
    close(&report["macro"]["f1"], sum_f / present as f64, "macro F1");

    // Every off-diagonal cell, largest count first, then the larger share of its row.
    let mut pairs = Vec::new();
    for (t, row) in confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            if p != t && count > 0 {
                pairs.push((t, p, count, ratio(count, row.iter().sum())));
            }
        }
    }
    pairs.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then(b.3.total_cmp(&a.3))
            .then((a.0, a.1).cmp(&(b.0, b.1)))
    });
    let listed = report["most_confused"].as_array().unwrap();
    assert_eq!(listed.len(), pairs.len());
    for (entry, (t, p, count, share)) in listed.iter().zip(&pairs) {
        assert_eq!(entry["true"], WIDE[*t]);
        assert_eq!(entry["predicted"], WIDE[*p]);
        assert_eq!(entry["count"], *count);
        close(&entry["share"], *share, "share");
    }

    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), n + 1);
    assert_eq!(lines[0], format!("true\\predicted,{}", WIDE.join(",")));
    for (t, line) in lines[1..].iter().enumerate() {
        let counts: Vec<String> = confusion[t].iter().map(usize::to_string).collect();
        assert_eq!(*line, format!("{},{}", WIDE[t], counts.join(",")));
    }

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert!(balanced(&svg), "{svg}");
    assert_eq!(svg.matches(r#"class="cell""#).count(), n * n);
    for class in WIDE {
        assert!(svg.contains(&format!(">{class}</text>")), "{class} missing");
    }
}

#[test]
fn table_shows_accuracy_classes_matrix_and_confusions() {
    let dir = domain();
    let output = eval(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let report = json(&eval(dir.path(), &["--format", "json"]));
    let top1 = report["top1"].as_f64().unwrap() * 100.0;
    let top1_line = text
        .lines()
        .find(|l| l.starts_with("top-1 accuracy"))
        .unwrap();
    assert!(
        top1_line.ends_with(&format!(" {top1:.2}%  ({} of 24)", report["correct"])),
        "{text}"
    );
    assert!(text.contains("top-4 accuracy"), "{text}");
    assert!(
        text.contains("true \\ predicted  blue  green  red  yellow"),
        "{text}"
    );
    let matrix: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("true \\ predicted"))
        .skip(1)
        .take(CLASSES.len())
        .collect();
    for (row, class) in CLASSES.iter().enumerate() {
        let counts: Vec<String> = report["confusion"][row]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let cells: Vec<&str> = matrix[row].split_whitespace().collect();
        assert_eq!(cells[0], *class, "{text}");
        assert_eq!(cells[1..], counts, "{text}");
    }
    if let Some(first) = report["most_confused"].as_array().unwrap().first() {
        let share = first["share"].as_f64().unwrap() * 100.0;
        let expected = format!(
            "true {} → predicted {}: {} ({share:.0}% of {})",
            first["true"].as_str().unwrap(),
            first["predicted"].as_str().unwrap(),
            first["count"],
            first["true"].as_str().unwrap()
        );
        assert!(text.contains(&expected), "{expected} not in {text}");
    }
    assert!(stderr(&output).contains("vlm: evaluated 24, failed 0"));
}

#[test]
fn compared_templates_share_one_pass_over_the_images() {
    let dir = domain();
    let plain = json(&eval(dir.path(), &["--format", "json"]));
    let output = eval(
        dir.path(),
        &[
            "--compare-templates",
            "a photo of a {}.,imagenet7",
            "--format",
            "json",
            "--verbose",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // The 24 images went through the image encoder once, not once per spec.
    assert!(
        stderr(&output).contains("image encoder ran on 24 images"),
        "{}",
        stderr(&output)
    );
    let compared = json(&output);
    let results = compared["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let default = results
        .iter()
        .find(|r| r["spec"] == "a photo of a {}.")
        .unwrap();
    assert_eq!(default["top1"], plain["top1"]);
    assert_eq!(default["macro_f1"], plain["macro"]["f1"]);
    assert_eq!(default["templates"], 1);
    let ensemble = results.iter().find(|r| r["spec"] == "imagenet7").unwrap();
    assert_eq!(ensemble["templates"], 7);
    let top1 = |r: &Value| r["top1"].as_f64().unwrap();
    assert!(top1(&results[0]) >= top1(&results[1]));
    assert_eq!(compared["best"], results[0]["spec"]);

    // The same in a table, one row per spec, and repeating the flag adds specs.
    let table = eval(
        dir.path(),
        &[
            "--compare-templates",
            "a photo of a {}.",
            "--compare-templates",
            r"{},a {}\, drawn.",
        ],
    );
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.contains("3 prompt specs"), "{text}");
    assert!(text.contains("a {}, drawn."), "{text}");
    let best = text.lines().find(|l| l.starts_with("best: ")).unwrap();
    let row = text.lines().nth(3).unwrap();
    assert!(
        best.contains(row.split("  ").next().unwrap().trim()),
        "{text}"
    );
}

#[test]
fn a_mapping_file_renames_the_classes() {
    let dir = domain();
    let files = tempfile::tempdir().unwrap();
    let map = files.path().join("labels.tsv");
    std::fs::write(&map, "# folder → label\nred\tcrimson\nblue=navy blue\n").unwrap();
    let output = eval(
        dir.path(),
        &["--labels-file", map.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(
        report["classes"],
        serde_json::json!(["navy blue", "green", "crimson", "yellow"])
    );
    assert_eq!(report["per_class"][2]["label"], "crimson");
    for class in 0..4 {
        assert_eq!(report["per_class"][class]["support"], PER_CLASS);
    }
}

#[test]
fn a_broken_image_is_reported_and_left_out() {
    let dir = domain();
    let broken = dir.path().join("red").join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let output = eval(dir.path(), &["--format", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("broken.png"),
        "{}",
        stderr(&output)
    );
    let report = json(&output);
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["path"].as_str().unwrap().ends_with("broken.png"));
    assert!(!failed[0]["error"].as_str().unwrap().is_empty());
    assert_eq!(report["images"], CLASSES.len() * PER_CLASS);
    assert_eq!(report["per_class"][2]["support"], PER_CLASS);
    let rows: u64 = report["confusion"][2]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(rows, PER_CLASS as u64);
}

#[test]
fn bad_specs_and_folders_fail_before_any_work() {
    let dir = domain();
    let output = eval(dir.path(), &["--compare-templates", "a photo of a cat"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("\"a photo of a cat\" has no {} placeholder"),
        "{}",
        stderr(&output)
    );
    let output = eval(dir.path(), &["--compare-templates", "{},,imagenet7"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("empty prompt spec"));
    let empty = tempfile::tempdir().unwrap();
    let output = eval(empty.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no subfolders"),
        "{}",
        stderr(&output)
    );
    let output = eval(dir.path(), &["--files-from", "-"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--files-from does not apply"));
}
