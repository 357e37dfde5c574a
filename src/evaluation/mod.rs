//! Zero-shot evaluation on a labelled folder: the classes' prompts are embedded once per
//! prompt spec, ranked against image embeddings computed once, and measured with
//! [`metrics`]. [`summary`] writes the results.
//!
//! A prompt spec is one template (`"a photo of a {}."`), a built-in ensemble (`imagenet80`,
//! `imagenet7`) or a file of templates, so that `--compare-templates` can set several
//! against each other on the same images.

pub mod heatmap;
pub mod metrics;
mod run;
pub mod summary;

pub use run::{compare_models, evaluate_model, walk_failures, ModelRun};

use std::path::PathBuf;

use crate::checkpoint::{Checkpoint, PromptEmbeddings};
use crate::error::Error;
use crate::job::JobError;
use crate::labels::{LabelError, PromptSet, PromptSpec};
use crate::session::SessionError;
use metrics::{Evaluation, MetricsError};

/// Images ranked per call: bounds the similarity matrix for large folders.
const RANK_CHUNK: usize = 1024;

/// Why an evaluation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Labels(#[from] LabelError),
    /// Embedding or ranking below the evaluation failed.
    #[error(transparent)]
    Core(#[from] Error),
    #[error("empty prompt spec in {list:?}; separate specs with single commas (write \\, for a comma inside a template)")]
    EmptySpec { list: String },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("no image under {} could be read, so there is nothing to evaluate (see the errors above)", dir.display())]
    NothingRead { dir: PathBuf },
    #[error("--models names no model; give a comma-separated list such as clip-b32,siglip-b16")]
    NoModels,
    #[error("cannot write {what} to {}; choose another {flag}", path.display())]
    WriteFile {
        what: &'static str,
        path: PathBuf,
        flag: &'static str,
        #[source]
        cause: std::io::Error,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("while evaluating --models {name}")]
    InModel {
        name: String,
        #[source]
        cause: Box<EvalError>,
    },
}

/// Splits a comma-separated list of prompt specs; `\,` is a comma inside a spec and `\\` a
/// backslash. Surrounding spaces are kept, since they are part of a template.
pub fn split_specs(list: &str) -> Result<Vec<String>, EvalError> {
    let mut specs = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (',' | '\\')) => current.push(next),
                Some(other) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            ',' => specs.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    specs.push(current);
    if specs.iter().any(|s| s.trim().is_empty()) {
        return Err(EvalError::EmptySpec {
            list: list.to_string(),
        });
    }
    Ok(specs)
}

/// Parses every `--compare-templates` value (each a comma-separated list), in order.
pub fn parse_specs<S: AsRef<str>>(lists: &[S]) -> Result<Vec<PromptSpec>, EvalError> {
    let mut specs = Vec::new();
    for list in lists {
        for spec in split_specs(list.as_ref())? {
            specs.push(PromptSpec::parse(&spec)?);
        }
    }
    Ok(specs)
}

/// For each image embedding, the `k` best classes, best first (ties keep class order).
pub fn rank_classes(
    classifier: &Checkpoint,
    rows: &[&[f32]],
    text: &PromptEmbeddings,
    k: usize,
) -> Result<Vec<Vec<usize>>, Error> {
    let mut rankings = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(RANK_CHUNK) {
        for scores in classifier.rank_rows(chunk, text)? {
            rankings.push(scores.iter().take(k).map(|s| s.index).collect());
        }
    }
    Ok(rankings)
}

/// Checks every spec against the labels before any image is embedded.
pub fn check_specs(specs: &[PromptSpec], labels: &[String]) -> Result<(), EvalError> {
    for spec in specs {
        PromptSet::new(labels, &spec.templates)?;
    }
    Ok(())
}

/// One prompt spec measured on a labelled set.
#[derive(Debug, Clone)]
pub struct SpecResult {
    pub spec: PromptSpec,
    /// The classes' prompts (class names are `prompts.classes[c].name`).
    pub prompts: PromptSet,
    /// For each prompt, whether it was cut to the model's context.
    pub truncated: Vec<bool>,
    pub evaluation: Evaluation,
}

/// Embeds the classes' prompts under `spec` once and measures the images: `rows[i]` is the
/// embedding of an image of class `truth[i]`, an index into `labels`.
pub fn evaluate(
    classifier: &Checkpoint,
    labels: &[String],
    spec: &PromptSpec,
    rows: &[&[f32]],
    truth: &[usize],
) -> Result<SpecResult, EvalError> {
    let prompts = PromptSet::new(labels, &spec.templates)?;
    let text = classifier.embed_classes(&prompts)?;
    let k = metrics::default_k(labels.len());
    let rankings = rank_classes(classifier, rows, &text, k)?;
    let evaluation = Evaluation::new(labels.len(), truth, &rankings)?;
    Ok(SpecResult {
        spec: spec.clone(),
        prompts,
        truncated: text.truncated,
        evaluation,
    })
}

/// Orders results best first: by top-1, then top-k, then macro F1; ties keep their order.
pub fn sort_best_first(results: &mut [SpecResult]) {
    results.sort_by(|a, b| {
        let (a, b) = (&a.evaluation, &b.evaluation);
        b.top1
            .total_cmp(&a.top1)
            .then(b.top_k.total_cmp(&a.top_k))
            .then(b.macro_average.f1.total_cmp(&a.macro_average.f1))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_on_unescaped_commas() {
        assert_eq!(
            split_specs("a photo of a {}.,imagenet7").unwrap(),
            ["a photo of a {}.", "imagenet7"]
        );
        assert_eq!(
            split_specs(r"a {}\, at night,x\\y").unwrap(),
            ["a {}, at night", r"x\y"]
        );
        assert_eq!(split_specs(r"a \d {}").unwrap(), [r"a \d {}"]);
        assert!(matches!(
            split_specs("a {},,b {}"),
            Err(EvalError::EmptySpec { .. })
        ));
        assert!(matches!(split_specs(""), Err(EvalError::EmptySpec { .. })));
    }

    #[test]
    fn specs_are_templates_ensembles_or_files() {
        let specs = parse_specs(&["a photo of a {}.,imagenet80", "imagenet7"]).unwrap();
        let sizes: Vec<usize> = specs.iter().map(|s| s.templates.as_slice().len()).collect();
        assert_eq!(sizes, [1, 80, 7]);
        assert_eq!(specs[0].describe(), "a photo of a {}.");
        assert_eq!(specs[1].describe(), "imagenet80 (80 templates)");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.txt");
        std::fs::write(&file, "art of {}\na sketch of {}\n").unwrap();
        let spec = PromptSpec::parse(file.to_str().unwrap()).unwrap();
        assert_eq!(spec.templates.as_slice()[1].apply("cat"), "a sketch of cat");

        let err = PromptSpec::parse("a photo of a cat").unwrap_err();
        assert!(err.to_string().contains("\"a photo of a cat\""), "{err}");
    }
}
