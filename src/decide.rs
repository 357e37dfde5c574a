//! How labels are chosen for an image: the [`Scorer`] turns an image embedding into ranked
//! label scores (by prompts, by prompts and example images, or by a linear probe), and the
//! [`Decisions`] turn those scores into a report (top-k, multi-label selection, the
//! "uncertain" flag) and a destination for `--organize`.

use std::path::PathBuf;

use crate::checkpoint::{self, Checkpoint, PromptEmbeddings};
use crate::error::{Error, Result};
use crate::family::Scoring;
use crate::fewshot::{self, FewShotError, NotTuned, ParamsChoice, TipAdapterCache, TipParams};
use crate::inputs::InputOptions;
use crate::job::{Embedded, Item, JobError, Level, Progress, Sink};
use crate::labels::PromptSet;
use crate::output::{ImageResult, LabelResult, Labelled, Outcome};
use crate::probe::{ModelIdentity, Probe, ProbeError};
use crate::score::Score;
use crate::session::Session;

/// A setting of the decisions that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("--min-probability must be between 0 and 1, got {0}")]
    MinProbability(f32),
    #[error("--threshold must be a finite number, got {0}")]
    Threshold(f32),
    #[error(
        "--threshold is a probability (0-1) for this model, whose scores are sigmoids \
         (one per label); got {0}"
    )]
    ProbabilityThreshold(f32),
}

/// Why the scorer could not be made for the loaded model.
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Examples(#[from] FewShotError),
    #[error(transparent)]
    Embed(#[from] Error),
}

/// Where the labels come from, settled before the model is loaded.
pub enum LabelSource {
    /// Prompts made from the labels and templates.
    Prompts(PromptSet),
    /// A linear probe, read from `path`.
    Probe { path: PathBuf, probe: Probe },
}

/// `--examples`: example images that sharpen the prompts, and Tip-Adapter's α and β where
/// given (the others are chosen on the examples when possible).
#[derive(Debug, Clone)]
pub struct ExampleSettings {
    pub dir: PathBuf,
    /// The files to take from the folders, as the labelled inputs take them (`--ext`,
    /// `--exclude`, `--hidden`, `--max-depth`).
    pub filter: InputOptions,
    pub weight: Option<f32>,
    pub sharpness: Option<f32>,
}

/// `--multi-label`'s default threshold on the cosine similarity (softmax-scored models).
pub const DEFAULT_COSINE_THRESHOLD: f32 = 0.25;
/// `--multi-label`'s default threshold on a sigmoid probability: the decision boundary
/// SigLIP was trained for.
pub const DEFAULT_SIGMOID_THRESHOLD: f32 = 0.5;

/// How each image's labels are scored.
pub enum Scorer {
    /// Prompts, and example images when given (Tip-Adapter).
    Prompts {
        prompts: PromptSet,
        text: PromptEmbeddings,
        examples: Option<(TipAdapterCache, TipParams)>,
    },
    /// A linear probe.
    Probe(Probe),
}

impl Scorer {
    /// The scorer for the loaded model: the probe (checked against the model), or the
    /// prompts embedded once (warning about any cut to the model's context), with the
    /// examples read, embedded and weighed when given. `None` when Ctrl-C stopped reading
    /// the examples.
    pub fn build(
        source: LabelSource,
        examples: Option<&ExampleSettings>,
        session: &Session,
        progress: &dyn Progress,
    ) -> Result<Option<Self>, ScorerError> {
        let checkpoint = &session.checkpoint;
        let prompts = match source {
            LabelSource::Probe { path, probe } => {
                probe.check_model(&path, &ModelIdentity::of(&session.files, checkpoint)?)?;
                return Ok(Some(Self::Probe(probe)));
            }
            LabelSource::Prompts(prompts) => prompts,
        };
        let text = checkpoint.embed_classes(&prompts)?;
        checkpoint::warn_truncated(
            &prompts.prompts,
            &text.truncated,
            checkpoint.model().text_context(),
            progress,
        );
        let examples = match examples {
            None => None,
            Some(settings) => {
                let examples = fewshot::load_examples(
                    &session.job(),
                    &settings.dir,
                    &settings.filter,
                    &prompts.classes,
                )?;
                if examples.tally.cancelled {
                    progress.say(
                        Level::Error,
                        &"interrupted while reading the examples; nothing was labelled",
                    );
                    return Ok(None);
                }
                examples.say_used(&settings.dir, progress);
                let params = example_params(
                    checkpoint,
                    settings,
                    &text,
                    &examples.cache,
                    &prompts,
                    progress,
                )?;
                Some((examples.cache, params))
            }
        };
        Ok(Some(Self::Prompts {
            prompts,
            text,
            examples,
        }))
    }

    /// Ranked scores for each embedding in `rows`, best first.
    pub fn rank(&self, classifier: &Checkpoint, rows: &[&[f32]]) -> Result<Vec<Vec<Score>>> {
        match self {
            Self::Prompts {
                text,
                examples: None,
                ..
            } => classifier.rank_rows(rows, text),
            Self::Prompts {
                text,
                examples: Some((examples, params)),
                ..
            } => {
                let model = classifier.model();
                let logits = (model.logit_scale(), model.logit_bias());
                Ok(classifier
                    .rank_rows(rows, text)?
                    .iter()
                    .zip(rows)
                    .map(|(scores, row)| {
                        examples.rank_scored(row, scores, logits, model.scoring(), *params)
                    })
                    .collect())
            }
            Self::Probe(probe) => Ok(rows.iter().map(|row| probe.rank(row)).collect()),
        }
    }

    /// The name of class `index`.
    pub fn label(&self, index: usize) -> &str {
        match self {
            Self::Prompts { prompts, .. } => &prompts.classes[index].name,
            Self::Probe(probe) => &probe.labels()[index],
        }
    }

    /// The class's (first) prompt; a probe has none.
    pub fn prompt(&self, index: usize) -> &str {
        match self {
            Self::Prompts { prompts, .. } => prompts.first_prompt(index),
            Self::Probe(_) => "",
        }
    }

    /// What the `similarity` column holds: the cosine for prompts, the logit for a probe.
    pub fn similarity_name(&self) -> &'static str {
        match self {
            Self::Prompts { .. } => "cos",
            Self::Probe(_) => "logit",
        }
    }

    /// How the probabilities are computed, as every output names it: the checkpoint's
    /// scoring for prompts (`softmax` or `sigmoid`), `probe-softmax` for a probe, which is
    /// its own softmax classifier over the classes whatever the family.
    pub fn scoring_name(&self, classifier: &Checkpoint) -> &'static str {
        match self {
            Self::Prompts { .. } => classifier.scoring().name(),
            Self::Probe(_) => "probe-softmax",
        }
    }

    /// Whether `--multi-label` thresholds each label's probability (sigmoid-scored prompts:
    /// each probability is a calibrated yes/no) rather than its similarity (a softmax share
    /// depends on the other labels; a probe's similarity is its logit).
    pub fn thresholds_probability(&self, classifier: &Checkpoint) -> bool {
        matches!(self, Self::Prompts { .. }) && classifier.scoring() == Scoring::Sigmoid
    }
}

/// Tip-Adapter's α and β: as given, the rest chosen on the examples when possible;
/// `--verbose` says which and why.
fn example_params(
    checkpoint: &Checkpoint,
    settings: &ExampleSettings,
    text: &PromptEmbeddings,
    examples: &TipAdapterCache,
    prompts: &PromptSet,
    progress: &dyn Progress,
) -> Result<TipParams, FewShotError> {
    let (params, choice) = fewshot::choose_params(
        examples,
        checkpoint,
        text,
        settings.weight,
        settings.sharpness,
    )?;
    let (a, b) = (params.weight, params.sharpness);
    let detail = |message: std::fmt::Arguments<'_>| progress.say(Level::Detail, &message);
    match choice {
        ParamsChoice::Tuned(t) => detail(format_args!(
            "examples weight {a}, sharpness {b}, chosen by leave-one-out over {} examples: \
             {:.3} of them ranked right (prompts alone {:.3})",
            t.held_out, t.accuracy, t.zero_shot_accuracy
        )),
        ParamsChoice::Kept(NotTuned::Given) => {
            detail(format_args!("examples weight {a}, sharpness {b}, as given"))
        }
        ParamsChoice::Kept(NotTuned::TooFew { class, count }) => detail(format_args!(
            "examples weight {a}, sharpness {b} (Tip-Adapter's defaults where not given): \
             label {:?} has {count} examples, and choosing them by leave-one-out needs {} of \
             each label",
            prompts.classes.get(class).map_or("?", |c| c.name.as_str()),
            fewshot::MIN_EXAMPLES_TO_TUNE
        )),
    }
    Ok(params)
}

/// The decision settings of one run, checked once.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decisions {
    /// Report at most this many labels per image; `None` reports all.
    pub top_k: Option<usize>,
    /// Multi-label mode: every label whose similarity (or, with
    /// [`Self::multi_label_on_probability`], probability) reaches this is selected.
    pub multi_label: Option<f32>,
    /// The multi-label threshold applies to the probability (sigmoid scoring).
    pub multi_label_on_probability: bool,
    /// Single-label mode: a top probability below this marks the image uncertain.
    pub min_probability: Option<f32>,
}

impl Decisions {
    /// Checks the settings: a probability must lie in 0..=1, a threshold be finite.
    pub fn new(
        top_k: Option<usize>,
        multi_label: Option<f32>,
        min_probability: Option<f32>,
    ) -> Result<Self, DecideError> {
        if let Some(p) = min_probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(DecideError::MinProbability(p));
            }
        }
        if let Some(t) = multi_label.filter(|t| !t.is_finite()) {
            return Err(DecideError::Threshold(t));
        }
        Ok(Self {
            top_k,
            multi_label,
            min_probability,
            multi_label_on_probability: false,
        })
    }

    /// Fits the multi-label threshold to the scorer: `requested` (the user's `--threshold`)
    /// or the default, on the probability when `on_probability` (see
    /// [`Scorer::thresholds_probability`]), else on the similarity.
    pub fn with_threshold_on(
        mut self,
        requested: Option<f32>,
        on_probability: bool,
    ) -> Result<Self, DecideError> {
        if self.multi_label.is_none() {
            return Ok(self);
        }
        let threshold = requested.unwrap_or(if on_probability {
            DEFAULT_SIGMOID_THRESHOLD
        } else {
            DEFAULT_COSINE_THRESHOLD
        });
        if on_probability && !(0.0..=1.0).contains(&threshold) {
            return Err(DecideError::ProbabilityThreshold(threshold));
        }
        self.multi_label = Some(threshold);
        self.multi_label_on_probability = on_probability;
        Ok(self)
    }

    /// The report for one image from its ranked `scores` (best first).
    pub fn decide(&self, path: &str, scores: &[Score], scorer: &Scorer) -> ImageResult {
        let passes = |s: &Score, threshold: f32| {
            if self.multi_label_on_probability {
                s.probability >= threshold
            } else {
                s.similarity >= threshold
            }
        };
        let results = scores
            .iter()
            .take(self.top_k.unwrap_or(usize::MAX))
            .map(|s| LabelResult {
                label: scorer.label(s.index).to_string(),
                prompt: scorer.prompt(s.index).to_string(),
                probability: s.probability,
                similarity: s.similarity,
                selected: self.multi_label.map(|t| passes(s, t)),
            })
            .collect();
        let labels = self.multi_label.map(|threshold| {
            scores
                .iter()
                .filter(|s| passes(s, threshold))
                .map(|s| scorer.label(s.index).to_string())
                .collect()
        });
        let uncertain = self
            .min_probability
            .map(|p| scores.first().is_none_or(|top| top.probability < p));
        ImageResult {
            path: path.to_string(),
            outcome: Outcome::Ranked(results),
            uncertain,
            labels,
        }
    }
}

/// Where `--organize` puts an image: `Some(Some(label))` into that label's folder,
/// `Some(None)` into the folder for images without a label (uncertain, or no label selected
/// in multi-label mode), `None` nowhere (the image failed).
pub fn destination(report: &ImageResult) -> Option<Option<String>> {
    match (&report.labels, &report.outcome) {
        (_, Outcome::Failed(_)) => None,
        (Some(selected), _) => Some(selected.first().cloned()),
        (None, _) if report.uncertain == Some(true) => Some(None),
        (None, Outcome::Ranked(results)) => Some(results.first().map(|r| r.label.clone())),
    }
}

/// A sink of the job that labels each batch (the scorer ranks, the decisions choose) and
/// hands the labelled results to its own sink: the result writer, the organizer, a store,
/// a review page, whatever consumes classify results.
pub struct Labeller<'a, S> {
    checkpoint: &'a Checkpoint,
    scorer: &'a Scorer,
    decisions: Decisions,
    sink: S,
}

impl<'a, S> Labeller<'a, S> {
    /// Labels with `scorer` and `decisions` on `checkpoint`, then hands on to `sink`.
    pub fn new(
        checkpoint: &'a Checkpoint,
        scorer: &'a Scorer,
        decisions: Decisions,
        sink: S,
    ) -> Self {
        Self {
            checkpoint,
            scorer,
            decisions,
            sink,
        }
    }

    /// The sink, to finish it after the run.
    pub fn into_sink(self) -> S {
        self.sink
    }
}

impl<T, S> Sink<Embedded<T>> for Labeller<'_, S>
where
    T: Item,
    S: for<'b> Sink<Labelled<'b, T>>,
{
    fn write(&mut self, batch: &[Embedded<T>], progress: &dyn Progress) -> Result<(), JobError> {
        let rows: Vec<&[f32]> = batch.iter().filter_map(Embedded::ok).collect();
        let mut ranked = self.scorer.rank(self.checkpoint, &rows)?.into_iter();
        let mut labelled = Vec::with_capacity(batch.len());
        for done in batch {
            let result = match &done.embedding {
                Ok(_) => {
                    let scores = ranked
                        .next()
                        .ok_or(Error::Internal("fewer rankings than images"))?;
                    self.decisions
                        .decide(done.input.name(), &scores, self.scorer)
                }
                Err(err) => ImageResult::failed(done.input.name().to_string(), err.to_string()),
            };
            labelled.push(Labelled {
                embedded: done,
                result,
            });
        }
        self.sink.write(&labelled, progress)
    }

    fn failed(&self) -> usize {
        Sink::<Labelled<'_, T>>::failed(&self.sink)
    }
}

/// The labels an image was given, as tags for photo tools: the selected ones within the
/// reported (top-k) list with `--multi-label`, else the top label unless the image is
/// uncertain. `None` when the image failed.
pub fn accepted(report: &ImageResult) -> Option<Vec<String>> {
    let Outcome::Ranked(results) = &report.outcome else {
        return None;
    };
    Some(match &report.labels {
        Some(selected) => selected
            .iter()
            .filter(|label| results.iter().any(|r| &r.label == *label))
            .cloned()
            .collect(),
        None if report.uncertain == Some(true) => Vec::new(),
        None => results
            .first()
            .map(|r| r.label.clone())
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Template, Templates};

    fn scorer() -> Scorer {
        let labels = ["cat".to_string(), "dog".to_string(), "car".to_string()];
        let templates = Templates::single(Template::new("a photo of a {}.").unwrap());
        let prompts = PromptSet::new(&labels, &templates).unwrap();
        Scorer::Prompts {
            prompts,
            // Not used by `report`, which only reads names and prompts.
            text: PromptEmbeddings {
                embeddings: candle_core::Tensor::zeros(
                    (3, 4),
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )
                .unwrap(),
                truncated: vec![false; 3],
            },
            examples: None,
        }
    }

    fn scores() -> Vec<Score> {
        vec![
            Score {
                index: 1,
                probability: 0.6,
                similarity: 0.31,
            },
            Score {
                index: 0,
                probability: 0.3,
                similarity: 0.27,
            },
            Score {
                index: 2,
                probability: 0.1,
                similarity: 0.20,
            },
        ]
    }

    fn labels(report: &ImageResult) -> Vec<&str> {
        match &report.outcome {
            Outcome::Ranked(r) => r.iter().map(|r| r.label.as_str()).collect(),
            Outcome::Failed(_) => Vec::new(),
        }
    }

    #[test]
    fn single_label_reports_all_ranked_with_prompts() {
        let report = Decisions::default().decide("x.jpg", &scores(), &scorer());
        assert_eq!(labels(&report), ["dog", "cat", "car"]);
        let Outcome::Ranked(results) = &report.outcome else {
            panic!("ranked")
        };
        assert_eq!(results[0].prompt, "a photo of a dog.");
        assert_eq!(results[0].selected, None);
        assert_eq!(report.uncertain, None);
        assert_eq!(report.labels, None);
        assert_eq!(destination(&report), Some(Some("dog".to_string())));
    }

    #[test]
    fn top_k_cuts_the_list_but_not_the_multi_label_selection() {
        let decisions = Decisions::new(Some(1), Some(0.25), None).unwrap();
        let report = decisions.decide("x.jpg", &scores(), &scorer());
        assert_eq!(labels(&report), ["dog"]);
        // The selection looks at every label, not only the reported ones.
        assert_eq!(
            report.labels,
            Some(vec!["dog".to_string(), "cat".to_string()])
        );
        let Outcome::Ranked(results) = &report.outcome else {
            panic!("ranked")
        };
        assert_eq!(results[0].selected, Some(true));
    }

    #[test]
    fn sigmoid_scoring_thresholds_the_probability() {
        let decisions = Decisions::new(None, Some(0.25), None)
            .unwrap()
            .with_threshold_on(Some(0.3), true)
            .unwrap();
        let report = decisions.decide("x.jpg", &scores(), &scorer());
        // Probabilities 0.6, 0.3, 0.1: the first two reach 0.3 (similarities would select none).
        assert_eq!(
            report.labels,
            Some(vec!["dog".to_string(), "cat".to_string()])
        );
        let default = Decisions::new(None, Some(0.25), None)
            .unwrap()
            .with_threshold_on(None, true)
            .unwrap();
        assert_eq!(default.multi_label, Some(DEFAULT_SIGMOID_THRESHOLD));
        assert!(Decisions::new(None, Some(0.25), None)
            .unwrap()
            .with_threshold_on(Some(1.5), true)
            .is_err());
        let cosine = Decisions::new(None, Some(0.25), None)
            .unwrap()
            .with_threshold_on(None, false)
            .unwrap();
        assert_eq!(cosine.multi_label, Some(DEFAULT_COSINE_THRESHOLD));
        assert!(!cosine.multi_label_on_probability);
    }

    #[test]
    fn multi_label_with_nothing_selected_goes_to_the_unlabelled_folder() {
        let decisions = Decisions::new(None, Some(0.5), None).unwrap();
        let report = decisions.decide("x.jpg", &scores(), &scorer());
        assert_eq!(report.labels, Some(Vec::new()));
        assert_eq!(destination(&report), Some(None));
    }

    #[test]
    fn min_probability_marks_unsure_images() {
        let sure = Decisions::new(None, None, Some(0.6)).unwrap();
        let report = sure.decide("x.jpg", &scores(), &scorer());
        assert_eq!(report.uncertain, Some(false), "0.6 reaches 0.6");
        let strict = Decisions::new(None, None, Some(0.61)).unwrap();
        let report = strict.decide("x.jpg", &scores(), &scorer());
        assert_eq!(report.uncertain, Some(true));
        assert_eq!(destination(&report), Some(None));
        // No scores at all is uncertain, not a panic.
        assert_eq!(strict.decide("x.jpg", &[], &scorer()).uncertain, Some(true));
    }

    #[test]
    fn failed_images_go_nowhere() {
        let report = ImageResult {
            path: "x.jpg".into(),
            outcome: Outcome::Failed("broken".into()),
            uncertain: None,
            labels: None,
        };
        assert_eq!(destination(&report), None);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            Decisions::new(None, None, Some(1.5)),
            Err(DecideError::MinProbability(_))
        ));
        assert!(Decisions::new(None, None, Some(-0.1)).is_err());
        assert!(matches!(
            Decisions::new(None, Some(f32::NAN), None),
            Err(DecideError::Threshold(_))
        ));
        assert!(Decisions::new(Some(3), Some(0.2), Some(0.0)).is_ok());
    }

    #[test]
    fn accepted_labels_follow_every_decision() {
        let single = Decisions::default().decide("x.jpg", &scores(), &scorer());
        assert_eq!(accepted(&single), Some(vec!["dog".to_string()]));
        let unsure =
            Decisions::new(None, None, Some(0.7))
                .unwrap()
                .decide("x.jpg", &scores(), &scorer());
        assert_eq!(accepted(&unsure), Some(Vec::new()));
        let multi =
            Decisions::new(None, Some(0.25), None)
                .unwrap()
                .decide("x.jpg", &scores(), &scorer());
        assert_eq!(
            accepted(&multi),
            Some(vec!["dog".to_string(), "cat".to_string()])
        );
        let top1 = Decisions::new(Some(1), Some(0.25), None).unwrap().decide(
            "x.jpg",
            &scores(),
            &scorer(),
        );
        assert_eq!(accepted(&top1), Some(vec!["dog".to_string()]));
        let failed = ImageResult {
            path: "x".into(),
            outcome: Outcome::Failed("bad".into()),
            uncertain: None,
            labels: None,
        };
        assert_eq!(accepted(&failed), None);
    }
}
