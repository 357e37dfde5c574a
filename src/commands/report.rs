//! `vlm report`: a review page for a results file, or for images classified first; and the
//! page of `vlm eval --report`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use super::{Printer, EXIT_INTERRUPTED, EXIT_OK};
use crate::cli::{FormatArg, ReportArgs};
use vlm::dataset::Dataset;
use vlm::embedder::Embedded;
use vlm::evaluation::summary::Failure;
use vlm::evaluation::SpecResult;
use vlm::review::{self, EvalClass, EvalImage, EvalMeta, ReportOptions, ReportSummary};
use vlm::Checkpoint;

/// Images ranked per call when scoring an eval page (bounds the similarity matrix).
const RANK_CHUNK: usize = 1024;

pub fn run(mut args: ReportArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let Some(output) = args.classify.output.clone() else {
        bail!("give --output FILE.html: where to write the page");
    };
    let printer = Printer::new(args.classify.quiet, args.classify.verbose);
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "cannot create {} for the page; choose another --output",
                parent.display()
            )
        })?;
    }
    let (results, status) = match args.results_file() {
        Some(file) if file.is_dir() => bail!(
            "{} is a folder: give --labels (or --labels-file, --probe) to classify it first, or pass a results file from `vlm classify --format jsonl`",
            file.display()
        ),
        Some(file) => (file, EXIT_OK),
        None => {
            let c = &args.classify;
            if c.labels.is_none() && c.labels_file.is_none() && c.probe.is_none() {
                bail!("give --labels, --labels-file or --probe to classify the inputs first, or pass one results file from `vlm classify --format jsonl`");
            }
            let results = output.with_extension("jsonl");
            if results == output {
                bail!("--output names the page: give it a .html name");
            }
            // Classify through the same code as `vlm classify`, into FILE.jsonl.
            args.classify.output = Some(results.clone());
            args.classify.format = Some(FormatArg::Jsonl);
            args.classify.resume = false;
            args.classify.top_k = None;
            let status = super::classify::run(&args.classify)?;
            if status == EXIT_INTERRUPTED {
                printer.error(format_args!(
                    "interrupted: no page was written; the results so far are in {}",
                    results.display()
                ));
                return Ok(status);
            }
            (results, status)
        }
    };
    let title = args.title.clone().unwrap_or_else(|| {
        let name = results
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("vlm report: {}", name.unwrap_or_default())
    });
    let mut options = ReportOptions::new(output.clone(), search_dirs(&results)?);
    options.self_contained = args.self_contained;
    options.title = title;
    options.max_pixels = max_pixels(args.classify.model.max_megapixels);
    let summary = review::write_results_report(&results, &options)?;
    print_summary(&printer, &output, &summary, args.self_contained, started);
    Ok(status)
}

/// Relative image paths are looked up where `vlm classify` most likely ran (here), then
/// beside the results file.
fn search_dirs(results: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let here = std::env::current_dir()
        .context("cannot read the current folder; run vlm report from a folder that exists")?;
    let mut dirs = vec![here.clone()];
    if let Some(parent) = results.parent() {
        let beside = here.join(parent);
        let beside = std::fs::canonicalize(&beside).unwrap_or(beside);
        if beside != here {
            dirs.push(beside);
        }
    }
    Ok(dirs)
}

fn max_pixels(megapixels: f64) -> u64 {
    (megapixels.max(0.0) * 1e6) as u64
}

fn print_summary(
    printer: &Printer,
    output: &Path,
    summary: &ReportSummary,
    inline: bool,
    started: Instant,
) {
    let thumbs = if inline {
        "inlined".to_string()
    } else {
        format!("in {}", review::files_dir(output).display())
    };
    printer.note(format_args!(
        "wrote {}: {} images ({} failed), {} thumbnails {thumbs}, {} without one, in {:.1} s",
        output.display(),
        summary.records,
        summary.failed,
        summary.thumbnails,
        summary.thumbnail_errors,
        started.elapsed().as_secs_f64()
    ));
}

/// Refuses an eval page inside the labelled folder `dir`: its thumbnail folder would become
/// a class of the next `vlm eval` of that folder.
pub fn check_eval_page(dir: &Path, page: &Path) -> anyhow::Result<()> {
    let files = review::files_dir(page);
    let parent = files.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    if let (Ok(dir), Ok(parent)) = (std::fs::canonicalize(dir), std::fs::canonicalize(parent)) {
        if parent.starts_with(&dir) {
            bail!(
                "--report {} would put its thumbnails in {}, inside {}, where the next eval would take them for a class; write the page outside {}",
                page.display(),
                files.display(),
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Writes the page of `vlm eval --report`: every image of `dataset` that was embedded,
/// scored against the classes of `result`, and the failures.
#[allow(clippy::too_many_arguments)]
pub fn write_eval_page(
    path: &Path,
    classifier: &Checkpoint,
    dataset: &Dataset,
    embedded: &[Embedded],
    failed: &[Failure],
    result: &SpecResult,
    max_megapixels: f64,
    printer: &Printer,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = classifier.embed_classes(&result.prompts)?;
    let mut images = Vec::new();
    let mut rows: Vec<&[f32]> = Vec::new();
    for (done, image) in embedded.iter().zip(&dataset.images) {
        if let Ok(embedding) = &done.embedding {
            rows.push(embedding);
            images.push((done.input.display.clone(), image.label));
        }
    }
    let mut scores = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(RANK_CHUNK) {
        scores.extend(classifier.rank_rows(chunk, &text)?);
    }
    let e = &result.evaluation;
    let classes = vlm::evaluation::summary::class_names(result);
    let meta = EvalMeta {
        spec: result.spec.describe(),
        images: e.images(),
        failed: failed.len(),
        k: e.k,
        top1: e.top1,
        top_k: e.top_k,
        confusion: e.confusion.rows(),
        per_class: e
            .classes
            .iter()
            .map(|c| EvalClass {
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
                support: c.support,
            })
            .collect(),
        macro_f1: e.macro_average.f1,
    };
    let dir = std::env::current_dir()
        .context("cannot read the current folder; run vlm eval from a folder that exists")?;
    let mut options = ReportOptions::new(path.to_path_buf(), vec![dir]);
    options.title = format!("vlm eval: {}", result.spec.describe());
    options.max_pixels = max_pixels(max_megapixels);
    let pages = images
        .into_iter()
        .zip(scores)
        .map(|((path, truth), scores)| EvalImage {
            path,
            truth,
            scores,
        });
    let failures = failed.iter().map(|f| (f.path.clone(), f.error.clone()));
    let summary = review::write_eval_report(&classes, &meta, pages, failures, &options)?;
    print_summary(printer, path, &summary, false, started);
    Ok(())
}
