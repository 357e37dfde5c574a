//! The page of `vlm eval --report`: every image of the labelled set that was embedded,
//! scored against the classes of the evaluated prompt spec, and the failures.

use std::path::Path;

use super::{
    files_dir, max_pixels, write_eval_page, EvalClass, EvalImage, EvalMeta, PageError, PageOptions,
    PageSummary,
};
use crate::checkpoint::Checkpoint;
use crate::dataset::{Dataset, LabelledRows};
use crate::error::Error;
use crate::evaluation::summary::{class_names, Failure};
use crate::evaluation::SpecResult;

/// Images ranked per call when scoring an eval page (bounds the similarity matrix).
const RANK_CHUNK: usize = 1024;

/// Why an eval page could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EvalPageError {
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Score(#[from] Error),
    #[error(
        "--report {} would put its thumbnails in {}, inside {}, where the next eval would take them for a class; write the page outside {}",
        page.display(),
        files.display(),
        dir.display(),
        dir.display()
    )]
    InsideDataset {
        page: std::path::PathBuf,
        files: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
}

/// Refuses an eval page inside the labelled folder `dir`: its thumbnail folder would become
/// a class of the next `vlm eval` of that folder.
pub fn check_eval_page(dir: &Path, page: &Path) -> Result<(), EvalPageError> {
    let files = files_dir(page);
    let parent = files.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    if let (Ok(dir), Ok(parent)) = (std::fs::canonicalize(dir), std::fs::canonicalize(parent)) {
        if parent.starts_with(&dir) {
            return Err(EvalPageError::InsideDataset {
                page: page.to_path_buf(),
                files,
                dir,
            });
        }
    }
    Ok(())
}

/// Writes the page of `vlm eval --report` to `path`: the images of `dataset` embedded in
/// `rows`, scored against the classes of `result`, and `failed`.
pub fn write_evaluation_page(
    path: &Path,
    checkpoint: &Checkpoint,
    dataset: &Dataset,
    rows: &LabelledRows,
    failed: &[Failure],
    result: &SpecResult,
    max_megapixels: f64,
) -> Result<PageSummary, EvalPageError> {
    let text = checkpoint.embed_classes(&result.prompts)?;
    let (embedded, truth) = rows.rows_and_labels(dataset);
    let mut scores = Vec::with_capacity(embedded.len());
    for chunk in embedded.chunks(RANK_CHUNK) {
        scores.extend(checkpoint.rank_rows(chunk, &text)?);
    }
    let e = &result.evaluation;
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
    let dir = std::env::current_dir().map_err(|cause| PageError::CurrentDir {
        command: "eval",
        cause,
    })?;
    let mut options = PageOptions::new(path.to_path_buf(), vec![dir]);
    options.title = format!("vlm eval: {}", result.spec.describe());
    options.max_pixels = max_pixels(max_megapixels);
    let images =
        rows.embedded(dataset)
            .zip(truth)
            .zip(scores)
            .map(|(((image, _), truth), scores)| EvalImage {
                path: image.input.display.clone(),
                truth,
                scores,
            });
    let failures = failed.iter().map(|f| (f.path.clone(), f.error.clone()));
    Ok(write_eval_page(
        &class_names(result),
        &meta,
        images,
        failures,
        &options,
    )?)
}
