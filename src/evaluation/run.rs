//! Running an evaluation: a checkpoint embeds the labelled set's images once and every
//! prompt spec is measured on those embeddings; `--models` does it for each checkpoint.

use std::path::Path;
use std::time::Instant;

use super::summary::{Failure, ModelRow};
use super::{evaluate, EvalError, SpecResult};
use crate::checkpoint;
use crate::dataset::{Dataset, LabelledRows};
use crate::job::{Level, Progress};
use crate::labels::PromptSpec;
use crate::session::{ModelSettings, Session};

/// One checkpoint's evaluation of a labelled set.
pub struct ModelRun {
    /// Every image's embedding (or error), in dataset order; its tally counts the images
    /// measured, left out (the walk's failures too) and skipped by the walk.
    pub rows: LabelledRows,
    /// One per prompt spec, in the order given.
    pub results: Vec<SpecResult>,
    /// The images left out: the walk's failures, then those that could not be embedded.
    pub failed: Vec<Failure>,
    /// Images measured.
    pub evaluated: usize,
    /// Images embedded per second (decoding included; cached images count too).
    pub images_per_second: f64,
}

/// What the walk of a labelled folder could not use, said as it is listed (skips with
/// `--verbose`); each becomes a [`Failure`] of the evaluation (`dir` when it names no file).
pub fn walk_failures(dataset: &Dataset, dir: &Path, progress: &dyn Progress) -> Vec<Failure> {
    for (path, reason) in &dataset.skipped {
        progress.say(
            Level::Detail,
            &format_args!("skipped {}: {reason}", path.display()),
        );
    }
    dataset
        .errors
        .iter()
        .map(|err| {
            progress.say(Level::Error, err);
            Failure {
                path: err.subject().unwrap_or_else(|| dir.display().to_string()),
                error: err.to_string(),
            }
        })
        .collect()
}

/// Embeds `dataset` (read from `dir`) with the session's checkpoint and measures every
/// spec, warning about prompts cut to the model's context; `failed` are the walk's
/// failures. `None` when Ctrl-C stopped the embedding.
pub fn evaluate_model(
    session: &Session,
    dataset: &Dataset,
    dir: &Path,
    specs: &[PromptSpec],
    mut failed: Vec<Failure>,
    progress: &dyn Progress,
) -> Result<Option<ModelRun>, EvalError> {
    let started = Instant::now();
    let rows = dataset.embed(&session.job(), progress)?;
    let seconds = started.elapsed().as_secs_f64();
    if rows.tally.cancelled {
        progress.say(Level::Error, &"interrupted: no metrics were computed");
        return Ok(None);
    }
    failed.extend(rows.failed(dataset).map(|(image, error)| Failure {
        path: image.input.display.clone(),
        error: error.to_string(),
    }));
    let (embedded, truth) = rows.rows_and_labels(dataset);
    if embedded.is_empty() {
        return Err(EvalError::NothingRead {
            dir: dir.to_path_buf(),
        });
    }
    let checkpoint = &session.checkpoint;
    let context = checkpoint.model().text_context();
    let mut results = Vec::with_capacity(specs.len());
    for spec in specs {
        let result = evaluate(checkpoint, &dataset.labels, spec, &embedded, &truth)?;
        checkpoint::warn_truncated(
            &result.prompts.prompts,
            &result.truncated,
            context,
            progress,
        );
        results.push(result);
    }
    let evaluated = embedded.len();
    let mut rows = rows;
    // The run's tally: every image measured, every one left out, what the walk skipped.
    rows.tally.done = evaluated;
    rows.tally.failed = failed.len();
    rows.tally.skipped = dataset.skipped.len();
    let images_per_second = if seconds > 0.0 {
        rows.embeddings.len() as f64 / seconds
    } else {
        0.0
    };
    Ok(Some(ModelRun {
        rows,
        results,
        failed,
        evaluated,
        images_per_second,
    }))
}

/// `--models`: every checkpoint on the same images and prompts, one row each, in the order
/// given (sort them with [`super::summary::sort_models_best_first`]); `None` when
/// interrupted. Says which model it is on as a note.
pub fn compare_models(
    models: &[ModelSettings],
    dataset: &Dataset,
    dir: &Path,
    spec: &PromptSpec,
    failed: &[Failure],
    progress: &dyn Progress,
) -> Result<Option<Vec<ModelRow>>, EvalError> {
    let mut rows = Vec::with_capacity(models.len());
    for settings in models {
        let name = &settings.spec;
        progress.say(Level::Note, &format_args!("evaluating {name}"));
        let in_model = |cause| EvalError::InModel {
            name: name.clone(),
            cause: Box::new(cause),
        };
        let session = Session::open(settings, progress).map_err(|e| in_model(e.into()))?;
        let run = evaluate_model(
            &session,
            dataset,
            dir,
            std::slice::from_ref(spec),
            failed.to_vec(),
            progress,
        )
        .map_err(in_model)?;
        let Some(mut run) = run else {
            return Ok(None);
        };
        let checkpoint = &session.checkpoint;
        rows.push(ModelRow {
            model: name.clone(),
            family: checkpoint.family().name(),
            scoring: checkpoint.scoring().name(),
            evaluation: run.results.remove(0).evaluation,
            images_per_second: run.images_per_second,
            weights_bytes: std::fs::metadata(&session.files.weights).map_or(0, |m| m.len()),
            failed: run.failed.len(),
        });
    }
    if rows.is_empty() {
        return Err(EvalError::NoModels);
    }
    Ok(Some(rows))
}
