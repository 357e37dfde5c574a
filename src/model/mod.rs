//! The CLIP encoders, written on candle-nn with weights read through a `VarBuilder`.
//!
//! candle-transformers' own `clip` module is not used: it supports only QuickGELU, fixes
//! the layer-norm epsilon, replaces missing tensors with random or default values, and
//! takes hand-written configs, so it cannot match transformers on the checkpoints we
//! support (LAION's ports use GELU) nor refuse a broken file.

mod layers;
mod text;
mod vision;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::ClipConfig;
use text::TextTower;
use vision::VisionTower;

pub(crate) use layers::l2_normalize;

/// Why a checkpoint's weights could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "cannot load weights from {}: {source}; the file is damaged or does not match its config.json — \
         re-download the checkpoint (delete it from the cache) or point --model at a complete directory",
        path.display()
    )]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("{} is neither .safetensors nor a PyTorch .bin/.pt/.pth file; vlm reads those two formats", path.display())]
    WeightsFormat { path: PathBuf },
    #[error("the model failed while encoding {what}: {source}")]
    Run {
        what: &'static str,
        #[source]
        source: candle_core::Error,
    },
}

/// A loaded CLIP model: both encoders and the learned logit scale.
pub struct ClipModel {
    text: TextTower,
    vision: VisionTower,
    logit_scale: f32,
    device: Device,
}

impl ClipModel {
    /// Loads the weights in `weights` (safetensors, memory-mapped, or a PyTorch pickle read
    /// without running code) for the architecture in `config`. Half-precision weights are
    /// converted to f32 once, here.
    pub fn load(config: &ClipConfig, weights: &Path, device: &Device) -> Result<Self, ModelError> {
        let vb = open_weights(weights, DType::F32, device)?;
        let wrap = |source| ModelError::Weights {
            path: weights.to_path_buf(),
            source,
        };
        let text =
            TextTower::load(vb.clone(), &config.text, config.projection_dim).map_err(wrap)?;
        let vision =
            VisionTower::load(vb.clone(), &config.vision, config.projection_dim).map_err(wrap)?;
        let logit_scale = vb
            .get((), "logit_scale")
            .and_then(|t| t.to_dtype(DType::F32)?.to_scalar::<f32>())
            .map_err(wrap)?;
        Ok(Self {
            text,
            vision,
            logit_scale,
            device: device.clone(),
        })
    }

    /// The learned temperature, as stored (a log): logits are `exp(logit_scale) * cosine`.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The longest token sequence the text encoder accepts.
    pub fn text_context(&self) -> usize {
        self.text.context()
    }

    /// The side of the square pixel input.
    pub fn image_size(&self) -> usize {
        self.vision.image_size()
    }

    /// Projected, unnormalised text embeddings (rows follow `token_ids`). Each sequence
    /// must already be tokenised and truncated to [`Self::text_context`].
    pub fn encode_text(&self, token_ids: &[Vec<u32>]) -> Result<Tensor, ModelError> {
        self.text
            .forward(token_ids, &self.device)
            .map_err(|source| ModelError::Run {
                what: "text",
                source,
            })
    }

    /// Projected, unnormalised image embeddings for `pixels` of shape (batch, 3, size, size).
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        self.vision
            .forward(pixels)
            .map_err(|source| ModelError::Run {
                what: "images",
                source,
            })
    }
}

fn open_weights(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let wrap = |source| ModelError::Weights {
        path: path.to_path_buf(),
        source,
    };
    match path.extension().and_then(|e| e.to_str()) {
        // SAFETY: the mapping is read-only; like every mmap reader we rely on the file not
        // being truncated by another process while it is in use.
        Some("safetensors") => {
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }.map_err(wrap)
        }
        Some("bin" | "pt" | "pth") => VarBuilder::from_pth(path, dtype, device).map_err(wrap),
        _ => Err(ModelError::WeightsFormat {
            path: path.to_path_buf(),
        }),
    }
}
