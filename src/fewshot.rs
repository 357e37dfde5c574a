//! Few-shot classification without training: a handful of labelled example images sharpen
//! the text prompts, using Tip-Adapter (Zhang et al., "Tip-Adapter: Training-free
//! Adaption of CLIP for Few-shot Classification", ECCV 2022).
//!
//! Every example is kept as a cache entry: its L2-normalised embedding is a key, its label
//! a one-hot value. An image `x` (normalised) is scored against class `c` as
//!
//! ```text
//! logit_c = exp(logit_scale) · cos(x, text_c) + α · Σ_{examples k of c} exp(−β · (1 − cos(x, k)))
//! ```
//!
//! and the probabilities are the softmax of these logits. `α` (`--examples-weight`) is how
//! much the examples count against the prompts, `β` (`--examples-sharpness`) how quickly an
//! example stops counting as the image moves away from it. The defaults, α = 1 and β = 5.5,
//! are the values the paper's ImageNet ablation found best; its authors tune both per data
//! set, and so should you when the examples look very unlike the prompts' domain.
//!
//! Why Tip-Adapter rather than blending each class's text embedding with the mean of its
//! examples: it keeps every example, so a class with several looks (front and side views,
//! squares and discs) is not averaged into a point that looks like none of them; it is a
//! published method with published defaults; and it reduces exactly to zero-shot
//! classification when α = 0 or a label has no examples (the cache adds nothing to that
//! label), so the text prompts keep their meaning. The reported `similarity` stays the
//! image-prompt cosine; only the probabilities (and so the ranking) take the examples into
//! account.
//!
//! When every label has at least [`MIN_EXAMPLES_TO_TUNE`] examples, α and β are not fixed but
//! chosen as the paper's authors choose them, on held-out data: [`TipAdapterCache::tune`]
//! tries a grid of both and keeps the pair that classifies the examples best when each is
//! left out of the cache in turn (leave-one-out). The paper's defaults suit prompts and
//! examples of a real CLIP on photographs; on a domain the prompts get wrong, the examples
//! must count for much more, and only the examples can say how much.
//!
//! Labels with examples gain up to `α` per close example, labels without none, so with
//! examples for some labels only, the others are chosen less often: give every label a few.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::dataset::{Dataset, DatasetError};
use crate::error::Error;
use crate::family::Scoring;
use crate::inputs::{InputError, InputOptions};
use crate::job::{Job, JobError, Level, Progress, Silent, Tally};
use crate::labels::Class;
use crate::score::{self, Score};
use crate::PromptEmbeddings;

/// Tip-Adapter's residual ratio α: how much the examples count against the prompts.
pub const DEFAULT_WEIGHT: f32 = 1.0;
/// Tip-Adapter's sharpness β: how quickly an example's vote fades with distance.
pub const DEFAULT_SHARPNESS: f32 = 5.5;

/// Fewest examples of every label for which [`TipAdapterCache::tune`] chooses α and β; with
/// fewer, leaving one out removes too much of its label to say anything.
pub const MIN_EXAMPLES_TO_TUNE: usize = 4;

/// The α tried by [`TipAdapterCache::tune`]: 0 (prompts alone) and powers of two from 1/4 to
/// 256, wide enough for prompts whose logits spread over a few units (a real CLIP) or a few
/// tens (a random or mismatched text tower).
pub const WEIGHT_GRID: [f32; 12] = [
    0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0,
];

/// The β tried by [`TipAdapterCache::tune`]: the paper's 5.5 and about a factor 1.6 apart
/// from 1 to 100; a large β lets only near-duplicates vote, which suits embeddings whose
/// cosines all crowd near 1.
pub const SHARPNESS_GRID: [f32; 11] = [1.0, 1.6, 2.5, 4.0, 5.5, 8.0, 13.0, 20.0, 32.0, 50.0, 80.0];

/// At most this many examples are held out in turn (evenly spread over the cache): tuning
/// then computes at most this many times the number of examples cosines, enough to rank
/// 132 parameter pairs without costing seconds on tens of thousands of examples.
const MAX_HELD_OUT: usize = 500;

/// Why examples cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FewShotError {
    #[error(
        "{}: example folder {folder:?} is not one of the labels ({labels}); rename the folder \
         to one of them, add {folder:?} to the labels, or move the folder out of {}",
        dir.display(),
        dir.display()
    )]
    UnknownLabel {
        dir: PathBuf,
        folder: String,
        labels: String,
    },
    #[error("{}: folders {first:?} and {second:?} both give examples of label {label:?}; merge them into one folder", dir.display())]
    LabelTwice {
        dir: PathBuf,
        label: String,
        first: String,
        second: String,
    },
    #[error("the examples {what} must be a finite number of at least 0, got {value}")]
    Parameter { what: &'static str, value: f32 },
    #[error("an example embedding has {got} values but the model's embeddings have {want}")]
    Dimension { got: usize, want: usize },
    #[error("example class {class} does not exist: there are {classes} classes")]
    Class { class: usize, classes: usize },
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Embedding the examples failed as a whole (the model, not one image).
    #[error(transparent)]
    Embed(#[from] Error),
}

/// Tip-Adapter's two knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TipParams {
    /// α, the weight of the examples against the prompts (0 turns them off).
    pub weight: f32,
    /// β, the sharpness of each example's affinity.
    pub sharpness: f32,
}

impl Default for TipParams {
    fn default() -> Self {
        Self {
            weight: DEFAULT_WEIGHT,
            sharpness: DEFAULT_SHARPNESS,
        }
    }
}

impl TipParams {
    /// Checks that both knobs are finite and not negative.
    pub fn new(weight: f32, sharpness: f32) -> Result<Self, FewShotError> {
        for (what, value) in [("weight", weight), ("sharpness", sharpness)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(FewShotError::Parameter { what, value });
            }
        }
        Ok(Self { weight, sharpness })
    }
}

/// What [`TipAdapterCache::tune`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuned {
    /// The chosen α and β.
    pub params: TipParams,
    /// Share of held-out examples ranked right with them.
    pub accuracy: f64,
    /// Share ranked right by the prompts alone.
    pub zero_shot_accuracy: f64,
    /// Number of examples held out in turn.
    pub held_out: usize,
}

/// Why [`TipAdapterCache::tune`] did not tune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTuned {
    /// Both knobs were given.
    Given,
    /// Class `class` has only `count` examples, fewer than [`MIN_EXAMPLES_TO_TUNE`].
    TooFew { class: usize, count: usize },
}

/// The example images as Tip-Adapter's key-value cache.
#[derive(Debug, Clone)]
pub struct TipAdapterCache {
    classes: usize,
    dim: usize,
    /// Normalised example embeddings, one row of `dim` values each.
    keys: Vec<f32>,
    /// The class of each key.
    labels: Vec<usize>,
}

impl TipAdapterCache {
    /// An empty cache for `classes` classes of `dim`-value embeddings.
    pub fn new(classes: usize, dim: usize) -> Self {
        Self {
            classes,
            dim,
            keys: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Adds one example of class `class` (an index into the classes); the embedding need not
    /// be normalised.
    pub fn add(&mut self, class: usize, embedding: &[f32]) -> Result<(), FewShotError> {
        if embedding.len() != self.dim {
            return Err(FewShotError::Dimension {
                got: embedding.len(),
                want: self.dim,
            });
        }
        if class >= self.classes {
            return Err(FewShotError::Class {
                class,
                classes: self.classes,
            });
        }
        self.keys.extend(unit(embedding));
        self.labels.push(class);
        Ok(())
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No examples at all.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of examples of each class.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }

    /// The cache's vote for each class: Σ over its examples of exp(−β (1 − cos(image, key))).
    pub fn affinities(&self, image: &[f32], sharpness: f32) -> Vec<f64> {
        let image: Vec<f32> = unit(image).collect();
        let mut votes = vec![0.0; self.classes];
        for (key, &label) in self.keys.chunks_exact(self.dim).zip(&self.labels) {
            let cos: f32 = key.iter().zip(&image).map(|(a, b)| a * b).sum();
            votes[label] += (-f64::from(sharpness) * (1.0 - f64::from(cos))).exp();
        }
        votes
    }

    /// Chooses α and β by leave-one-out over the examples, as Tip-Adapter tunes them on
    /// held-out data: each example in turn is scored by its prompt similarities and by the
    /// *other* examples, for every pair of [`WEIGHT_GRID`] x [`SHARPNESS_GRID`], and the pair
    /// ranking the most examples right wins (ties: the lowest mean negative log-likelihood,
    /// then the smaller β, then the smaller α). `weight` or `sharpness`, when given, is kept and only the
    /// other is searched; with both given, or fewer than [`MIN_EXAMPLES_TO_TUNE`] examples
    /// of some class, nothing is tuned and the caller keeps its values.
    ///
    /// `similarities[k][c]` is the cosine of example `k` (in the order added) with class
    /// `c`'s prompt embedding, `logit_scale` the model's (log) scale.
    pub fn tune(
        &self,
        similarities: &[Vec<f32>],
        logit_scale: f32,
        weight: Option<f32>,
        sharpness: Option<f32>,
    ) -> Result<Tuned, NotTuned> {
        if weight.is_some() && sharpness.is_some() {
            return Err(NotTuned::Given);
        }
        if let Some(why) = self.too_few() {
            return Err(why);
        }
        let weights: Vec<f32> = weight.map_or_else(|| WEIGHT_GRID.to_vec(), |w| vec![w]);
        let sharpnesses: Vec<f32> = sharpness.map_or_else(|| SHARPNESS_GRID.to_vec(), |b| vec![b]);
        let n = self.len();
        let stride = n.div_ceil(MAX_HELD_OUT).max(1);
        let held: Vec<usize> = (0..n).step_by(stride).collect();
        let scale = f64::from(logit_scale).exp();
        let prompt_logits: Vec<Vec<f64>> = held
            .iter()
            .map(|&i| {
                (0..self.classes)
                    .map(|c| {
                        let s = similarities.get(i).and_then(|row| row.get(c));
                        scale * f64::from(s.copied().unwrap_or(0.0))
                    })
                    .collect()
            })
            .collect();
        // Cosines of each held-out example with every other one, computed once.
        let cosines: Vec<Vec<f32>> = held
            .iter()
            .map(|&i| {
                let key = self.key(i);
                (0..n)
                    .map(|k| key.iter().zip(self.key(k)).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect();
        let truth: Vec<usize> = held.iter().map(|&i| self.labels[i]).collect();
        let zero_shot_accuracy = loo_score(&prompt_logits, None, 0.0, &truth).0;
        let mut best: Option<(f64, f64, TipParams)> = None;
        for &beta in &sharpnesses {
            let votes: Vec<Vec<f64>> = held
                .iter()
                .zip(&cosines)
                .map(|(&i, cos)| {
                    let mut votes = vec![0.0; self.classes];
                    for (k, (&c, &label)) in cos.iter().zip(&self.labels).enumerate() {
                        if k != i {
                            votes[label] += (-f64::from(beta) * (1.0 - f64::from(c))).exp();
                        }
                    }
                    votes
                })
                .collect();
            for &alpha in &weights {
                let (accuracy, nll) = loo_score(&prompt_logits, Some(&votes), alpha, &truth);
                let better =
                    best.is_none_or(|(a, l, _)| accuracy > a || (accuracy == a && nll < l));
                if better {
                    best = Some((
                        accuracy,
                        nll,
                        TipParams {
                            weight: alpha,
                            sharpness: beta,
                        },
                    ));
                }
            }
        }
        let (accuracy, _, params) = best.ok_or(NotTuned::Given)?;
        Ok(Tuned {
            params,
            accuracy,
            zero_shot_accuracy,
            held_out: held.len(),
        })
    }

    /// [`NotTuned::TooFew`] for the first class with fewer than [`MIN_EXAMPLES_TO_TUNE`]
    /// examples, if any.
    pub fn too_few(&self) -> Option<NotTuned> {
        self.counts()
            .iter()
            .enumerate()
            .find(|(_, &n)| n < MIN_EXAMPLES_TO_TUNE)
            .map(|(class, &count)| NotTuned::TooFew { class, count })
    }

    /// The normalised embedding of example `k`.
    fn key(&self, k: usize) -> &[f32] {
        &self.keys[k * self.dim..(k + 1) * self.dim]
    }

    /// Re-ranks one image's zero-shot scores (from [`Checkpoint::rank_rows`], whose
    /// `similarity` is the image-prompt cosine) with the examples. `logit_scale` is the
    /// model's (log) scale, as in zero-shot scoring; with a weight of 0 the result is the
    /// zero-shot ranking itself.
    pub fn rank(
        &self,
        image: &[f32],
        zero_shot: &[Score],
        logit_scale: f32,
        params: TipParams,
    ) -> Vec<Score> {
        self.rank_scored(
            image,
            zero_shot,
            (logit_scale, 0.0),
            Scoring::Softmax,
            params,
        )
    }

    /// [`Self::rank`] with the model's scoring: for [`Scoring::Sigmoid`] (SigLIP) the
    /// examples' votes are added to `exp(scale) * cos + bias`, and each label's sigmoid is
    /// reported, so that a weight of 0 still gives the zero-shot scores.
    pub fn rank_scored(
        &self,
        image: &[f32],
        zero_shot: &[Score],
        (logit_scale, logit_bias): (f32, f32),
        scoring: Scoring,
        params: TipParams,
    ) -> Vec<Score> {
        let scale = f64::from(logit_scale).exp();
        let bias = match scoring {
            Scoring::Softmax => 0.0,
            Scoring::Sigmoid => f64::from(logit_bias),
        };
        let mut similarities = vec![0.0; zero_shot.len()];
        for s in zero_shot {
            if let Some(slot) = similarities.get_mut(s.index) {
                *slot = s.similarity;
            }
        }
        let votes = self.affinities(image, params.sharpness);
        let logits: Vec<f64> = similarities
            .iter()
            .enumerate()
            .map(|(c, &s)| {
                let vote = votes.get(c).copied().unwrap_or(0.0);
                scale * f64::from(s) + bias + f64::from(params.weight) * vote
            })
            .collect();
        match scoring {
            Scoring::Softmax => score::rank_logits(&logits, &similarities),
            Scoring::Sigmoid => score::rank_sigmoid(&logits, &similarities),
        }
    }
}

/// How [`choose_params`] arrived at α and β.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamsChoice {
    /// Chosen by leave-one-out over the examples.
    Tuned(Tuned),
    /// As given (flags or defaults), and why nothing was tuned.
    Kept(NotTuned),
}

/// α and β for `cache`: `weight` and `sharpness` where given (an explicit value always
/// wins), the rest chosen by [`TipAdapterCache::tune`] when every class has enough examples,
/// else Tip-Adapter's defaults. `text` holds the class embeddings the images are scored
/// against.
pub fn choose_params(
    cache: &TipAdapterCache,
    classifier: &Checkpoint,
    text: &PromptEmbeddings,
    weight: Option<f32>,
    sharpness: Option<f32>,
) -> Result<(TipParams, ParamsChoice), FewShotError> {
    let given = TipParams::new(
        weight.unwrap_or(DEFAULT_WEIGHT),
        sharpness.unwrap_or(DEFAULT_SHARPNESS),
    )?;
    let kept = |why| Ok((given, ParamsChoice::Kept(why)));
    if weight.is_some() && sharpness.is_some() {
        return kept(NotTuned::Given);
    }
    if let Some(why) = cache.too_few() {
        return kept(why);
    }
    let rows: Vec<&[f32]> = cache.keys.chunks_exact(cache.dim).collect();
    let similarities: Vec<Vec<f32>> = classifier
        .rank_rows(&rows, text)?
        .iter()
        .map(|scores| {
            let mut row = vec![0.0; cache.classes];
            for s in scores {
                if let Some(slot) = row.get_mut(s.index) {
                    *slot = s.similarity;
                }
            }
            row
        })
        .collect();
    let scale = classifier.model().logit_scale();
    match cache.tune(&similarities, scale, weight, sharpness) {
        Ok(tuned) => Ok((tuned.params, ParamsChoice::Tuned(tuned))),
        Err(why) => kept(why),
    }
}

/// Example images read and embedded.
pub struct Examples {
    pub cache: TipAdapterCache,
    /// Label names without any usable example: they are scored by their prompts alone.
    pub without_examples: Vec<String>,
    /// Example images that could not be embedded: (displayed path, why); they are left out.
    pub failed: Vec<(String, String)>,
    /// Entries that could not be read while walking the folders.
    pub unreadable: Vec<InputError>,
    /// Entries skipped while walking (not images, hidden, outside a label folder).
    pub skipped: Vec<(PathBuf, String)>,
    /// The embedding run's counts and cache warning.
    pub tally: Tally,
}

/// Reads `dir/<label>/` example folders, taking the files that `filter` takes (extensions,
/// exclusions, hidden files, depth; never a shard: every shard of a run labels with all the
/// examples), matches each folder to one of `classes` (by the class name or any of its
/// synonyms) and embeds the images with `job` (and its cache). A folder that matches no
/// class is an error; an image that cannot be embedded is reported in [`Examples::failed`]
/// and left out.
pub fn load_examples(
    job: &Job,
    dir: &Path,
    filter: &InputOptions,
    classes: &[Class],
) -> Result<Examples, FewShotError> {
    let filter = InputOptions {
        shard: None,
        ..filter.clone()
    };
    let dataset = Dataset::open(dir, &filter, None)?;
    let class_of = match_folders(dir, &dataset.folders, classes)?;
    let rows = dataset.embed(job, &Silent).map_err(|err| match err {
        JobError::Encode(err) => FewShotError::Embed(err),
        // Collecting the rows cannot fail.
        JobError::Sink(_) => FewShotError::Embed(Error::Internal("collecting the examples failed")),
    })?;
    let mut cache = TipAdapterCache::new(classes.len(), job.encoding_len());
    for (image, embedding) in rows.embedded(&dataset) {
        cache.add(class_of[image.label], embedding)?;
    }
    let failed = rows
        .failed(&dataset)
        .map(|(image, err)| (image.input.display.clone(), err.to_string()))
        .collect();
    let without_examples = cache
        .counts()
        .iter()
        .zip(classes)
        .filter(|(&n, _)| n == 0)
        .map(|(_, class)| class.name.clone())
        .collect();
    Ok(Examples {
        cache,
        without_examples,
        failed,
        unreadable: dataset.errors,
        skipped: dataset.skipped,
        tally: rows.tally,
    })
}

impl Examples {
    /// Tells `progress` what could not be used, how many examples each label got, and which
    /// labels have none.
    pub fn say_used(&self, dir: &Path, progress: &dyn Progress) {
        for err in &self.unreadable {
            progress.say(Level::Error, &format_args!("example left out: {err}"));
        }
        for (display, err) in &self.failed {
            progress.failed(display, &format_args!("example left out: {err}"));
        }
        for (path, reason) in &self.skipped {
            progress.say(
                Level::Detail,
                &format_args!("skipped example {}: {reason}", path.display()),
            );
        }
        if let Some(err) = &self.tally.cache_error {
            progress.say(Level::Warning, err);
        }
        let counts = self.cache.counts();
        progress.say(
            Level::Note,
            &format_args!(
                "{} examples for {} of {} labels from {}",
                self.cache.len(),
                counts.iter().filter(|&&n| n > 0).count(),
                counts.len(),
                dir.display()
            ),
        );
        if !self.without_examples.is_empty() {
            progress.say(
                Level::Warning,
                &format_args!(
                    "no examples for {}: scored by the prompt alone, so chosen less often than labels with examples",
                    self.without_examples.join(", ")
                ),
            );
        }
    }
}

/// The class index of each example folder; every folder must name a class, and no two the
/// same one.
pub fn match_folders(
    dir: &Path,
    folders: &[String],
    classes: &[Class],
) -> Result<Vec<usize>, FewShotError> {
    let mut class_of = Vec::with_capacity(folders.len());
    for (i, folder) in folders.iter().enumerate() {
        let class = classes
            .iter()
            .position(|c| c.synonyms.iter().any(|s| s == folder))
            .ok_or_else(|| FewShotError::UnknownLabel {
                dir: dir.to_path_buf(),
                folder: folder.clone(),
                labels: classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if let Some(first) = class_of.iter().position(|&c| c == class) {
            return Err(FewShotError::LabelTwice {
                dir: dir.to_path_buf(),
                label: classes[class].name.clone(),
                first: folders[first].clone(),
                second: folders[i].clone(),
            });
        }
        class_of.push(class);
    }
    Ok(class_of)
}

/// Accuracy and mean negative log-likelihood of `prompt_logits + alpha * votes` against
/// `truth`, one row per held-out example.
fn loo_score(
    prompt_logits: &[Vec<f64>],
    votes: Option<&[Vec<f64>]>,
    alpha: f32,
    truth: &[usize],
) -> (f64, f64) {
    let mut right = 0usize;
    let mut nll = 0.0;
    for (row, (logits, &label)) in prompt_logits.iter().zip(truth).enumerate() {
        let logit = |c: usize| {
            let vote = votes.map_or(0.0, |v| v[row][c]);
            logits[c] + f64::from(alpha) * vote
        };
        let all: Vec<f64> = (0..logits.len()).map(logit).collect();
        let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = all.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
        nll += log_sum - all[label];
        // Ties count against: the first maximum must be the label itself.
        if all.iter().position(|&l| l == max) == Some(label) {
            right += 1;
        }
    }
    let n = truth.len().max(1) as f64;
    (right as f64 / n, nll / n)
}

/// `v` scaled to unit length (a zero vector stays zero).
fn unit(v: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(move |x| x * inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str) -> Class {
        Class {
            name: name.split('|').next().unwrap().to_string(),
            synonyms: name.split('|').map(str::to_string).collect(),
        }
    }

    fn zero_shot(similarities: &[f32]) -> Vec<Score> {
        let logits: Vec<f64> = similarities
            .iter()
            .map(|&s| f64::from(100f32.ln()).exp() * f64::from(s))
            .collect();
        score::rank_logits(&logits, similarities)
    }

    #[test]
    fn examples_outvote_the_prompts_near_them() {
        // The prompts prefer class 0 slightly; the image sits on class 1's examples.
        let mut cache = TipAdapterCache::new(2, 2);
        cache.add(1, &[0.0, 3.0]).unwrap();
        cache.add(1, &[0.1, 1.0]).unwrap();
        cache.add(0, &[1.0, 0.0]).unwrap();
        assert_eq!(cache.counts(), [1, 2]);
        let image = [0.0, 2.0];
        let scores = zero_shot(&[0.30, 0.29]);
        assert_eq!(scores[0].index, 0);
        let ranked = cache.rank(
            &image,
            &scores,
            100f32.ln(),
            TipParams::new(5.0, 5.5).unwrap(),
        );
        assert_eq!(ranked[0].index, 1);
        // The reported similarity stays the prompt cosine.
        assert_eq!(ranked[0].similarity, 0.29);
        let total: f32 = ranked.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_vote_is_tip_adapters_affinity_sum() {
        let mut cache = TipAdapterCache::new(2, 2);
        cache.add(0, &[1.0, 0.0]).unwrap();
        cache.add(0, &[0.0, 1.0]).unwrap();
        let votes = cache.affinities(&[2.0, 0.0], 2.0);
        // cos 1 → exp(0) = 1; cos 0 → exp(-2).
        assert!((votes[0] - (1.0 + (-2.0f64).exp())).abs() < 1e-6);
        assert_eq!(votes[1], 0.0);
    }

    #[test]
    fn weight_zero_is_zero_shot_and_a_label_without_examples_keeps_its_logit() {
        let mut cache = TipAdapterCache::new(3, 2);
        cache.add(0, &[1.0, 0.0]).unwrap();
        let scores = zero_shot(&[0.2, 0.25, 0.1]);
        let off = cache.rank(
            &[1.0, 0.2],
            &scores,
            100f32.ln(),
            TipParams::new(0.0, 5.5).unwrap(),
        );
        assert_eq!(off, scores);
        let on = cache.rank(&[1.0, 0.2], &scores, 100f32.ln(), TipParams::default());
        let p = |s: &[Score], i| s.iter().find(|s| s.index == i).unwrap().probability;
        // Labels 1 and 2 have no examples: their odds against each other are unchanged.
        let before = p(&scores, 1) / p(&scores, 2);
        let after = p(&on, 1) / p(&on, 2);
        assert!((before / after - 1.0).abs() < 1e-4, "{before} vs {after}");
        assert!(p(&on, 0) > p(&scores, 0));
    }

    /// `per_class` examples of each of 2 classes on the unit circle at `angle(class, i)`
    /// degrees, with prompt cosines favouring class `prompt_class(k)` for example `k`.
    fn circle(
        per_class: usize,
        angle: impl Fn(usize, usize) -> f32,
        prompt_right: bool,
    ) -> (TipAdapterCache, Vec<Vec<f32>>) {
        let mut cache = TipAdapterCache::new(2, 2);
        let mut sims = Vec::new();
        for class in 0..2 {
            for i in 0..per_class {
                let a = angle(class, i).to_radians();
                cache.add(class, &[a.cos(), a.sin()]).unwrap();
                let favoured = if prompt_right { class } else { 1 - class };
                let mut row = vec![0.20, 0.20];
                row[favoured] = 0.22;
                sims.push(row);
            }
        }
        (cache, sims)
    }

    #[test]
    fn tuning_trusts_clustered_examples_over_wrong_prompts() {
        // Class 0 near 0 degrees, class 1 near 90; the prompts get every example wrong.
        let (cache, sims) = circle(5, |c, i| 90.0 * c as f32 + 3.0 * i as f32, false);
        let tuned = cache.tune(&sims, 100f32.ln(), None, None).unwrap();
        assert_eq!(tuned.zero_shot_accuracy, 0.0);
        assert_eq!(tuned.accuracy, 1.0);
        assert!(tuned.params.weight > 0.0, "{tuned:?}");
        assert_eq!(tuned.held_out, 10);
    }

    #[test]
    fn tuning_leaves_each_example_out_of_its_own_cache() {
        // Each example's nearest *other* example is of the other class (classes interleave
        // around the circle 20 degrees apart), while the prompts are right. Counting an
        // example's own key would vote for its own class and make a large weight look
        // perfect; left out, the examples only mislead, so the prompts alone win.
        let (cache, sims) = circle(4, |c, i| 40.0 * i as f32 + 20.0 * c as f32, true);
        let tuned = cache.tune(&sims, 100f32.ln(), None, None).unwrap();
        assert_eq!(tuned.zero_shot_accuracy, 1.0);
        assert_eq!(tuned.params.weight, 0.0, "{tuned:?}");
    }

    #[test]
    fn tuning_needs_enough_examples_and_keeps_given_values() {
        let (cache, sims) = circle(3, |c, i| 90.0 * c as f32 + i as f32, false);
        assert_eq!(
            cache.tune(&sims, 100f32.ln(), None, None),
            Err(NotTuned::TooFew { class: 0, count: 3 })
        );
        let (cache, sims) = circle(4, |c, i| 90.0 * c as f32 + i as f32, false);
        assert_eq!(
            cache.tune(&sims, 100f32.ln(), Some(2.0), Some(3.0)),
            Err(NotTuned::Given)
        );
        let tuned = cache.tune(&sims, 100f32.ln(), Some(7.0), None).unwrap();
        assert_eq!(tuned.params.weight, 7.0);
        assert!(SHARPNESS_GRID.contains(&tuned.params.sharpness));
        let tuned = cache.tune(&sims, 100f32.ln(), None, Some(9.0)).unwrap();
        assert_eq!(tuned.params.sharpness, 9.0);
        assert!(WEIGHT_GRID.contains(&tuned.params.weight));
    }

    #[test]
    fn bad_parameters_and_dimensions_are_refused() {
        assert!(TipParams::new(-1.0, 1.0).is_err());
        assert!(TipParams::new(1.0, f32::NAN).is_err());
        assert!(TipParams::new(0.0, 0.0).is_ok());
        let mut cache = TipAdapterCache::new(2, 3);
        assert!(matches!(
            cache.add(0, &[1.0, 0.0]),
            Err(FewShotError::Dimension { got: 2, want: 3 })
        ));
        assert!(cache.add(2, &[1.0, 0.0, 0.0]).is_err());
        assert!(cache.is_empty());
    }

    #[test]
    fn folders_match_labels_or_synonyms_and_unknown_ones_are_named() {
        let classes = [class("cat|kitten"), class("dog")];
        let dir = Path::new("examples");
        let folders = ["dog".to_string(), "kitten".to_string()];
        assert_eq!(match_folders(dir, &folders, &classes).unwrap(), [1, 0]);
        let err = match_folders(dir, &["horse".to_string()], &classes).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"horse\"") && message.contains("cat, dog"),
            "{message}"
        );
        let twice = ["cat".to_string(), "kitten".to_string()];
        assert!(matches!(
            match_folders(dir, &twice, &classes),
            Err(FewShotError::LabelTwice { .. })
        ));
    }
}
