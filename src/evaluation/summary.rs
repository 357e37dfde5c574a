//! Evaluation results as text for people (tables), JSON for scripts, and the confusion
//! matrix as CSV.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::{heatmap, sort_best_first, EvalError, SpecResult};
use crate::evaluation::metrics::{self, ConfusionMatrix};
use crate::output::csv_field;

/// How the results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Aligned text for reading.
    Table,
    /// One JSON object (or array) with every metric.
    Json,
}

/// The report of one spec, or with `compare` the comparison of every spec, best first
/// (sorting `results`).
pub fn render(
    results: &mut [SpecResult],
    failed: &[Failure],
    compare: bool,
    style: Style,
    most_confused: usize,
) -> serde_json::Result<String> {
    if compare {
        sort_best_first(results);
        return Ok(match style {
            Style::Table => comparison_table(results, failed.len()),
            Style::Json => comparison_json(results, failed)?,
        });
    }
    let result = &results[0];
    Ok(match style {
        Style::Table => table(result, failed.len(), most_confused),
        Style::Json => json(result, failed, most_confused)?,
    })
}

/// `--models`: one row per checkpoint, best first (sorting `rows`).
pub fn render_models(rows: &mut [ModelRow], style: Style) -> serde_json::Result<String> {
    sort_models_best_first(rows);
    Ok(match style {
        Style::Table => models_table(rows),
        Style::Json => models_json(rows)?,
    })
}

/// Writes the confusion matrix of `result` as CSV and its heat map as SVG, where asked.
pub fn write_files(
    result: &SpecResult,
    confusion: Option<&Path>,
    heat_map: Option<&Path>,
) -> Result<(), EvalError> {
    let names = class_names(result);
    let e = &result.evaluation;
    if let Some(path) = confusion {
        std::fs::write(path, confusion_csv(&names, &e.confusion)).map_err(|cause| {
            EvalError::WriteFile {
                what: "the confusion matrix",
                path: path.to_path_buf(),
                flag: "--confusion-csv",
                cause,
            }
        })?;
    }
    if let Some(path) = heat_map {
        let title = format!(
            "{} — top-1 {:.1}% on {} images",
            result.spec.describe(),
            e.top1 * 100.0,
            e.images()
        );
        std::fs::write(path, heatmap::render(&names, &e.confusion, &title)).map_err(|cause| {
            EvalError::WriteFile {
                what: "the heat map",
                path: path.to_path_buf(),
                flag: "--heatmap",
                cause,
            }
        })?;
    }
    Ok(())
}

/// Above this many classes the terminal table leaves out the confusion matrix (it cannot
/// be read at that width) and points to the CSV and heat map instead.
pub const MAX_TABLE_CLASSES: usize = 30;
/// Class names are cut to this many characters in table rows.
const ROW_NAME_CHARS: usize = 30;
/// Column headers of the confusion matrix are cut to this many characters.
const COLUMN_NAME_CHARS: usize = 12;

/// An image that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

/// The class names of a result, in class order.
pub fn class_names(result: &SpecResult) -> Vec<String> {
    result
        .prompts
        .classes
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Says how many images were left out, if any.
fn failed_note(failed: usize) -> String {
    match failed {
        0 => String::new(),
        1 => " (1 image failed and was left out)".to_string(),
        n => format!(" ({n} images failed and were left out)"),
    }
}

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// The full report for one prompt spec: accuracies, per-class scores, the confusion
/// matrix (up to [`MAX_TABLE_CLASSES`] classes) and the `most_confused` largest confusions.
pub fn table(result: &SpecResult, failed: usize, most_confused: usize) -> String {
    let e = &result.evaluation;
    let names = class_names(result);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{} images, {} classes, prompts: {}{}",
        e.images(),
        names.len(),
        result.spec.describe(),
        failed_note(failed)
    );
    let _ = writeln!(out);
    let top1 = percent(e.top1);
    let top_k = percent(e.top_k);
    let pad = width(&top1).max(width(&top_k));
    let _ = writeln!(
        out,
        "top-1 accuracy  {top1:>pad$}  ({} of {})",
        e.confusion.correct(),
        e.images()
    );
    let _ = writeln!(out, "top-{} accuracy  {top_k:>pad$}", e.k);
    let _ = writeln!(out);

    let rows: Vec<String> = names.iter().map(|n| shorten(n, ROW_NAME_CHARS)).collect();
    let name_width = rows
        .iter()
        .map(|n| width(n))
        .chain([width("macro avg"), width("class")])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "{:<name_width$}  precision  recall      f1  support",
        "class"
    );
    for (name, c) in rows.iter().zip(&e.classes) {
        let _ = writeln!(
            out,
            "{name:<name_width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
            c.precision, c.recall, c.f1, c.support
        );
    }
    let m = &e.macro_average;
    let _ = writeln!(
        out,
        "{:<name_width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
        "macro avg",
        m.precision,
        m.recall,
        m.f1,
        e.images()
    );
    let _ = writeln!(out);

    if names.len() <= MAX_TABLE_CLASSES {
        matrix_table(&mut out, &rows, &names, &e.confusion);
    } else {
        let _ = writeln!(
            out,
            "confusion matrix: {} classes are too many to print; write it with --confusion-csv FILE or --heatmap FILE.svg",
            names.len()
        );
    }

    let pairs = metrics::most_confused(&e.confusion, most_confused);
    if most_confused > 0 {
        let _ = writeln!(out);
        if pairs.is_empty() {
            let _ = writeln!(out, "most confused: none, every image was predicted right");
        } else {
            let _ = writeln!(out, "most confused (true → predicted)");
            for p in pairs {
                let _ = writeln!(
                    out,
                    "  true {} → predicted {}: {} ({:.0}% of {})",
                    names[p.truth],
                    names[p.predicted],
                    p.count,
                    p.share * 100.0,
                    names[p.truth]
                );
            }
        }
    }
    out
}

fn matrix_table(out: &mut String, rows: &[String], names: &[String], matrix: &ConfusionMatrix) {
    let corner = "true \\ predicted";
    let name_width = rows
        .iter()
        .map(|n| width(n))
        .chain([width(corner)])
        .max()
        .unwrap_or(0);
    let headers: Vec<String> = names
        .iter()
        .map(|n| shorten(n, COLUMN_NAME_CHARS))
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(p, h)| {
            let digits = (0..names.len())
                .map(|t| matrix.count(t, p).to_string().len())
                .max()
                .unwrap_or(1);
            width(h).max(digits)
        })
        .collect();
    let _ = writeln!(
        out,
        "confusion matrix (rows: true class, columns: predicted)"
    );
    let _ = write!(out, "{corner:<name_width$}");
    for (h, w) in headers.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    let _ = writeln!(out);
    for (t, name) in rows.iter().enumerate() {
        let _ = write!(out, "{name:<name_width$}");
        for (p, w) in widths.iter().enumerate() {
            let _ = write!(out, "  {:>w$}", matrix.count(t, p));
        }
        let _ = writeln!(out);
    }
}

#[derive(Serialize)]
struct JsonClass<'a> {
    label: &'a str,
    precision: f64,
    recall: f64,
    f1: f64,
    support: u64,
    predicted: u64,
}

#[derive(Serialize)]
struct JsonPair<'a> {
    #[serde(rename = "true")]
    truth: &'a str,
    predicted: &'a str,
    count: u64,
    share: f64,
}

#[derive(Serialize)]
struct JsonMacro {
    precision: f64,
    recall: f64,
    f1: f64,
    classes: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    spec: &'a str,
    templates: usize,
    classes: &'a [String],
    images: u64,
    failed: &'a [Failure],
    k: usize,
    top1: f64,
    top_k: f64,
    correct: u64,
    #[serde(rename = "macro")]
    macro_average: JsonMacro,
    per_class: Vec<JsonClass<'a>>,
    /// Rows are true classes, columns predictions, both in `classes` order.
    confusion: Vec<Vec<u64>>,
    most_confused: Vec<JsonPair<'a>>,
}

/// The full report for one prompt spec as one JSON object on one line (the README lists
/// its keys).
pub fn json(
    result: &SpecResult,
    failed: &[Failure],
    most_confused: usize,
) -> serde_json::Result<String> {
    let e = &result.evaluation;
    let names = class_names(result);
    let m = &e.macro_average;
    let report = JsonReport {
        spec: &result.spec.name,
        templates: result.spec.templates.as_slice().len(),
        classes: &names,
        images: e.images(),
        failed,
        k: e.k,
        top1: e.top1,
        top_k: e.top_k,
        correct: e.confusion.correct(),
        macro_average: JsonMacro {
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            classes: m.classes,
        },
        per_class: names
            .iter()
            .zip(&e.classes)
            .map(|(label, c)| JsonClass {
                label,
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
                support: c.support,
                predicted: c.predicted,
            })
            .collect(),
        confusion: e.confusion.rows(),
        most_confused: metrics::most_confused(&e.confusion, most_confused)
            .iter()
            .map(|p| JsonPair {
                truth: &names[p.truth],
                predicted: &names[p.predicted],
                count: p.count,
                share: p.share,
            })
            .collect(),
    };
    let mut text = serde_json::to_string(&report)?;
    text.push('\n');
    Ok(text)
}

/// The prompt specs side by side, best first (as [`super::sort_best_first`] leaves them).
pub fn comparison_table(results: &[SpecResult], failed: usize) -> String {
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    let e = &first.evaluation;
    let _ = writeln!(
        out,
        "{} images, {} classes, {} prompt specs{}",
        e.images(),
        e.classes.len(),
        results.len(),
        failed_note(failed)
    );
    let _ = writeln!(out);
    let specs: Vec<String> = results.iter().map(|r| r.spec.describe()).collect();
    let top_k = format!("top-{}", e.k);
    let spec_width = specs
        .iter()
        .map(|s| width(s))
        .chain([width("prompts")])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "{:<spec_width$}    top-1  {top_k:>7}  macro-F1",
        "prompts"
    );
    for (spec, r) in specs.iter().zip(results) {
        let e = &r.evaluation;
        let _ = writeln!(
            out,
            "{spec:<spec_width$}  {:>7}  {:>7}  {:>8.4}",
            percent(e.top1),
            percent(e.top_k),
            e.macro_average.f1
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "best: {} (top-1 {})",
        specs[0],
        percent(first.evaluation.top1)
    );
    out
}

#[derive(Serialize)]
struct JsonSpec<'a> {
    spec: &'a str,
    templates: usize,
    top1: f64,
    top_k: f64,
    macro_f1: f64,
    correct: u64,
}

#[derive(Serialize)]
struct JsonComparison<'a> {
    classes: Vec<String>,
    images: u64,
    failed: &'a [Failure],
    k: usize,
    /// Best first.
    results: Vec<JsonSpec<'a>>,
    best: &'a str,
}

/// The comparison as one JSON object on one line: `results` best first, and the `best`
/// spec.
pub fn comparison_json(results: &[SpecResult], failed: &[Failure]) -> serde_json::Result<String> {
    let first = results.first();
    let report = JsonComparison {
        classes: first.map(class_names).unwrap_or_default(),
        images: first.map_or(0, |r| r.evaluation.images()),
        failed,
        k: first.map_or(0, |r| r.evaluation.k),
        results: results
            .iter()
            .map(|r| JsonSpec {
                spec: &r.spec.name,
                templates: r.spec.templates.as_slice().len(),
                top1: r.evaluation.top1,
                top_k: r.evaluation.top_k,
                macro_f1: r.evaluation.macro_average.f1,
                correct: r.evaluation.confusion.correct(),
            })
            .collect(),
        best: first.map_or("", |r| r.spec.name.as_str()),
    };
    let mut text = serde_json::to_string(&report)?;
    text.push('\n');
    Ok(text)
}

/// The confusion matrix as CSV: a header `true\predicted,<class>...`, then one row per
/// true class, its name first.
pub fn confusion_csv(names: &[String], matrix: &ConfusionMatrix) -> String {
    let mut out = String::from("true\\predicted");
    for name in names {
        out.push(',');
        out.push_str(&csv_field(name));
    }
    out.push('\n');
    for (t, row) in matrix.rows().iter().enumerate() {
        out.push_str(&csv_field(names.get(t).map_or("", String::as_str)));
        for count in row {
            let _ = write!(out, ",{count}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::metrics::Evaluation;
    use crate::labels::PromptSet;
    use crate::labels::PromptSpec;

    fn result(spec: &str, truth: &[usize], rankings: &[Vec<usize>]) -> SpecResult {
        let labels = ["cat", "dog", "hot, dog"].map(String::from);
        let spec = PromptSpec::parse(spec).unwrap();
        SpecResult {
            prompts: PromptSet::new(&labels, &spec.templates).unwrap(),
            spec,
            truncated: vec![false; 3],
            evaluation: Evaluation::new(3, truth, rankings).unwrap(),
        }
    }

    fn sample() -> SpecResult {
        // cat: 2 right, 1 as dog; dog: 1 right; hot dog: 1 as dog.
        result(
            "a photo of a {}.",
            &[0, 0, 0, 1, 2],
            &[
                vec![0, 1, 2],
                vec![0, 2, 1],
                vec![1, 0, 2],
                vec![1, 2, 0],
                vec![1, 2, 0],
            ],
        )
    }

    #[test]
    fn table_shows_every_part() {
        let text = table(&sample(), 1, 5);
        assert!(text.starts_with(
            "5 images, 3 classes, prompts: a photo of a {}. (1 image failed and was left out)\n"
        ));
        assert!(text.contains("top-1 accuracy   60.00%  (3 of 5)"), "{text}");
        assert!(text.contains("top-3 accuracy  100.00%"), "{text}");
        assert!(
            text.contains("cat           1.0000  0.6667  0.8000        3"),
            "{text}"
        );
        assert!(
            text.contains("true \\ predicted  cat  dog  hot, dog"),
            "{text}"
        );
        assert!(
            text.contains("hot, dog            0    1         0"),
            "{text}"
        );
        assert!(
            text.contains("  true cat → predicted dog: 1 (33% of cat)"),
            "{text}"
        );
        assert!(text.contains("  true hot, dog → predicted dog: 1 (100% of hot, dog)"));
    }

    #[test]
    fn json_holds_all_metrics() {
        let failed = [Failure {
            path: "x.png".into(),
            error: "cannot decode".into(),
        }];
        let text = json(&sample(), &failed, 10).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["classes"], serde_json::json!(["cat", "dog", "hot, dog"]));
        assert_eq!(v["images"], 5);
        assert_eq!(v["correct"], 3);
        assert_eq!(v["k"], 3);
        assert_eq!(v["top1"], 0.6);
        assert_eq!(
            v["confusion"],
            serde_json::json!([[2, 1, 0], [0, 1, 0], [0, 1, 0]])
        );
        assert_eq!(v["per_class"][1]["precision"], 1.0 / 3.0);
        assert_eq!(v["per_class"][1]["predicted"], 3);
        assert_eq!(v["most_confused"][0]["true"], "hot, dog");
        assert_eq!(v["most_confused"].as_array().unwrap().len(), 2);
        assert_eq!(v["failed"][0]["path"], "x.png");
        assert_eq!(v["macro"]["classes"], 3);
    }

    #[test]
    fn comparison_is_printed_best_first() {
        let worse = result("{}", &[0, 1], &[vec![1, 0, 2], vec![1, 0, 2]]);
        let mut results = vec![worse, sample()];
        crate::evaluation::sort_best_first(&mut results);
        assert_eq!(results[0].spec.name, "a photo of a {}.");
        let text = comparison_table(&results, 0);
        assert!(
            text.contains("best: a photo of a {}. (top-1 60.00%)"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[3].starts_with("a photo of a {}.   60.00%  100.00%"),
            "{text}"
        );
        assert!(lines[4].starts_with("{}                 50.00%"), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(&comparison_json(&results, &[]).unwrap()).unwrap();
        assert_eq!(v["best"], "a photo of a {}.");
        assert_eq!(v["results"][1]["top1"], 0.5);
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_class() {
        let r = sample();
        let csv = confusion_csv(&class_names(&r), &r.evaluation.confusion);
        assert_eq!(
            csv,
            "true\\predicted,cat,dog,\"hot, dog\"\ncat,2,1,0\ndog,0,1,0\n\"hot, dog\",0,1,0\n"
        );
    }
}

/// One checkpoint's result in `vlm eval --models`.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// The `--models` entry as given.
    pub model: String,
    /// [`crate::family::Family::name`].
    pub family: &'static str,
    /// [`crate::family::Scoring::name`].
    pub scoring: &'static str,
    pub evaluation: metrics::Evaluation,
    /// Images embedded per second, decoding included.
    pub images_per_second: f64,
    /// Size of the weights file.
    pub weights_bytes: u64,
    /// Images that could not be evaluated with this model.
    pub failed: usize,
}

/// Best first: top-1, then top-k, then macro-F1; ties keep the order given.
pub fn sort_models_best_first(rows: &mut [ModelRow]) {
    rows.sort_by(|a, b| {
        let (a, b) = (&a.evaluation, &b.evaluation);
        b.top1
            .total_cmp(&a.top1)
            .then(b.top_k.total_cmp(&a.top_k))
            .then(b.macro_average.f1.total_cmp(&a.macro_average.f1))
    });
}

/// "605 MB", "3.9 GB".
fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb >= 1000.0 {
        format!("{:.1} GB", mb / 1000.0)
    } else if mb >= 10.0 {
        format!("{mb:.0} MB")
    } else {
        format!("{mb:.1} MB")
    }
}

/// The models side by side, as [`sort_models_best_first`] leaves them.
pub fn models_table(rows: &[ModelRow]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return out;
    };
    let e = &first.evaluation;
    let _ = writeln!(
        out,
        "{} images, {} classes, {} models",
        e.images(),
        e.classes.len(),
        rows.len()
    );
    let _ = writeln!(out);
    let top_k = format!("top-{}", e.k);
    let model_width = rows
        .iter()
        .map(|r| width(&r.model))
        .chain([width("model")])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "{:<model_width$}  {:<10}  {:<7}    top-1  {top_k:>7}  macro-F1  images/s   weights",
        "model", "family", "scoring"
    );
    for r in rows {
        let e = &r.evaluation;
        let _ = writeln!(
            out,
            "{:<model_width$}  {:<10}  {:<7}  {:>7}  {:>7}  {:>8.4}  {:>8.1}  {:>8}{}",
            r.model,
            r.family,
            r.scoring,
            percent(e.top1),
            percent(e.top_k),
            e.macro_average.f1,
            r.images_per_second,
            megabytes(r.weights_bytes),
            failed_note(r.failed)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "best: {} (top-1 {})",
        first.model,
        percent(first.evaluation.top1)
    );
    out
}

#[derive(Serialize)]
struct JsonModelRow<'a> {
    model: &'a str,
    family: &'a str,
    scoring: &'a str,
    images: u64,
    failed: usize,
    k: usize,
    top1: f64,
    top_k: f64,
    macro_f1: f64,
    images_per_second: f64,
    weights_bytes: u64,
}

/// The models as a JSON array, best first.
pub fn models_json(rows: &[ModelRow]) -> serde_json::Result<String> {
    let rows: Vec<JsonModelRow> = rows
        .iter()
        .map(|r| JsonModelRow {
            model: &r.model,
            family: r.family,
            scoring: r.scoring,
            images: r.evaluation.images(),
            failed: r.failed,
            k: r.evaluation.k,
            top1: r.evaluation.top1,
            top_k: r.evaluation.top_k,
            macro_f1: r.evaluation.macro_average.f1,
            images_per_second: r.images_per_second,
            weights_bytes: r.weights_bytes,
        })
        .collect();
    let mut text = serde_json::to_string(&rows)?;
    text.push('\n');
    Ok(text)
}
