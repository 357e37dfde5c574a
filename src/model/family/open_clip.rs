//! open_clip's own checkpoint layout: `open_clip_config.json` and open_clip tensor names.
//!
//! The architecture is read from the config's `model_cfg` with open_clip 3.3.0's defaults
//! (`open_clip/model.py`, `CLIPVisionCfg`/`CLIPTextCfg`), and only plain-ViT towers are
//! accepted: anything else is refused with the tower type named. The weights are renamed to
//! the Hugging Face names vlm's towers read, at load time ([`OpenClipNames`]), following the
//! mapping that transformers' `convert_metaclip_2_to_hf.py` also uses.

use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use serde_json::{Map, Value};

use crate::family::Family;
use crate::fields::Fields;
use crate::model::config::{
    Activation, ClipConfig, ConfigError, EosPooling, TextConfig, VisionConfig,
};
use crate::preprocess::{CropRounding, PreprocessConfig, Resample, ResizeTarget};
use crate::source::ModelFiles;
use crate::tokenize::{ClipTokenizer, TextClean, TokenizeError};

/// The parts of `open_clip_config.json` vlm uses besides the architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenClipPreprocess {
    /// `mean`, default OpenAI CLIP's.
    pub mean: [f64; 3],
    /// `std`, default OpenAI CLIP's.
    pub std: [f64; 3],
    /// `interpolation`: `bicubic` (default, and what `random` means at inference) or `bilinear`.
    pub bilinear: bool,
    /// `resize_mode`: `shortest` (default: resize the short side, centre crop) or `squash`.
    pub squash: bool,
    /// `model_cfg.quick_gelu` as the file states it (`None`: absent, GELU is assumed).
    pub quick_gelu_stated: Option<bool>,
    /// Whether the file states `resize_mode`.
    pub resize_mode_stated: bool,
}

/// Applies a registry entry's pins (`quick_gelu`, `resize_mode`) where the repo's config is
/// silent, and refuses a config that contradicts them: the activation is not recorded in
/// the weights, and open_clip's own `pretrained.py` keeps the same per-tag truth.
pub fn apply_pins(
    config: &mut ClipConfig,
    preprocess: &mut OpenClipPreprocess,
    quick_gelu: Option<bool>,
    resize_mode: Option<&str>,
    origin: &Path,
) -> Result<(), ConfigError> {
    if let Some(pin) = quick_gelu {
        match preprocess.quick_gelu_stated {
            Some(stated) if stated != pin => {
                return Err(err(
                    origin,
                    "model_cfg.quick_gelu",
                    format!("is {stated}, but this checkpoint was trained with quick_gelu = {pin} (vlm's registry, after open_clip's pretrained.py); fix the file or use --revision with a matching config"),
                ))
            }
            Some(_) => {}
            None if pin => {
                config.text.hidden_act = Activation::QuickGelu;
                config.vision.hidden_act = Activation::QuickGelu;
            }
            None => {}
        }
    }
    if let Some(mode) = resize_mode {
        if !preprocess.resize_mode_stated {
            preprocess.squash = mode == "squash";
        }
    }
    Ok(())
}

/// Whether `files` are in open_clip's layout.
pub fn is_open_clip(files: &ModelFiles) -> bool {
    files
        .config
        .file_name()
        .is_some_and(|n| n == crate::source::OPEN_CLIP_CONFIG)
}

/// The architecture and preprocessing of an open_clip checkpoint: `open_clip_config.json`,
/// the registry's pins for the repo, and the MLP widths read from the weights through
/// `shape_of` (they state them exactly where the config's `mlp_ratio` rounds).
pub fn read_configs<E>(
    files: &ModelFiles,
    shape_of: impl Fn(&str) -> Result<Vec<usize>, E>,
) -> Result<(ClipConfig, PreprocessConfig), E>
where
    E: From<ConfigError>,
{
    let (mut config, mut open) = read_config(&files.config)?;
    if let Some(entry) = crate::source::registry::lookup_repo(&files.id) {
        apply_pins(
            &mut config,
            &mut open,
            entry.quick_gelu,
            entry.resize_mode.as_deref(),
            &files.config,
        )?;
    }
    let rows =
        |name: &str| -> Result<usize, E> { Ok(shape_of(name)?.first().copied().unwrap_or(0)) };
    config.vision.intermediate_size = rows("vision_model.encoder.layers.0.mlp.fc1.weight")?;
    config.text.intermediate_size = rows("text_model.encoder.layers.0.mlp.fc1.weight")?;
    let size = config.vision.image_size as u32;
    let (size_target, crop) = if open.squash {
        (
            ResizeTarget::Exact {
                height: size,
                width: size,
            },
            false,
        )
    } else {
        (ResizeTarget::ShortestEdge(size), true)
    };
    // open_clip 3.3.0 `transform.py` `image_transform`: Resize, CenterCrop (torchvision
    // rounding), ToTensor (divide by 255), Normalize.
    let preprocess = PreprocessConfig {
        size: size_target,
        resample: if open.bilinear {
            Resample::Bilinear
        } else {
            Resample::Bicubic
        },
        do_center_crop: crop,
        crop_size: (size, size),
        image_mean: open.mean,
        image_std: open.std,
        crop_rounding: CropRounding::HalfEven,
        divide_by_255: true,
        ..PreprocessConfig::default()
    };
    Ok((config, preprocess))
}

/// The CLIP BPE tokenizer (the repo's, or the bundled one: open_clip repos often have
/// none) with open_clip's `clean="lower"`.
pub fn tokenizer(path: Option<&Path>, context: usize) -> Result<ClipTokenizer, TokenizeError> {
    Ok(ClipTokenizer::load(path, context)?.with_clean(TextClean::OpenClip))
}

/// Reads `open_clip_config.json`: the model architecture (intermediate sizes still to be
/// taken from the weights, see [`read_configs`]) and the preprocessing.
pub fn read_config(path: &Path) -> Result<(ClipConfig, OpenClipPreprocess), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_config(&text, path)
}

fn err(path: &Path, field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// Parses `open_clip_config.json` text; `origin` names the file in errors. Missing keys
/// take open_clip 3.3.0's defaults.
pub fn parse_config(
    json: &str,
    origin: &Path,
) -> Result<(ClipConfig, OpenClipPreprocess), ConfigError> {
    let root: Value = serde_json::from_str(json).map_err(|cause| ConfigError::Json {
        path: origin.to_path_buf(),
        cause,
    })?;
    let root = Fields::root(&root, origin)?;
    // `_get_hf_config` also accepts a bare model_cfg; its fields are named without a prefix.
    let model = match root.map().get("model_cfg") {
        Some(Value::Object(m)) => Fields::new(m.clone(), origin, ""),
        Some(_) => return Err(root.error("model_cfg", "must be a JSON object").into()),
        None => root.clone(),
    };
    let vision = model.object("vision_cfg")?;
    let text = model.object("text_cfg")?;
    refuse_non_plain(vision.map(), text.map(), origin)?;

    let eps = |f: &Fields| {
        f.get("norm_kwargs")
            .and_then(|k| k.get("eps"))
            .and_then(Value::as_f64)
            .unwrap_or(1e-5)
    };
    let quick_gelu_stated = model.get("quick_gelu").and_then(Value::as_bool);
    let quick_gelu = quick_gelu_stated.unwrap_or(false);
    let act = |f: &Fields| {
        let tanh = f
            .get("act_kwargs")
            .and_then(|k| k.get("approximate"))
            .and_then(Value::as_str)
            == Some("tanh");
        if quick_gelu {
            Activation::QuickGelu
        } else if tanh {
            Activation::GeluTanh
        } else {
            Activation::Gelu
        }
    };
    let mlp_ratio = |f: &Fields| f.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0);

    let image_size = match vision.get("image_size") {
        Some(Value::Array(sides)) => {
            let sides: Vec<u64> = sides.iter().filter_map(Value::as_u64).collect();
            match sides.as_slice() {
                [h, w] if h == w && *h > 0 => *h as usize,
                _ => {
                    return Err(vision
                        .error("image_size", "must be square; vlm takes square inputs")
                        .into())
                }
            }
        }
        _ => vision.usize("image_size", 224)?,
    };
    let v_width = vision.usize("width", 768)?;
    let head_width = vision.usize("head_width", 64)?;
    let patch_size = vision.usize("patch_size", 16)?;
    if v_width % head_width != 0 {
        return Err(vision
            .error(
                "head_width",
                format!("({head_width}) must divide width {v_width}"),
            )
            .into());
    }
    if image_size % patch_size != 0 {
        return Err(vision
            .error(
                "patch_size",
                format!("({patch_size}) must divide image_size {image_size}"),
            )
            .into());
    }
    let vision_config = VisionConfig {
        hidden_size: v_width,
        intermediate_size: (v_width as f64 * mlp_ratio(&vision)) as usize,
        num_hidden_layers: vision.usize("layers", 12)?,
        num_attention_heads: v_width / head_width,
        num_channels: 3,
        image_size,
        patch_size,
        hidden_act: act(&vision),
        layer_norm_eps: eps(&vision),
    };
    let t_width = text.usize("width", 512)?;
    let heads = text.usize("heads", 8)?;
    if t_width % heads != 0 {
        return Err(text
            .error("heads", format!("({heads}) must divide width {t_width}"))
            .into());
    }
    let pooling = match text.str("pool_type").unwrap_or("argmax") {
        // The CLIP BPE end-of-text token is the largest id.
        "argmax" => EosPooling::ArgmaxId,
        "eos" => EosPooling::FirstToken(text.usize("eos_id", 2)? as u32),
        other => {
            return Err(text
                .error(
                    "pool_type",
                    format!("is {other:?}; vlm runs open_clip text towers pooled at argmax or eos"),
                )
                .into())
        }
    };
    let text_config = TextConfig {
        vocab_size: text.usize("vocab_size", 49408)?,
        hidden_size: t_width,
        intermediate_size: (t_width as f64 * mlp_ratio(&text)) as usize,
        num_hidden_layers: text.usize("layers", 12)?,
        num_attention_heads: heads,
        max_position_embeddings: text.usize("context_length", 77)?,
        hidden_act: act(&text),
        layer_norm_eps: eps(&text),
        // open_clip pads with zeros; the causal mask keeps padding out of the pooled row.
        pad_token_id: 0,
        pooling,
        causal: true,
    };
    let config = ClipConfig {
        family: Family::OpenClip,
        text: text_config,
        vision: vision_config,
        projection_dim: model.usize("embed_dim", 512)?,
    };

    let preprocess = root.object("preprocess_cfg")?;
    let bilinear = match preprocess.str("interpolation") {
        None | Some("bicubic") | Some("random") => false,
        Some("bilinear") => true,
        Some(other) => {
            return Err(preprocess
                .error(
                    "interpolation",
                    format!("is {other:?}; vlm supports bicubic and bilinear"),
                )
                .into())
        }
    };
    let resize_mode_stated = preprocess.get("resize_mode").is_some_and(Value::is_string);
    let squash = match preprocess.str("resize_mode") {
        None | Some("shortest") => false,
        Some("squash") => true,
        Some(other) => {
            return Err(preprocess
                .error(
                    "resize_mode",
                    format!("is {other:?}; vlm supports shortest and squash"),
                )
                .into())
        }
    };
    let preprocess = OpenClipPreprocess {
        mean: preprocess
            .triple("mean")?
            .unwrap_or(crate::preprocess::OPENAI_CLIP_MEAN),
        std: preprocess
            .triple("std")?
            .unwrap_or(crate::preprocess::OPENAI_CLIP_STD),
        bilinear,
        squash,
        quick_gelu_stated,
        resize_mode_stated,
    };
    Ok((config, preprocess))
}

/// Refuses towers other than open_clip's plain `VisionTransformer` and `TextTransformer`
/// (open_clip 3.3.0 `model.py` `_build_vision_tower`/`_build_text_tower`), naming what it is.
fn refuse_non_plain(
    vision: &Map<String, Value>,
    text: &Map<String, Value>,
    origin: &Path,
) -> Result<(), ConfigError> {
    let refuse = |field: &str, what: String| {
        Err(err(
            origin,
            field,
            format!("{what}; vlm runs open_clip checkpoints with plain ViT towers only (use the model's Hugging Face-format repo if it has one)"),
        ))
    };
    let set = |map: &Map<String, Value>, key: &str| match map.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if let Some(name) = vision.get("timm_model_name").and_then(Value::as_str) {
        return refuse("vision_cfg.timm_model_name", format!("the image tower is the timm model `{name}` (ConvNeXt, FastViT/MobileOne, EVA or another timm trunk)"));
    }
    if vision.get("layers").is_some_and(Value::is_array) {
        return refuse(
            "vision_cfg.layers",
            "the image tower is a ModifiedResNet (RN50-style)".into(),
        );
    }
    for key in [
        "attentional_pool",
        "no_ln_pre",
        "final_ln_after_pool",
        "block_type",
        "qk_norm",
        "scaled_cosine_attn",
        "scale_heads",
        "ls_init_value",
        "patch_dropout_dummy",
    ] {
        if set(vision, key) {
            return refuse(
                &format!("vision_cfg.{key}"),
                format!("the image tower is a ViT variant with `{key}`"),
            );
        }
    }
    for (key, plain) in [("pos_embed_type", "learnable"), ("pool_type", "tok")] {
        if let Some(v) = vision
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| *v != plain)
        {
            return refuse(
                &format!("vision_cfg.{key}"),
                format!("the image tower uses {key} {v:?}"),
            );
        }
    }
    for key in ["hf_model_name", "hf_tokenizer_name"] {
        if let Some(name) = text.get(key).and_then(Value::as_str) {
            return refuse(&format!("text_cfg.{key}"), format!("the text tower is the Hugging Face model `{name}` (an XLM-R/BERT/mT5-style tower)"));
        }
    }
    for key in [
        "embed_cls",
        "no_causal_mask",
        "proj_bias",
        "ls_init_value",
        "block_type",
        "qk_norm",
    ] {
        if set(text, key) {
            return refuse(
                &format!("text_cfg.{key}"),
                format!("the text tower uses `{key}`"),
            );
        }
    }
    if let Some(v) = text
        .get("proj_type")
        .and_then(Value::as_str)
        .filter(|v| *v != "linear")
    {
        return refuse(
            "text_cfg.proj_type",
            format!("the text projection is {v:?}"),
        );
    }
    Ok(())
}

/// How one Hugging Face tensor is made from an open_clip one.
enum Take {
    Same,
    /// Rows `[start, start + len)` of a packed `in_proj` tensor.
    Rows(usize),
    /// open_clip's projections are used as `x @ P`; a Linear weight is `Pᵀ`.
    Transpose,
}

/// Serves tensors under the Hugging Face CLIP names from an open_clip state dict.
pub(crate) struct OpenClipNames {
    pub inner: Box<dyn SimpleBackend>,
    /// `module.` when the state dict was saved from a DistributedDataParallel wrapper.
    pub prefix: String,
}

impl OpenClipNames {
    /// The open_clip name for `name` and how to cut it.
    fn source(&self, name: &str) -> Option<(String, Take)> {
        let (oc, take) = if let Some(rest) = name.strip_prefix("text_model.") {
            let mapped = match rest {
                "embeddings.token_embedding.weight" => "token_embedding.weight".to_string(),
                "embeddings.position_embedding.weight" => "positional_embedding".to_string(),
                _ => {
                    if let Some(ln) = rest.strip_prefix("final_layer_norm.") {
                        format!("ln_final.{ln}")
                    } else {
                        let (block, take) = block_name(rest.strip_prefix("encoder.layers.")?)?;
                        return Some((
                            format!("{}transformer.resblocks.{block}", self.prefix),
                            take,
                        ));
                    }
                }
            };
            (mapped, Take::Same)
        } else if let Some(rest) = name.strip_prefix("vision_model.") {
            let mapped = match rest {
                "embeddings.patch_embedding.weight" => "visual.conv1.weight".to_string(),
                "embeddings.class_embedding" => "visual.class_embedding".to_string(),
                "embeddings.position_embedding.weight" => "visual.positional_embedding".to_string(),
                _ => {
                    if let Some(ln) = rest.strip_prefix("pre_layrnorm.") {
                        format!("visual.ln_pre.{ln}")
                    } else if let Some(ln) = rest.strip_prefix("post_layernorm.") {
                        format!("visual.ln_post.{ln}")
                    } else {
                        let (block, take) = block_name(rest.strip_prefix("encoder.layers.")?)?;
                        return Some((
                            format!("{}visual.transformer.resblocks.{block}", self.prefix),
                            take,
                        ));
                    }
                }
            };
            (mapped, Take::Same)
        } else {
            match name {
                "text_projection.weight" => ("text_projection".to_string(), Take::Transpose),
                "visual_projection.weight" => ("visual.proj".to_string(), Take::Transpose),
                "logit_scale" => ("logit_scale".to_string(), Take::Same),
                _ => return None,
            }
        };
        Some((format!("{}{oc}", self.prefix), take))
    }

    fn fetch(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let Some((source, take)) = self.source(name) else {
            candle_core::bail!("open_clip checkpoints have no tensor for `{name}`")
        };
        let tensor = self.inner.get_unchecked(&source, dtype, device)?;
        match take {
            Take::Same => Ok(tensor),
            Take::Transpose => tensor.t()?.contiguous(),
            Take::Rows(part) => {
                let width = tensor.dim(0)? / 3;
                tensor.narrow(0, part * width, width)?.contiguous()
            }
        }
    }
}

/// `{i}.<hf name>` inside one encoder layer → `{i}.<open_clip name>`.
fn block_name(rest: &str) -> Option<(String, Take)> {
    let (index, tail) = rest.split_once('.')?;
    let (mapped, take) = match tail {
        "layer_norm1.weight" => ("ln_1.weight".to_string(), Take::Same),
        "layer_norm1.bias" => ("ln_1.bias".to_string(), Take::Same),
        "layer_norm2.weight" => ("ln_2.weight".to_string(), Take::Same),
        "layer_norm2.bias" => ("ln_2.bias".to_string(), Take::Same),
        _ => {
            if let Some(attn) = tail.strip_prefix("self_attn.") {
                let (proj, kind) = attn.split_once('.')?;
                match proj {
                    "out_proj" => (format!("attn.out_proj.{kind}"), Take::Same),
                    "q_proj" | "k_proj" | "v_proj" => {
                        let part = match proj {
                            "q_proj" => 0,
                            "k_proj" => 1,
                            _ => 2,
                        };
                        (format!("attn.in_proj_{kind}"), Take::Rows(part))
                    }
                    _ => return None,
                }
            } else if let Some(mlp) = tail.strip_prefix("mlp.fc1.") {
                (format!("mlp.c_fc.{mlp}"), Take::Same)
            } else if let Some(mlp) = tail.strip_prefix("mlp.fc2.") {
                (format!("mlp.c_proj.{mlp}"), Take::Same)
            } else {
                return None;
            }
        }
    };
    Some((format!("{index}.{mapped}"), take))
}

impl SimpleBackend for OpenClipNames {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        crate::model::weights::get_checked(
            self,
            shape,
            name,
            dtype,
            device,
            "the open_clip weights",
        )
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source(name)
            .is_some_and(|(source, _)| self.inner.contains_tensor(&source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(ClipConfig, OpenClipPreprocess), ConfigError> {
        parse_config(json, Path::new("m/open_clip_config.json"))
    }

    #[test]
    fn reads_model_cfg_with_open_clip_defaults() {
        let (config, pre) = parse(
            r#"{"model_cfg": {"embed_dim": 1024, "quick_gelu": true,
                 "vision_cfg": {"image_size": 378, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
                 "text_cfg": {"width": 1024, "heads": 16, "layers": 24}},
                "preprocess_cfg": {"resize_mode": "squash"}}"#,
        )
        .expect("DFN5B-H/14-378 shape parses");
        assert_eq!(config.family, Family::OpenClip);
        assert_eq!(config.vision.num_attention_heads, 16);
        assert_eq!(config.vision.hidden_act, Activation::QuickGelu);
        assert_eq!(config.text.pooling, EosPooling::ArgmaxId);
        assert_eq!(config.text.max_position_embeddings, 77);
        assert_eq!(config.text.layer_norm_eps, 1e-5);
        assert!(pre.squash && !pre.bilinear);
        assert_eq!(pre.mean, crate::preprocess::OPENAI_CLIP_MEAN);
    }

    #[test]
    fn registry_pins_fill_in_and_guard_what_the_config_omits() {
        let origin = Path::new("m/open_clip_config.json");
        let (mut config, mut pre) = parse(r#"{"model_cfg": {}}"#).unwrap();
        apply_pins(&mut config, &mut pre, Some(true), Some("squash"), origin).unwrap();
        assert_eq!(config.vision.hidden_act, Activation::QuickGelu);
        assert_eq!(config.text.hidden_act, Activation::QuickGelu);
        assert!(pre.squash);
        let (mut config, mut pre) =
            parse(r#"{"model_cfg": {"quick_gelu": false}, "preprocess_cfg": {"resize_mode": "shortest"}}"#)
                .unwrap();
        let err =
            apply_pins(&mut config, &mut pre, Some(true), Some("squash"), origin).unwrap_err();
        assert!(err.to_string().contains("quick_gelu"), "{err}");
    }

    #[test]
    fn non_vit_towers_are_refused_by_name() {
        let err = parse(r#"{"model_cfg": {"vision_cfg": {"timm_model_name": "convnext_base"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("convnext_base") && err.contains("plain ViT"),
            "{err}"
        );
        let err = parse(r#"{"model_cfg": {"vision_cfg": {"layers": [3, 4, 6, 3]}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ModifiedResNet"), "{err}");
        let err = parse(r#"{"model_cfg": {"text_cfg": {"hf_model_name": "xlm-roberta-large"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("xlm-roberta-large"), "{err}");
        let err = parse(r#"{"preprocess_cfg": {"resize_mode": "longest"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resize_mode"), "{err}");
    }

    #[test]
    fn names_map_to_open_clip_and_cut_packed_tensors() {
        let device = Device::Cpu;
        let packed = Tensor::arange(0f32, 6.0, &device)
            .unwrap()
            .reshape((6, 1))
            .unwrap();
        let proj = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &device).unwrap();
        let mut tensors = std::collections::HashMap::new();
        tensors.insert(
            "module.transformer.resblocks.3.attn.in_proj_weight".to_string(),
            packed,
        );
        tensors.insert("module.visual.proj".to_string(), proj);
        let names = OpenClipNames {
            inner: Box::new(tensors),
            prefix: "module.".to_string(),
        };
        let k = names
            .get_unchecked(
                "text_model.encoder.layers.3.self_attn.k_proj.weight",
                DType::F32,
                &device,
            )
            .unwrap();
        assert_eq!(
            k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2.0, 3.0]
        );
        let v = names
            .get(
                (3, 2).into(),
                "visual_projection.weight",
                Init::Const(0.),
                DType::F32,
                &device,
            )
            .unwrap();
        assert_eq!(
            v.to_vec2::<f32>().unwrap(),
            [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
        );
        assert!(names.contains_tensor("visual_projection.weight"));
        assert!(!names.contains_tensor("vision_model.head.probe"));
        assert_eq!(
            names
                .source("vision_model.encoder.layers.0.mlp.fc2.bias")
                .map(|s| s.0),
            Some("module.visual.transformer.resblocks.0.mlp.c_proj.bias".to_string())
        );
    }
}
