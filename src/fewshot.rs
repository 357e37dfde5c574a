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
//! Labels with examples gain up to `α` per close example, labels without none, so with
//! examples for some labels only, the others are chosen less often: give every label a few.

use std::path::{Path, PathBuf};

use crate::cache::EmbeddingCache;
use crate::checkpoint::Classifier;
use crate::dataset::{Dataset, DatasetError};
use crate::embedder::{self, EmbedSummary};
use crate::error::Error;
use crate::family::Scoring;
use crate::inputs::{InputError, InputOptions};
use crate::labels::Class;
use crate::pipeline::PipelineOptions;
use crate::score::{self, Score};

/// Tip-Adapter's residual ratio α: how much the examples count against the prompts.
pub const DEFAULT_WEIGHT: f32 = 1.0;
/// Tip-Adapter's sharpness β: how quickly an example's vote fades with distance.
pub const DEFAULT_SHARPNESS: f32 = 5.5;

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

/// The example images as Tip-Adapter's key-value cache.
#[derive(Debug, Clone)]
pub struct ExampleCache {
    classes: usize,
    dim: usize,
    /// Normalised example embeddings, one row of `dim` values each.
    keys: Vec<f32>,
    /// The class of each key.
    labels: Vec<usize>,
}

impl ExampleCache {
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

    /// Re-ranks one image's zero-shot scores (from [`Classifier::rank_rows`], whose
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

/// Example images read and embedded.
pub struct Examples {
    pub cache: ExampleCache,
    /// Label names without any usable example: they are scored by their prompts alone.
    pub without_examples: Vec<String>,
    /// Example images that could not be embedded: (displayed path, why); they are left out.
    pub failed: Vec<(String, Error)>,
    /// Entries that could not be read while walking the folders.
    pub unreadable: Vec<InputError>,
    /// Entries skipped while walking (not images, hidden, outside a label folder).
    pub skipped: Vec<(PathBuf, String)>,
    /// The embedding run's statistics and cache warning.
    pub summary: EmbedSummary,
}

/// Reads `dir/<label>/` example folders, matches each folder to one of `classes` (by the
/// class name or any of its synonyms) and embeds the images through the [`embedder`], with
/// the embedding cache when one is given. A folder that matches no class is an error; an
/// image that cannot be embedded is reported in [`Examples::failed`] and left out.
pub fn load_examples(
    classifier: &Classifier,
    embedding_cache: Option<&EmbeddingCache>,
    dir: &Path,
    classes: &[Class],
    options: PipelineOptions,
) -> Result<Examples, FewShotError> {
    let dataset = Dataset::from_dir(dir, &InputOptions::default(), None)?;
    let class_of = match_folders(dir, &dataset.folders, classes)?;
    let labels: Vec<usize> = dataset.images.iter().map(|i| i.label).collect();
    let inputs = dataset.images.into_iter().map(|i| i.input).collect();
    let (embedded, summary) = embedder::embed_all(classifier, embedding_cache, inputs, options)?;
    let mut cache = ExampleCache::new(classes.len(), classifier.config().projection_dim);
    let mut failed = Vec::new();
    for (done, label) in embedded.into_iter().zip(labels) {
        match done.embedding {
            Ok(embedding) => cache.add(class_of[label], &embedding)?,
            Err(err) => failed.push((done.input.display, err)),
        }
    }
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
        summary,
    })
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
        let mut cache = ExampleCache::new(2, 2);
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
        let mut cache = ExampleCache::new(2, 2);
        cache.add(0, &[1.0, 0.0]).unwrap();
        cache.add(0, &[0.0, 1.0]).unwrap();
        let votes = cache.affinities(&[2.0, 0.0], 2.0);
        // cos 1 → exp(0) = 1; cos 0 → exp(-2).
        assert!((votes[0] - (1.0 + (-2.0f64).exp())).abs() < 1e-6);
        assert_eq!(votes[1], 0.0);
    }

    #[test]
    fn weight_zero_is_zero_shot_and_a_label_without_examples_keeps_its_logit() {
        let mut cache = ExampleCache::new(3, 2);
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

    #[test]
    fn bad_parameters_and_dimensions_are_refused() {
        assert!(TipParams::new(-1.0, 1.0).is_err());
        assert!(TipParams::new(1.0, f32::NAN).is_err());
        assert!(TipParams::new(0.0, 0.0).is_ok());
        let mut cache = ExampleCache::new(2, 3);
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
