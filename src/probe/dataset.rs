//! Training a probe on a labelled set: the images that could be embedded are split into
//! training and held-out images, as if the others were not there, and the probe is compared
//! with the labels used as prompts.

use super::{ModelIdentity, Probe, ProbeError, Sample, TrainOptions, TrainReport};
use crate::checkpoint::Checkpoint;
use crate::dataset::{Dataset, LabelledRows};
use crate::job::{Level, Progress};
use crate::labels::{PromptSet, Template, Templates};

/// A probe trained on a labelled set, and how well it does.
pub struct Trained {
    pub probe: Probe,
    pub report: TrainReport,
    /// Images trained on.
    pub train: usize,
    /// Images held out.
    pub held: usize,
    /// Accuracy of the labels as prompts ([`crate::labels::DEFAULT_TEMPLATE`]) on the
    /// held-out images; `None` without held-out images or when a label cannot be a prompt.
    pub zero_shot: Option<f64>,
}

/// Says what the folder walk could not read and skipped (with `--verbose`), and warns about
/// labels without images.
pub fn check_dataset(dataset: &Dataset, progress: &dyn Progress) {
    for err in &dataset.errors {
        progress.say(Level::Error, err);
    }
    for (path, reason) in &dataset.skipped {
        progress.say(
            Level::Detail,
            &format_args!("skipped {}: {reason}", path.display()),
        );
    }
    for (label, _) in dataset
        .labels
        .iter()
        .zip(dataset.class_counts())
        .filter(|(_, n)| *n == 0)
    {
        progress.say(
            Level::Warning,
            &format_args!("no images of {label:?}: the probe will never choose it"),
        );
    }
}

/// Trains a probe for `model` on `dataset`'s embedded `rows`. `holdout` of each label's
/// images (split reproducibly by `seed`, among the images that were read, so a broken file
/// changes neither the labels nor the split of the others) stop training and measure it;
/// 0 trains on everything.
pub fn train_on(
    checkpoint: &Checkpoint,
    model: ModelIdentity,
    dataset: &Dataset,
    rows: &LabelledRows,
    holdout: f64,
    seed: u64,
    options: &TrainOptions,
) -> Result<Trained, ProbeError> {
    if rows.embeddings.len() != dataset.images.len() {
        return Err(ProbeError::Mismatch {
            results: rows.embeddings.len(),
            images: dataset.images.len(),
        });
    }
    // `split_among` holds out at least one image of every label with two or more; 0
    // means none.
    let readable = (0..dataset.images.len()).filter(|&i| rows.embeddings[i].is_ok());
    let (train, held) = if holdout > 0.0 {
        dataset.split_among(readable, holdout, seed)
    } else {
        (readable.collect(), Vec::new())
    };
    let samples = |indices: &[usize]| -> Vec<Sample> {
        indices
            .iter()
            .filter_map(|&i| {
                Some(Sample {
                    embedding: rows.embeddings[i].as_deref().ok()?,
                    label: dataset.images[i].label,
                })
            })
            .collect()
    };
    let (train, held) = (samples(&train), samples(&held));
    let (mut probe, report) = Probe::train(dataset.labels.clone(), model, &train, &held, options)?;
    probe.note("seed", seed);
    probe.note("holdout", holdout);
    let zero_shot = match report.held_out_accuracy {
        Some(_) => zero_shot_accuracy(checkpoint, &dataset.labels, &held)?,
        None => None,
    };
    Ok(Trained {
        probe,
        report,
        train: train.len(),
        held: held.len(),
        zero_shot,
    })
}

/// How well the labels as prompts do on the same images, for comparison; `None` when the
/// label names cannot be prompts (e.g. an empty synonym in "a|").
fn zero_shot_accuracy(
    checkpoint: &Checkpoint,
    labels: &[String],
    samples: &[Sample],
) -> Result<Option<f64>, ProbeError> {
    let Ok(prompts) = PromptSet::new(labels, &Templates::single(Template::default())) else {
        return Ok(None);
    };
    if samples.is_empty() {
        return Ok(None);
    }
    let text = checkpoint.embed_classes(&prompts)?;
    let rows: Vec<&[f32]> = samples.iter().map(|s| s.embedding).collect();
    let ranked = checkpoint.rank_rows(&rows, &text)?;
    let right = ranked
        .iter()
        .zip(samples)
        .filter(|(scores, s)| scores.first().map(|top| top.index) == Some(s.label))
        .count();
    Ok(Some(right as f64 / samples.len() as f64))
}
