//! The encoders of every family (CLIP, SigLIP, MetaCLIP 2, open_clip), written on candle-nn
//! with weights read through a `VarBuilder`; on the CPU in f32 (and bf16 with AMX) the
//! transformer layers run on the crate's packed kernels instead.
//!
//! candle-transformers' own `clip` module is not used: it supports only QuickGELU, fixes
//! the layer-norm epsilon, replaces missing tensors with random or default values, and
//! takes hand-written configs, so it cannot match transformers on the checkpoints we
//! support (LAION's ports use GELU) nor refuse a broken file.

pub mod blip;
pub mod family;
mod layers;
mod pack;
mod siglip;
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

use crate::family::{Family, Scoring};
use config::ClipConfig;
use layers::{Compute, Packer};

pub use crate::kernels::{Bf16Kernel, Int8Kernel};
use pack::{PackFile, PackKey, Packing};

pub use pack::{
    default_dir as default_pack_dir, finish_pack_files_detached, PackStatus, PACK_DIR_ENV,
};
use siglip::SiglipVision;
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
    #[error("int8 is not supported on the {device}: {hint}")]
    Int8 {
        device: &'static str,
        hint: &'static str,
    },
    #[error("the model failed while encoding {what}: {cause}")]
    Run {
        what: &'static str,
        cause: candle_core::Error,
    },
}

/// The number type the encoders' matrix products run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// A float type (f32, f16 or bf16): weights and products in it (on the CPU the packed
    /// kernels accumulate bf16 products in f32).
    Float(DType),
    /// CPU only: the transformer layers' weights quantised to int8 per output channel and
    /// their inputs per row, int32 sums, f32 everywhere else (layer norms, attention,
    /// activations, the patch embedding and the projections). See [`Int8Kernel`].
    Int8,
}

impl From<DType> for Precision {
    fn from(dtype: DType) -> Self {
        Precision::Float(dtype)
    }
}

impl Precision {
    /// The usual short name: `f32`, `f16`, `bf16`, `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float(DType::F16) => "f16",
            Precision::Float(DType::BF16) => "bf16",
            Precision::Float(DType::F32) => "f32",
            Precision::Float(DType::F64) => "f64",
            Precision::Float(_) => "other",
            Precision::Int8 => "int8",
        }
    }
}

/// The image encoder of a family.
enum Vision {
    /// Class token, pre-LayerNorm and a projection (CLIP, MetaCLIP 2, open_clip).
    Clip(VisionTower),
    /// No class token, MAP head (SigLIP).
    Siglip(SiglipVision),
}

/// A loaded model: both encoders, the learned logit scale (and bias), and its scoring.
pub struct ClipModel {
    text: TextTower,
    vision: Vision,
    logit_scale: f32,
    logit_bias: f32,
    family: Family,
    dtype: DType,
    precision: Precision,
    device: Device,
    compute: Compute,
    pack: PackStatus,
    /// The pack file still being written; dropping the model waits for it.
    _pack_writer: Option<pack::PackWriter>,
}

/// What runs the encoders for `precision` on `device`, and the float type around the
/// products: the packed kernels on the CPU (the widest instruction set for f32;
/// `options.bf16_kernel`, else the fastest present, for bf16; `options.int8_kernel`, else
/// the fastest present, for int8), candle everywhere else. int8 is refused off the CPU and
/// where the CPU lacks the kernel asked for.
pub(crate) fn choose_compute(
    device: &Device,
    precision: Precision,
    options: &LoadOptions,
) -> Result<(DType, Compute), ModelError> {
    let isa = crate::kernels::Isa::detect();
    Ok(match (device, precision) {
        (Device::Cpu, Precision::Int8) => {
            let kernel = options.int8_kernel.unwrap_or_else(Int8Kernel::detect);
            if !kernel.supported() {
                return Err(ModelError::Int8 {
                    device: "CPU",
                    hint: "this CPU lacks the int8 kernel VLM_INT8_KERNEL names; unset it to \
                           use the fastest one present",
                });
            }
            (DType::F32, Compute::Int8(kernel, isa))
        }
        (_, Precision::Int8) => {
            return Err(ModelError::Int8 {
                device: "this device",
                hint: "int8 runs on the CPU's own kernels; use --device cpu, or --dtype \
                       f16 or bf16 on a GPU",
            })
        }
        (Device::Cpu, Precision::Float(DType::F32)) => (DType::F32, Compute::Packed(isa)),
        (Device::Cpu, Precision::Float(DType::BF16)) => (
            DType::BF16,
            Compute::Bf16(
                options
                    .bf16_kernel
                    .or_else(Bf16Kernel::detect)
                    .unwrap_or(Bf16Kernel::Amx),
            ),
        ),
        (_, Precision::Float(dtype)) => (dtype, Compute::Candle),
    })
}

/// How reports name a compute path (`"candle"`, `"packed avx512"`, `"packed amx-bf16"`).
pub(crate) fn compute_label(compute: Compute) -> &'static str {
    match compute {
        Compute::Candle => "candle",
        Compute::Packed(isa) => isa.label(),
        Compute::Bf16(kernel) => kernel.label(),
        Compute::Int8(kernel, _) => kernel.label(),
    }
}

/// The number types the encoders compute in on the CPU, as `--dtype` names them. A new
/// number type joins here, and [`cpu_kernels`] (and so `vlm doctor`) reports it.
pub const CPU_DTYPES: [Precision; 4] = [
    Precision::Float(DType::F32),
    Precision::Float(DType::F16),
    Precision::Float(DType::BF16),
    Precision::Int8,
];

/// What a load on the CPU would run for one number type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuKernel {
    /// The number type, as `--dtype` names it.
    pub dtype: &'static str,
    /// The implementation a load would choose, as [`ClipModel::kernels`] names it.
    pub kernel: &'static str,
    /// Whether this CPU runs it (bf16 needs AMX-BF16 or AVX512-BF16; int8 runs everywhere
    /// unless `VLM_INT8_KERNEL` names a kernel the CPU lacks).
    pub available: bool,
}

/// For each of [`CPU_DTYPES`], the kernel a CPU load would choose here, by the same choice
/// [`ClipModel::load_with`] makes (the forced kernels as in [`LoadOptions`]).
pub fn cpu_kernels(options: &LoadOptions) -> Vec<CpuKernel> {
    CPU_DTYPES
        .iter()
        .map(|&precision| {
            let (kernel, available) = match choose_compute(&Device::Cpu, precision, options) {
                Ok((_, compute)) => (
                    compute_label(compute),
                    match compute {
                        Compute::Candle => true,
                        Compute::Packed(isa) => isa.supported(),
                        Compute::Bf16(kernel) => kernel.supported(),
                        Compute::Int8(kernel, _) => kernel.supported(),
                    },
                ),
                // Only a forced int8 kernel the CPU lacks is refused.
                Err(_) => (
                    options.int8_kernel.map_or("int8", |kernel| kernel.label()),
                    false,
                ),
            };
            CpuKernel {
                dtype: precision.name(),
                kernel,
                available,
            }
        })
        .collect()
}

/// How a model is loaded beyond its files, device and dtype.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where packed weights are kept between runs (see [`default_pack_dir`]); None packs
    /// at every load and writes nothing. Only the CPU kernels use it.
    pub pack_dir: Option<PathBuf>,
    /// The bf16 kernel to use on the CPU instead of the fastest one present (to test or
    /// measure the AVX512-BF16 kernel on a CPU that also has AMX).
    pub bf16_kernel: Option<Bf16Kernel>,
    /// The int8 kernel to use instead of the fastest one present (to test or measure a
    /// slower one).
    pub int8_kernel: Option<Int8Kernel>,
}

impl ClipModel {
    /// Loads the weights in `weights` (safetensors, read straight into the tensors, or a
    /// PyTorch pickle read without running code) for the architecture in `config`, in f32:
    /// half-precision weights are converted once, here.
    pub fn load(config: &ClipConfig, weights: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::load_as(config, weights, device, DType::F32)
    }

    /// Like [`Self::load`], computing in `precision` (a float `DType`: f32, f16 or bf16;
    /// or [`Precision::Int8`]). Inputs are converted to it and embeddings come back as f32.
    pub fn load_as(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        precision: impl Into<Precision>,
    ) -> Result<Self, ModelError> {
        Self::load_with(config, weights, device, precision, &LoadOptions::default())
    }

    /// Like [`Self::load_as`], with a pack cache and other [`LoadOptions`].
    pub fn load_with(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        precision: impl Into<Precision>,
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        let (dtype, compute) = choose_compute(device, precision.into(), options)?;
        Self::load_for(config, weights, device, dtype, compute, options)
    }

    /// Like [`Self::load_as`], but on candle's tensor ops even where the packed CPU kernels
    /// would run: the reference the kernels are measured and tested against.
    pub fn load_on_candle(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        Self::load_for(
            config,
            weights,
            device,
            dtype,
            Compute::Candle,
            &LoadOptions::default(),
        )
    }

    fn load_for(
        config: &ClipConfig,
        weights: &Path,
        device: &Device,
        dtype: DType,
        compute: Compute,
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        let bf16_runs = match compute {
            Compute::Bf16(kernel) => kernel.supported(),
            _ => false,
        };
        check_dtype(dtype, device, compute, bf16_runs)?;
        let wrap = |source| ModelError::Weights {
            path: weights.to_path_buf(),
            cause: source,
        };
        let key = match (&options.pack_dir, compute) {
            (Some(dir), Compute::Packed(_) | Compute::Bf16(_) | Compute::Int8(..)) => {
                PackKey::new(dir, weights, config, compute).ok()
            }
            _ => None,
        };
        let Some(key) = key else {
            // The packed kernels read f32 weights and round them to their own type when
            // packing.
            let stored = if compute == Compute::Candle {
                dtype
            } else {
                DType::F32
            };
            let vb = open_weights(weights, stored, device, config.family)?;
            let parts = Self::build(config, vb, &Packer::fresh(compute)).map_err(wrap)?;
            return Ok(Self::assemble(
                parts,
                config,
                dtype,
                device,
                compute,
                PackStatus::Off,
            ));
        };
        let path = key.path().to_path_buf();
        let stale = match PackFile::open(&key) {
            Ok(None) => None,
            Ok(Some(file)) => {
                let file = std::sync::Arc::new(file);
                let backend = Box::new(pack::FromPack(file.clone()));
                let vb = VarBuilder::from_backend(backend, DType::F32, device.clone());
                let packer = Packer {
                    compute,
                    packing: Packing::File(file),
                };
                match Self::build(config, vb, &packer) {
                    Ok(parts) => {
                        let status = PackStatus::Loaded(path);
                        return Ok(Self::assemble(
                            parts, config, dtype, device, compute, status,
                        ));
                    }
                    Err(e) => Some(format!("it does not fit this model: {e}")),
                }
            }
            Err(reason) => Some(reason),
        };
        let recorder = std::sync::Arc::new(pack::Recorder::default());
        let backend = Box::new(pack::Recording {
            inner: open_backend(weights, config.family, true)?,
            recorder: recorder.clone(),
        });
        let vb = VarBuilder::from_backend(backend, DType::F32, device.clone());
        let packer = Packer {
            compute,
            packing: Packing::Fresh(Some(recorder.clone())),
        };
        let parts = Self::build(config, vb, &packer).map_err(wrap)?;
        let (status, writer) = match (pack::write(&key, &recorder), stale) {
            (Ok(w), None) => (PackStatus::Written(path), Some(w)),
            (Ok(w), Some(reason)) => (PackStatus::Rebuilt { path, reason }, Some(w)),
            (Err(e), _) => {
                let reason = e.to_string();
                (PackStatus::NotWritten { path, reason }, None)
            }
        };
        let mut model = Self::assemble(parts, config, dtype, device, compute, status);
        model._pack_writer = writer;
        Ok(model)
    }

    /// Builds both towers and reads the logit scale (and bias) through `vb`.
    fn build(
        config: &ClipConfig,
        vb: VarBuilder<'static>,
        p: &Packer,
    ) -> candle_core::Result<(TextTower, Vision, f32, f32)> {
        let text = TextTower::load(vb.clone(), &config.text, config.projection_dim, p)?;
        let vision = match config.family {
            Family::Siglip => Vision::Siglip(SiglipVision::load(vb.clone(), &config.vision, p)?),
            _ => Vision::Clip(VisionTower::load(
                vb.clone(),
                &config.vision,
                config.projection_dim,
                p,
            )?),
        };
        // A scalar in CLIP and open_clip, shape [1] in SigLIP.
        let scalar = |name: &str| {
            vb.get_unchecked(name)
                .and_then(|t| t.to_dtype(DType::F32)?.flatten_all())
                .and_then(|t| match t.dims1()? {
                    1 => t.get(0)?.to_scalar::<f32>(),
                    n => candle_core::bail!("`{name}` holds {n} values, expected one"),
                })
        };
        let logit_scale = scalar("logit_scale")?;
        let logit_bias = if config.family == Family::Siglip {
            scalar("logit_bias")?
        } else {
            0.0
        };
        Ok((text, vision, logit_scale, logit_bias))
    }

    fn assemble(
        (text, vision, logit_scale, logit_bias): (TextTower, Vision, f32, f32),
        config: &ClipConfig,
        dtype: DType,
        device: &Device,
        compute: Compute,
        pack: PackStatus,
    ) -> Self {
        Self {
            text,
            vision,
            logit_scale,
            logit_bias,
            family: config.family,
            dtype,
            precision: match compute {
                Compute::Int8(..) => Precision::Int8,
                _ => Precision::Float(dtype),
            },
            device: device.clone(),
            compute,
            pack,
            _pack_writer: None,
        }
    }

    /// What happened to the pack file of this load.
    pub fn pack_status(&self) -> &PackStatus {
        &self.pack
    }

    /// Which implementation runs the encoders: `"candle"`, or the packed CPU kernels and
    /// the instruction set they use (`"packed avx512"`).
    pub fn kernels(&self) -> &'static str {
        compute_label(self.compute)
    }

    /// The learned bias added to SigLIP's scaled cosine before its sigmoid (0 elsewhere).
    pub fn logit_bias(&self) -> f32 {
        self.logit_bias
    }

    /// The checkpoint's family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// How this model's scores are computed.
    pub fn scoring(&self) -> Scoring {
        self.family.scoring()
    }

    /// The learned temperature, as stored (a log): logits are `exp(logit_scale) * cosine`.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The float type the encoders compute in (f32 for int8, whose products alone are
    /// integer).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number type of the encoders' matrix products.
    pub fn precision(&self) -> Precision {
        self.precision
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
        match &self.vision {
            Vision::Clip(v) => v.image_size(),
            Vision::Siglip(v) => v.image_size(),
        }
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
            .and_then(|p| match &self.vision {
                Vision::Clip(v) => v.forward(&p),
                Vision::Siglip(v) => v.forward(&p),
            })
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|source| ModelError::Run {
                what: "images",
                cause: source,
            })
    }
}

/// Refuses a compute type the device cannot multiply matrices in, before loading anything.
/// `bf16_runs`: whether this CPU and OS run the chosen bf16 kernel.
fn check_dtype(
    dtype: DType,
    device: &Device,
    compute: Compute,
    bf16_runs: bool,
) -> Result<(), ModelError> {
    let bf16_kernels = matches!(compute, Compute::Bf16(_));
    match (dtype, device) {
        (DType::F32 | DType::F16, _) => Ok(()),
        (DType::BF16, Device::Cuda(_) | Device::Metal(_)) => Ok(()),
        (DType::BF16, Device::Cpu) if bf16_kernels && bf16_runs => Ok(()),
        (DType::BF16, Device::Cpu) if bf16_kernels => Err(ModelError::DType {
            dtype,
            device: "CPU",
            hint: "bf16 on the CPU needs Intel AMX-BF16 (Xeon Sapphire Rapids or later, on \
                   Linux) or AVX512-BF16 (Xeon Cooper Lake, AMD Zen 4 or later), and this CPU \
                   or kernel lacks the one needed (VLM_BF16_KERNEL may name one it lacks); use \
                   --dtype f32",
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
    family: Family,
) -> Result<VarBuilder<'static>, ModelError> {
    let backend = open_backend(path, family, true)?;
    Ok(VarBuilder::from_backend(backend, dtype, device.clone()))
}

/// The tensors of a weights file, under the Hugging Face names the towers read; with
/// `read_ahead`, a safetensors file is read whole at once (for a load).
fn open_backend(
    path: &Path,
    family: Family,
    read_ahead: bool,
) -> Result<Box<dyn SimpleBackend>, ModelError> {
    let backend = open_file(path, read_ahead)?;
    if family != Family::OpenClip {
        return Ok(backend);
    }
    // A training checkpoint saved from DistributedDataParallel prefixes every name.
    let prefix = if !backend.contains_tensor("logit_scale")
        && backend.contains_tensor("module.logit_scale")
    {
        "module."
    } else {
        ""
    };
    Ok(Box::new(family::open_clip::OpenClipNames {
        inner: backend,
        prefix: prefix.to_string(),
    }))
}

/// Reads a tensor's shape from a weights file without building a model: open_clip
/// configs do not state their MLP widths exactly, the weights do.
pub fn tensor_shape(path: &Path, family: Family, name: &str) -> Result<Vec<usize>, ModelError> {
    let backend = open_backend(path, family, false)?;
    backend
        .get_unchecked(name, DType::F32, &Device::Cpu)
        .map(|t| t.dims().to_vec())
        .map_err(|cause| ModelError::Weights {
            path: path.to_path_buf(),
            cause,
        })
}

fn open_file(path: &Path, read_ahead: bool) -> Result<Box<dyn SimpleBackend>, ModelError> {
    let wrap = |source| ModelError::Weights {
        path: path.to_path_buf(),
        cause: source,
    };
    let backend: Box<dyn SimpleBackend> = match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => {
            let file = weights::SafetensorsFile::open(path).map_err(wrap)?;
            Box::new(if read_ahead { file.read_all() } else { file })
        }
        Some("bin" | "pt" | "pth") => {
            let mut tensors = PthTensors::new(path, None).map_err(wrap)?;
            // Training checkpoints wrap the weights: {"state_dict": {...}} (open_clip's
            // `load_state_dict` unwraps the same key).
            if tensors.tensor_infos().is_empty() {
                tensors = PthTensors::new(path, Some("state_dict")).map_err(wrap)?;
            }
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
    Ok(backend)
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
    fn cpu_kernels_report_the_choice_a_load_makes() {
        let kernels = cpu_kernels(&LoadOptions::default());
        let names: Vec<&str> = kernels.iter().map(|k| k.dtype).collect();
        assert_eq!(names, ["f32", "f16", "bf16", "int8"]);
        assert_eq!(kernels[0].kernel, crate::kernels::Isa::detect().label());
        assert!(kernels[0].available);
        assert_eq!(kernels[1].kernel, "candle");
        assert_eq!(kernels[2].available, Bf16Kernel::detect().is_some());
        // int8 runs everywhere: portable code at worst.
        assert_eq!(kernels[3].kernel, Int8Kernel::detect().label());
        assert!(kernels[3].available);
        let forced = cpu_kernels(&LoadOptions {
            bf16_kernel: Some(Bf16Kernel::Avx512Bf16),
            int8_kernel: Some(Int8Kernel::Amx),
            ..LoadOptions::default()
        });
        assert_eq!(forced[2].kernel, Bf16Kernel::Avx512Bf16.label());
        assert_eq!(forced[2].available, Bf16Kernel::Avx512Bf16.supported());
        assert_eq!(forced[3].kernel, Int8Kernel::Amx.label());
        assert_eq!(forced[3].available, Int8Kernel::Amx.supported());
    }

    #[test]
    fn bf16_on_a_cpu_without_amx_is_refused_with_what_to_do() {
        let err = check_dtype(
            DType::BF16,
            &Device::Cpu,
            Compute::Bf16(Bf16Kernel::Amx),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("AMX-BF16") && err.contains("AVX512-BF16") && err.contains("--dtype f32"),
            "{err}"
        );
        assert!(check_dtype(
            DType::BF16,
            &Device::Cpu,
            Compute::Bf16(Bf16Kernel::Amx),
            true
        )
        .is_ok());
        // candle's own ops have no CPU bf16 product, AMX or not.
        assert!(check_dtype(DType::BF16, &Device::Cpu, Compute::Candle, true).is_err());
        assert!(check_dtype(
            DType::F32,
            &Device::Cpu,
            Compute::Bf16(Bf16Kernel::Amx),
            false
        )
        .is_ok());
    }
}
