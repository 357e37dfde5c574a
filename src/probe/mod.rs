//! Linear probes: a multinomial logistic-regression head trained on a checkpoint's
//! L2-normalised image embeddings, saved as a safetensors file, and used instead of text
//! prompts.
//!
//! Training is full-batch AdamW on the mean cross-entropy plus `l2 / 2 · ‖W‖²` (the bias is
//! not penalised), from zero weights: the loss is convex, so zeros lose nothing and make a
//! run reproducible without any random numbers. Each epoch the held-out cross-entropy is
//! measured; the weights of the best epoch are kept, and training stops once it has not
//! improved for `patience` epochs.
//!
//! The file holds `weight` (labels × embedding size, F32) and `bias` (labels, F32) and, in
//! the safetensors `__metadata__`, the format and its version, the label names (a JSON
//! array), the model id and revision, the embedding size, the model fingerprint (see
//! [`ModelIdentity`]) and how it was trained. Its bytes depend only on the embeddings and the
//! options, so the same data and seed give the same file.
//!
//! For an image `x` (normalised), the probe's logits are `W x + b` and the probabilities
//! their softmax. The reported `similarity` is the label's logit: unlike a cosine it is not
//! bounded, and only differences between labels matter.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use sha2::{Digest, Sha256};

use crate::checkpoint::Checkpoint;
use crate::score::{self, Score};
use crate::source::ModelFiles;

mod dataset;
pub use dataset::{check_dataset, train_on, Trained};

/// What the `format` metadata of a probe file says.
pub const FORMAT: &str = "vlm-linear-probe";
/// The probe file layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Default L2 penalty on the weights.
pub const DEFAULT_L2: f64 = 1e-4;
/// Default AdamW step size.
pub const DEFAULT_LEARNING_RATE: f64 = 0.05;
/// Default most epochs (full passes over the training images).
pub const DEFAULT_EPOCHS: usize = 1000;
/// Default epochs without a better held-out loss before training stops.
pub const DEFAULT_PATIENCE: usize = 50;

/// Larger files are not probes (a 10,000-label probe of 1,024-value embeddings is 41 MB).
const MAX_FILE_BYTES: u64 = 1 << 30;
/// Bytes read from each of [`WEIGHT_SAMPLES`] places of the weights file to fingerprint it.
const WEIGHT_SAMPLE_BYTES: u64 = 64 << 10;
const WEIGHT_SAMPLES: u64 = 16;

/// Why a probe cannot be trained, written or used.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {}: {cause}; choose another --out or free some space", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not a vlm probe: {reason}; train one with `vlm fit DIR --out FILE`", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{} is a version {found} probe, this vlm reads version {FORMAT_VERSION}; train it again with `vlm fit`", path.display())]
    Version { path: PathBuf, found: String },
    #[error(
        "{} was trained on {probe}, not on {current}; use it with --model {probe_id}, or train a \
         probe for this model with `vlm fit`",
        path.display()
    )]
    OtherModel {
        path: PathBuf,
        probe: String,
        probe_id: String,
        current: String,
    },
    #[error("cannot train a probe: {0}")]
    Data(String),
    #[error("{what} must be {expected}, got {value}")]
    Option {
        what: &'static str,
        expected: &'static str,
        value: f64,
    },
    #[error("training failed: {0}")]
    Train(candle_core::Error),
    #[error("internal error: {results} embedding results for {images} images; please report this")]
    Mismatch { results: usize, images: usize },
    /// Scoring the labels as prompts failed.
    #[error(transparent)]
    Embed(#[from] crate::error::Error),
}

/// The embedding space a probe belongs to: which checkpoint, and a fingerprint of what makes
/// its embeddings what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    /// The model as it was named (repo id, alias's repo or directory); for messages only.
    pub id: String,
    /// Hub revision, if any; for messages only.
    pub revision: Option<String>,
    /// Values per embedding.
    pub dim: usize,
    /// SHA-256 (hex) of the architecture, the preprocessing, the numeric type, and the
    /// weights file's size and 16 evenly spaced 64 KiB samples of it.
    pub fingerprint: String,
    /// The image preprocessing and numeric type, readable (the fingerprint covers them);
    /// for people inspecting a probe file.
    pub preprocessing: String,
}

impl ModelIdentity {
    /// The identity of a loaded checkpoint. The weights are sampled rather than hashed whole
    /// (1 MiB read instead of gigabytes): a different checkpoint differs almost everywhere,
    /// and unlike the embedding cache's key, a copied or re-downloaded checkpoint keeps its
    /// identity.
    pub fn of(files: &ModelFiles, classifier: &Checkpoint) -> Result<Self, ProbeError> {
        let read_err = |source| ProbeError::Read {
            path: files.weights.clone(),
            cause: source,
        };
        let mut file = std::fs::File::open(&files.weights).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let mut h = Sha256::new();
        h.update(b"vlm model fingerprint v1\0");
        let mut field = |text: &str| {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        };
        field(&format!("{:?}", classifier.config()));
        field(&format!("{:?}", classifier.preprocessor().config()));
        field(&classifier.numeric_fingerprint());
        h.update(len.to_le_bytes());
        let span = len.saturating_sub(WEIGHT_SAMPLE_BYTES);
        let mut sample = Vec::new();
        for i in 0..WEIGHT_SAMPLES {
            let offset = span / (WEIGHT_SAMPLES - 1) * i;
            file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
            sample.clear();
            Read::by_ref(&mut file)
                .take(WEIGHT_SAMPLE_BYTES)
                .read_to_end(&mut sample)
                .map_err(read_err)?;
            h.update(&sample);
        }
        Ok(Self {
            id: files.id.clone(),
            revision: files.revision.clone(),
            dim: classifier.config().projection_dim,
            fingerprint: hex(&h.finalize()),
            preprocessing: format!(
                "{:?}; {}",
                classifier.preprocessor().config(),
                classifier.numeric_fingerprint()
            ),
        })
    }

    /// "ID (revision R, N-value embeddings, fingerprint F…)" for messages.
    pub fn describe(&self) -> String {
        let revision = self
            .revision
            .as_ref()
            .map(|r| format!("revision {r}, "))
            .unwrap_or_default();
        let short = self.fingerprint.get(..12).unwrap_or(&self.fingerprint);
        format!(
            "{} ({revision}{}-value embeddings, fingerprint {short})",
            self.id, self.dim
        )
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// L2 penalty `l2 / 2 · ‖W‖²` added to the mean cross-entropy.
    pub l2: f64,
    /// AdamW step size.
    pub learning_rate: f64,
    /// Most full-batch steps.
    pub max_epochs: usize,
    /// Stop after this many epochs without a lower held-out loss.
    pub patience: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            l2: DEFAULT_L2,
            learning_rate: DEFAULT_LEARNING_RATE,
            max_epochs: DEFAULT_EPOCHS,
            patience: DEFAULT_PATIENCE,
        }
    }
}

impl TrainOptions {
    /// Checks the options (before any image is embedded, so mistakes show at once).
    pub fn check(&self) -> Result<(), ProbeError> {
        let option = |what, expected, value| {
            Err(ProbeError::Option {
                what,
                expected,
                value,
            })
        };
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return option("--l2", "a finite number of at least 0", self.l2);
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return option("--learning-rate", "a positive number", self.learning_rate);
        }
        if self.max_epochs == 0 {
            return option("--epochs", "at least 1", 0.0);
        }
        Ok(())
    }
}

/// One training or held-out image: its (not necessarily normalised) embedding and class.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub embedding: &'a [f32],
    pub label: usize,
}

/// How training went.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Epochs run before stopping.
    pub epochs: usize,
    /// The epoch whose weights were kept (0: the all-zero start).
    pub best_epoch: usize,
    /// Share of the training images the probe gets right.
    pub train_accuracy: f64,
    /// Share of the held-out images it gets right; `None` without held-out images.
    pub held_out_accuracy: Option<f64>,
    /// Mean held-out cross-entropy of the kept weights.
    pub held_out_loss: Option<f64>,
}

/// A trained linear probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    labels: Vec<String>,
    model: ModelIdentity,
    /// Row-major, one row of `model.dim` values per label.
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// How it was trained, as written to the file's metadata under `train_*` keys.
    training: BTreeMap<String, String>,
}

impl Probe {
    /// Trains a probe for `labels` on `train`, stopping early on `held_out` (which may be
    /// empty: then every epoch runs and the last weights are kept).
    pub fn train(
        labels: Vec<String>,
        model: ModelIdentity,
        train: &[Sample],
        held_out: &[Sample],
        options: &TrainOptions,
    ) -> Result<(Self, TrainReport), ProbeError> {
        options.check()?;
        if labels.len() < 2 {
            return Err(ProbeError::Data(format!(
                "{} label given; a probe needs at least two",
                labels.len()
            )));
        }
        if train.is_empty() {
            return Err(ProbeError::Data("no training images".into()));
        }
        for sample in train.iter().chain(held_out) {
            if sample.embedding.len() != model.dim {
                return Err(ProbeError::Data(format!(
                    "an embedding has {} values, the model's have {}",
                    sample.embedding.len(),
                    model.dim
                )));
            }
            if sample.label >= labels.len() {
                return Err(ProbeError::Data(format!(
                    "label index {} out of {} labels",
                    sample.label,
                    labels.len()
                )));
            }
        }
        let (weight, bias, epochs, best_epoch, held_out_loss) =
            fit(labels.len(), model.dim, train, held_out, options).map_err(ProbeError::Train)?;
        let mut probe = Self {
            labels,
            model,
            weight,
            bias,
            training: BTreeMap::new(),
        };
        let report = TrainReport {
            epochs,
            best_epoch,
            train_accuracy: probe.accuracy(train),
            held_out_accuracy: (!held_out.is_empty()).then(|| probe.accuracy(held_out)),
            held_out_loss,
        };
        for (key, value) in [
            ("l2", options.l2.to_string()),
            ("learning_rate", options.learning_rate.to_string()),
            ("max_epochs", options.max_epochs.to_string()),
            ("patience", options.patience.to_string()),
            ("epochs", epochs.to_string()),
            ("best_epoch", best_epoch.to_string()),
            ("images", train.len().to_string()),
            ("held_out_images", held_out.len().to_string()),
        ] {
            probe.training.insert(key.to_string(), value);
        }
        Ok((probe, report))
    }

    /// Adds a note on how the probe was made (e.g. the split seed) to the file's metadata,
    /// as `train_<key>`.
    pub fn note(&mut self, key: &str, value: impl ToString) {
        self.training.insert(key.to_string(), value.to_string());
    }

    /// The notes on how the probe was trained.
    pub fn training(&self) -> &BTreeMap<String, String> {
        &self.training
    }

    /// The label names, in the order of the weight rows.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The model whose embeddings the probe was trained on.
    pub fn model(&self) -> &ModelIdentity {
        &self.model
    }

    /// The weights, one row per label.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The bias, one per label.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Refuses to run on another model's embeddings; `path` names the probe in the error.
    pub fn check_model(&self, path: &Path, current: &ModelIdentity) -> Result<(), ProbeError> {
        if self.model.fingerprint == current.fingerprint && self.model.dim == current.dim {
            return Ok(());
        }
        Err(ProbeError::OtherModel {
            path: path.to_path_buf(),
            probe: self.model.describe(),
            probe_id: self.model.id.clone(),
            current: current.describe(),
        })
    }

    /// The logits `W x + b` of one image, with `x` its normalised embedding.
    pub fn logits(&self, embedding: &[f32]) -> Vec<f64> {
        let x = unit(embedding);
        self.rows()
            .zip(&self.bias)
            .map(|(row, &b)| dot(row, &x) + f64::from(b))
            .collect()
    }

    /// Ranks the labels for one image: softmax of the logits, highest first; `similarity` is
    /// the label's logit.
    pub fn rank(&self, embedding: &[f32]) -> Vec<Score> {
        let logits = self.logits(embedding);
        let reported: Vec<f32> = logits.iter().map(|&l| l as f32).collect();
        score::rank_logits(&logits, &reported)
    }

    /// The share of `samples` whose top label is theirs (0 for none).
    pub fn accuracy(&self, samples: &[Sample]) -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let right = samples
            .iter()
            .filter(|s| self.rank(s.embedding).first().map(|top| top.index) == Some(s.label))
            .count();
        right as f64 / samples.len() as f64
    }

    fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.weight.chunks_exact(self.model.dim.max(1))
    }

    /// Writes the probe to `path` (replacing it whole: a temporary file is renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), ProbeError> {
        let write_err = |source| ProbeError::Write {
            path: path.to_path_buf(),
            cause: source,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            file.write_all(&self.to_bytes())?;
            file.sync_all()
        });
        if let Err(err) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(write_err(err));
        }
        Ok(())
    }

    /// The safetensors bytes of the probe.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (classes, dim) = (self.labels.len(), self.model.dim);
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), FORMAT.to_string());
        metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        metadata.insert(
            "labels".to_string(),
            serde_json::Value::from(self.labels.clone()).to_string(),
        );
        metadata.insert("model_id".to_string(), self.model.id.clone());
        if let Some(revision) = &self.model.revision {
            metadata.insert("model_revision".to_string(), revision.clone());
        }
        metadata.insert(
            "model_fingerprint".to_string(),
            self.model.fingerprint.clone(),
        );
        metadata.insert("embedding_dim".to_string(), dim.to_string());
        metadata.insert(
            "model_preprocessing".to_string(),
            self.model.preprocessing.clone(),
        );
        for (key, value) in &self.training {
            metadata.insert(format!("train_{key}"), value.clone());
        }
        let bias_end = 4 * classes;
        let header = serde_json::json!({
            "__metadata__": metadata,
            "bias": {"dtype": "F32", "shape": [classes], "data_offsets": [0, bias_end]},
            "weight": {
                "dtype": "F32",
                "shape": [classes, dim],
                "data_offsets": [bias_end, bias_end + 4 * classes * dim],
            },
        });
        let mut header = header.to_string().into_bytes();
        // safetensors pads the header with spaces so that the data is 8-byte aligned.
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut bytes = Vec::with_capacity(8 + header.len() + 4 * (classes + classes * dim));
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for value in self.bias.iter().chain(&self.weight) {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Reads a probe written by [`Self::save`].
    pub fn load(path: &Path) -> Result<Self, ProbeError> {
        let read_err = |source| ProbeError::Read {
            path: path.to_path_buf(),
            cause: source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_FILE_BYTES {
            return Err(ProbeError::Format {
                path: path.to_path_buf(),
                reason: format!("it has {len} bytes, more than any probe"),
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses probe bytes; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ProbeError> {
        let bad = |reason: String| ProbeError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let metadata = read_metadata(bytes).map_err(bad)?;
        let get = |key: &str| {
            metadata
                .get(key)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad(format!("its metadata has no {key:?}")))
        };
        if get("format")? != FORMAT {
            return Err(bad(format!("its format is {:?}", get("format")?)));
        }
        let version = get("format_version")?;
        if version != FORMAT_VERSION.to_string() {
            return Err(ProbeError::Version {
                path: path.to_path_buf(),
                found: version.to_string(),
            });
        }
        let labels: Vec<String> = serde_json::from_str(get("labels")?)
            .map_err(|e| bad(format!("its labels are not a JSON list of names: {e}")))?;
        if labels.is_empty() {
            return Err(bad("it has no labels".into()));
        }
        let dim: usize = get("embedding_dim")?
            .parse()
            .map_err(|_| bad("its embedding_dim is not a number".into()))?;
        let model = ModelIdentity {
            id: get("model_id")?.to_string(),
            revision: get("model_revision").ok().map(str::to_string),
            dim,
            fingerprint: get("model_fingerprint")?.to_string(),
            preprocessing: get("model_preprocessing")
                .map(str::to_string)
                .unwrap_or_default(),
        };
        let training = metadata
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("train_")?.to_string(), v.as_str()?)))
            .map(|(k, v)| (k, v.to_string()))
            .collect();

        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| bad(format!("its tensors cannot be read: {e}")))?;
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ProbeError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("it has no {name:?} tensor")))?;
            if t.dtype() != DType::F32 || t.dims() != shape {
                return Err(bad(format!(
                    "its {name:?} tensor is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.dims()
                )));
            }
            let values = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| bad(format!("its {name:?} tensor cannot be read: {e}")))?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("its {name:?} tensor has non-finite values")));
            }
            Ok(values)
        };
        let weight = tensor("weight", &[labels.len(), dim])?;
        let bias = tensor("bias", &[labels.len()])?;
        Ok(Self {
            labels,
            model,
            weight,
            bias,
            training,
        })
    }
}

/// The `__metadata__` object of safetensors bytes.
fn read_metadata(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let (len, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or("it is shorter than a safetensors header")?;
    let len = usize::try_from(u64::from_le_bytes(*len))
        .ok()
        .filter(|&n| n <= rest.len())
        .ok_or("its header length runs past the end of the file")?;
    let header: serde_json::Value = serde_json::from_slice(&rest[..len])
        .map_err(|e| format!("its header is not safetensors JSON: {e}"))?;
    header
        .get("__metadata__")
        .and_then(serde_json::Value::as_object)
        .cloned()
        .ok_or_else(|| "it has no metadata".to_string())
}

/// Full-batch training; returns (weight, bias, epochs run, best epoch, held-out loss).
type Fitted = (Vec<f32>, Vec<f32>, usize, usize, Option<f64>);

fn fit(
    classes: usize,
    dim: usize,
    train: &[Sample],
    held_out: &[Sample],
    options: &TrainOptions,
) -> candle_core::Result<Fitted> {
    let device = Device::Cpu;
    let batch = |samples: &[Sample]| -> candle_core::Result<(Tensor, Tensor)> {
        let flat: Vec<f32> = samples
            .iter()
            .flat_map(|s| unit(s.embedding).into_iter().map(|v| v as f32))
            .collect();
        let labels: Vec<u32> = samples.iter().map(|s| s.label as u32).collect();
        Ok((
            Tensor::from_vec(flat, (samples.len(), dim), &device)?,
            Tensor::from_vec(labels, samples.len(), &device)?,
        ))
    };
    let (x, y) = batch(train)?;
    let held = if held_out.is_empty() {
        None
    } else {
        Some(batch(held_out)?)
    };
    let w = Var::zeros((classes, dim), DType::F32, &device)?;
    let b = Var::zeros(classes, DType::F32, &device)?;
    let forward = |x: &Tensor| x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor());
    let held_loss = |held: &(Tensor, Tensor)| -> candle_core::Result<f64> {
        let loss = candle_nn::loss::cross_entropy(&forward(&held.0)?, &held.1)?;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    };
    let mut optimizer = AdamW::new(
        vec![w.clone(), b.clone()],
        ParamsAdamW {
            lr: options.learning_rate,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let snapshot = || -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            w.as_tensor().flatten_all()?.to_vec1()?,
            b.as_tensor().to_vec1()?,
        ))
    };
    let mut best = snapshot()?;
    let mut best_loss = held.as_ref().map(held_loss).transpose()?;
    let (mut best_epoch, mut epochs) = (0, 0);
    while epochs < options.max_epochs {
        epochs += 1;
        let data_loss = candle_nn::loss::cross_entropy(&forward(&x)?, &y)?;
        let penalty = (w.as_tensor().sqr()?.sum_all()? * (options.l2 / 2.0))?;
        optimizer.backward_step(&(data_loss + penalty)?)?;
        match (&held, best_loss) {
            (Some(held), Some(so_far)) => {
                let loss = held_loss(held)?;
                if loss < so_far {
                    best = snapshot()?;
                    best_loss = Some(loss);
                    best_epoch = epochs;
                } else if epochs - best_epoch >= options.patience {
                    break;
                }
            }
            _ => {
                best_epoch = epochs;
            }
        }
    }
    if held.is_none() {
        best = snapshot()?;
    }
    Ok((best.0, best.1, epochs, best_epoch, best_loss))
}

/// `v` scaled to unit length, in f64 (a zero vector stays zero).
fn unit(v: &[f32]) -> Vec<f64> {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|&x| f64::from(x) * inv).collect()
}

fn dot(row: &[f32], x: &[f64]) -> f64 {
    row.iter().zip(x).map(|(&w, &v)| f64::from(w) * v).sum()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dim: usize, fingerprint: &str) -> ModelIdentity {
        ModelIdentity {
            id: format!("model-{fingerprint}"),
            revision: None,
            dim,
            fingerprint: fingerprint.to_string(),
            preprocessing: "test preprocessing".to_string(),
        }
    }

    /// `per_class` noisy points around each of `classes` directions in 8 dimensions.
    fn toy(classes: usize, per_class: usize, seed: u64) -> Vec<(Vec<f32>, usize)> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 1000.0 - 0.5
        };
        let mut out = Vec::new();
        for c in 0..classes {
            for _ in 0..per_class {
                // A shared offset, as real embeddings have, makes the classes close in cosine.
                let v: Vec<f32> = (0..8)
                    .map(|d| 2.0 + if d == c { 1.0 } else { 0.0 } + 0.3 * noise())
                    .collect();
                out.push((v, c));
            }
        }
        out
    }

    fn samples(data: &[(Vec<f32>, usize)]) -> Vec<Sample<'_>> {
        data.iter()
            .map(|(e, l)| Sample {
                embedding: e,
                label: *l,
            })
            .collect()
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class {i}")).collect()
    }

    #[test]
    fn separable_classes_are_learned_perfectly() {
        let (train, held) = (toy(3, 12, 1), toy(3, 6, 2));
        let (probe, report) = Probe::train(
            labels(3),
            identity(8, "a"),
            &samples(&train),
            &samples(&held),
            &TrainOptions::default(),
        )
        .unwrap();
        assert_eq!(report.train_accuracy, 1.0);
        assert_eq!(report.held_out_accuracy, Some(1.0));
        assert!(report.best_epoch > 0 && report.epochs >= report.best_epoch);
        let top = &probe.rank(&train[0].0)[0];
        assert_eq!(top.index, 0);
        assert!(top.probability > 0.5);
        let logits = probe.logits(&train[0].0);
        assert_eq!(top.similarity, logits[0] as f32);
    }

    #[test]
    fn early_stopping_keeps_the_best_held_out_epoch() {
        // Held-out images with wrong labels: the more confident the probe, the worse it
        // does on them, so the best held-out loss comes early.
        let train = toy(3, 8, 3);
        let mut held = toy(3, 4, 4);
        for (i, sample) in held.iter_mut().enumerate() {
            if i % 2 == 0 {
                sample.1 = (sample.1 + 1) % 3;
            }
        }
        let options = TrainOptions {
            patience: 5,
            ..TrainOptions::default()
        };
        let (_, report) = Probe::train(
            labels(3),
            identity(8, "a"),
            &samples(&train),
            &samples(&held),
            &options,
        )
        .unwrap();
        assert!(report.epochs < options.max_epochs, "{report:?}");
        assert_eq!(report.epochs - report.best_epoch, options.patience);
    }

    #[test]
    fn regularisation_shrinks_the_weights() {
        let train = toy(3, 10, 5);
        let norm = |l2| {
            let options = TrainOptions {
                l2,
                max_epochs: 300,
                ..TrainOptions::default()
            };
            let (probe, _) =
                Probe::train(labels(3), identity(8, "a"), &samples(&train), &[], &options).unwrap();
            probe.weight().iter().map(|w| w * w).sum::<f32>().sqrt()
        };
        let (free, penalised) = (norm(0.0), norm(0.1));
        assert!(penalised < 0.5 * free, "{penalised} vs {free}");
    }

    #[test]
    fn training_is_reproducible_and_round_trips_through_the_file() {
        let (train, held) = (toy(4, 6, 6), toy(4, 2, 7));
        let run = || {
            let (mut probe, _) = Probe::train(
                labels(4),
                identity(8, "a"),
                &samples(&train),
                &samples(&held),
                &TrainOptions::default(),
            )
            .unwrap();
            probe.note("seed", 7);
            probe
        };
        let (first, second) = (run(), run());
        assert_eq!(first.to_bytes(), second.to_bytes());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.safetensors");
        first.save(&path).unwrap();
        let loaded = Probe::load(&path).unwrap();
        assert_eq!(loaded, first);
        assert_eq!(loaded.training()["seed"], "7");
        assert_eq!(std::fs::read(&path).unwrap(), first.to_bytes());
        // Any safetensors reader sees the two tensors.
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert_eq!(tensors["weight"].dims(), [4, 8]);
        assert_eq!(tensors["bias"].dims(), [4]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn another_models_embeddings_are_refused() {
        let train = toy(2, 4, 8);
        let (probe, _) = Probe::train(
            labels(2),
            identity(8, "aaaa"),
            &samples(&train),
            &[],
            &TrainOptions {
                max_epochs: 10,
                ..TrainOptions::default()
            },
        )
        .unwrap();
        let path = Path::new("p.safetensors");
        assert!(probe.check_model(path, &identity(8, "aaaa")).is_ok());
        for other in [identity(8, "bbbb"), identity(16, "aaaa")] {
            let message = probe.check_model(path, &other).unwrap_err().to_string();
            assert!(
                message.contains("p.safetensors")
                    && message.contains("model-aaaa")
                    && message.contains(&other.id),
                "{message}"
            );
        }
    }

    #[test]
    fn damaged_and_foreign_files_are_refused() {
        let train = toy(2, 3, 9);
        let options = TrainOptions {
            max_epochs: 5,
            ..TrainOptions::default()
        };
        let (probe, _) =
            Probe::train(labels(2), identity(8, "a"), &samples(&train), &[], &options).unwrap();
        let bytes = probe.to_bytes();
        let path = Path::new("p.safetensors");
        let format =
            |b: &[u8]| matches!(Probe::from_bytes(b, path), Err(ProbeError::Format { .. }));
        assert!(format(&bytes[..4]));
        assert!(format(&bytes[..bytes.len() - 4]));
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(format(&huge));
        // A model's weights file is safetensors too, but not a probe.
        let plain = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&std::collections::HashMap::from([("w", plain)]), &weights)
            .unwrap();
        let message = Probe::load(&weights).unwrap_err().to_string();
        assert!(
            message.contains("not a vlm probe") && message.contains("vlm fit"),
            "{message}"
        );
        let mut newer = bytes.clone();
        let key = b"\"format_version\":\"1\"";
        let at = newer.windows(key.len()).position(|w| w == key).unwrap();
        newer[at + key.len() - 2] = b'9';
        assert!(matches!(
            Probe::from_bytes(&newer, path),
            Err(ProbeError::Version { .. })
        ));
    }

    #[test]
    fn bad_training_input_is_refused() {
        let train = toy(2, 2, 10);
        let model = identity(8, "a");
        let options = TrainOptions::default();
        assert!(Probe::train(labels(1), model.clone(), &samples(&train), &[], &options).is_err());
        assert!(Probe::train(labels(2), model.clone(), &[], &[], &options).is_err());
        assert!(
            Probe::train(labels(2), identity(4, "a"), &samples(&train), &[], &options).is_err()
        );
        let negative = TrainOptions {
            l2: -1.0,
            ..TrainOptions::default()
        };
        let message = Probe::train(labels(2), model, &samples(&train), &[], &negative)
            .unwrap_err()
            .to_string();
        assert!(message.contains("--l2"), "{message}");
    }
}
