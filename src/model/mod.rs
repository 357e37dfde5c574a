//! The CLIP encoders, written on candle-nn with weights read through a `VarBuilder`; on
//! the CPU in f32 the transformer layers run on the crate's packed kernels instead.
//!
//! candle-transformers' own `clip` module is not used: it supports only QuickGELU, fixes
//! the layer-norm epsilon, replaces missing tensors with random or default values, and
//! takes hand-written configs, so it cannot match transformers on the checkpoints we
//! support (LAION's ports use GELU) nor refuse a broken file.

mod layers;
mod text;
mod vision;
mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

pub mod config;

use config::ClipConfig;
use layers::Compute;
use text::TextTower;
use vision::VisionTower;

pub(crate) use layers::l2_normalize;

/// Why a checkpoint's weights could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "cannot load weights from {}: {cause}; the file is damaged or does not match its config.json — \
         re-download the checkpoint (delete it from the cache) or point --model at a complete directory",
        path.display()
    )]
    Weights {
        path: PathBuf,
        cause: candle_core::Error,
    },
    #[error("{} is neither .safetensors nor a PyTorch .bin/.pt/.pth file; vlm reads those two formats", path.display())]
    WeightsFormat { path: PathBuf },
    #[error("{dtype:?} is not supported on the {device}: {hint}")]
    DType {
        dtype: DType,
        device: &'static str,
        hint: &'static str,
    },
    #[error("the model failed while encoding {what}: {cause}")]
    Run {
        what: &'static str,
        cause: candle_core::Error,
    },
}

/// A loaded CLIP model: both encoders and the learned logit scale.
pub struct ClipModel {
    text: TextTower,
    vision: VisionTower,
    logit_scale: f32,
    dtype: DType,
    device: Device,
    compute: Compute,
}

impl ClipModel {
    /// Loads the weights in `weights` (safetensors, read straight into the tensors, or a
    /// PyTorch pickle read without running code) for the architecture in `config`, in f32:
    /// half-precision weights are converted once, here.
    pub fn load(config: &ClipConfig, weights: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::load_as(config, weights, device, DType::F32)
    }

    /// Like [`Self::load`], computing in `dtype` (f32, f16 or bf16). Inputs are converted to
    /// it and embeddings come back as f32.
    pub fn load_as(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let compute = match (device, dtype) {
            (Device::Cpu, DType::F32) => Compute::Packed(crate::kernels::Isa::detect()),
            (Device::Cpu, DType::BF16) => Compute::Amx,
            _ => Compute::Candle,
        };
        Self::load_for(config, weights, device, dtype, compute)
    }

    /// Like [`Self::load_as`], but on candle's tensor ops even where the packed CPU kernels
    /// would run: the reference the kernels are measured and tested against.
    pub fn load_on_candle(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        Self::load_for(config, weights, device, dtype, Compute::Candle)
    }

    fn load_for(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        dtype: DType,
        compute: Compute,
    ) -> Result<Self, ModelError> {
        check_dtype(dtype, device, compute, crate::kernels::amx_available())?;
        // The packed kernels read f32 weights and round them to their own type when packing.
        let stored = if compute == Compute::Candle {
            dtype
        } else {
            DType::F32
        };
        let vb = open_weights(weights, stored, device)?;
        let wrap = |source| ModelError::Weights {
            path: weights.to_path_buf(),
            cause: source,
        };
        let text = TextTower::load(vb.clone(), &config.text, config.projection_dim, compute)
            .map_err(wrap)?;
        let vision = VisionTower::load(vb.clone(), &config.vision, config.projection_dim, compute)
            .map_err(wrap)?;
        let logit_scale = vb
            .get((), "logit_scale")
            .and_then(|t| t.to_dtype(DType::F32)?.to_scalar::<f32>())
            .map_err(wrap)?;
        Ok(Self {
            text,
            vision,
            logit_scale,
            dtype,
            device: device.clone(),
            compute,
        })
    }

    /// Which implementation runs the encoders: `"candle"`, or the packed CPU kernels and
    /// the instruction set they use (`"packed avx512"`).
    pub fn kernels(&self) -> &'static str {
        match self.compute {
            Compute::Candle => "candle",
            Compute::Packed(isa) => isa.label(),
            Compute::Amx => "packed amx-bf16",
        }
    }

    /// The learned temperature, as stored (a log): logits are `exp(logit_scale) * cosine`.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The type the encoders compute in.
    pub fn dtype(&self) -> DType {
        self.dtype
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
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|source| ModelError::Run {
                what: "text",
                cause: source,
            })
    }

    /// Projected, unnormalised image embeddings for `pixels` of shape (batch, 3, size, size).
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let input = match self.compute {
            Compute::Candle => self.dtype,
            _ => DType::F32,
        };
        pixels
            .to_dtype(input)
            .and_then(|p| self.vision.forward(&p))
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|source| ModelError::Run {
                what: "images",
                cause: source,
            })
    }
}

/// Refuses a compute type the device cannot multiply matrices in, before loading anything.
/// `amx`: whether this CPU and OS run the AMX bf16 kernels.
fn check_dtype(
    dtype: DType,
    device: &Device,
    compute: Compute,
    amx: bool,
) -> Result<(), ModelError> {
    match (dtype, device) {
        (DType::F32 | DType::F16, _) => Ok(()),
        (DType::BF16, Device::Cuda(_) | Device::Metal(_)) => Ok(()),
        (DType::BF16, Device::Cpu) if compute == Compute::Amx && amx => Ok(()),
        (DType::BF16, Device::Cpu) if compute == Compute::Amx => Err(ModelError::DType {
            dtype,
            device: "CPU",
            hint: "bf16 on the CPU needs Intel AMX-BF16 (Xeon Sapphire Rapids or later, Linux) \
                   and this CPU or kernel has none; use --dtype f32",
        }),
        (DType::BF16, Device::Cpu) => Err(ModelError::DType {
            dtype,
            device: "CPU",
            hint: "candle has no bf16 matrix multiply on the CPU; use --dtype f32 (or f16)",
        }),
        (_, _) => Err(ModelError::DType {
            dtype,
            device: "this device",
            hint: "use --dtype f32, f16 or bf16",
        }),
    }
}

fn open_weights(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let wrap = |source| ModelError::Weights {
        path: path.to_path_buf(),
        cause: source,
    };
    let backend: Box<dyn SimpleBackend> = match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Box::new(
            weights::SafetensorsFile::open(path)
                .map_err(wrap)?
                .read_all(),
        ),
        Some("bin" | "pt" | "pth") => {
            let tensors = PthTensors::new(path, None).map_err(wrap)?;
            let non_float = tensors
                .tensor_infos()
                .iter()
                .filter(|(_, info)| !info.dtype.is_float())
                .map(|(name, info)| (name.clone(), format!("{:?}", info.dtype)))
                .collect();
            Box::new(FloatOnly {
                inner: tensors,
                non_float,
            })
        }
        _ => {
            return Err(ModelError::WeightsFormat {
                path: path.to_path_buf(),
            })
        }
    };
    Ok(VarBuilder::from_backend(backend, dtype, device.clone()))
}

/// A weights backend that refuses tensors stored as integers or booleans: converted to
/// floats they would load without error and silently give a broken model. Checkpoints may
/// hold integer buffers (`position_ids`) that the model never reads, so only reads fail.
struct FloatOnly<B> {
    inner: B,
    /// Names of the tensors not stored as floating point, with their stored dtype.
    non_float: HashMap<String, String>,
}

impl<B> FloatOnly<B> {
    fn check(&self, name: &str) -> candle_core::Result<()> {
        match self.non_float.get(name) {
            Some(stored) => candle_core::bail!(
                "tensor `{name}` is stored as {stored}, but weights must be floating point"
            ),
            None => Ok(()),
        }
    }
}

impl<B: SimpleBackend> SimpleBackend for FloatOnly<B> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.check(name)?;
        self.inner.get(shape, name, init, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.check(name)?;
        self.inner.get_unchecked(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_on_a_cpu_without_amx_is_refused_with_what_to_do() {
        let err = check_dtype(DType::BF16, &Device::Cpu, Compute::Amx, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AMX-BF16") && err.contains("--dtype f32"),
            "{err}"
        );
        assert!(check_dtype(DType::BF16, &Device::Cpu, Compute::Amx, true).is_ok());
        // candle's own ops have no CPU bf16 product, AMX or not.
        assert!(check_dtype(DType::BF16, &Device::Cpu, Compute::Candle, true).is_err());
        assert!(check_dtype(DType::F32, &Device::Cpu, Compute::Amx, false).is_ok());
    }
}
