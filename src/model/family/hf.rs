//! `config.json` in the Hugging Face layout, as every HF-layout family (CLIP, MetaCLIP 2,
//! SigLIP) stores it: the fields they share, read with what the family's own config classes
//! default to and the rules that differ by family ([`super`]).
//!
//! Keys that a config leaves out take the defaults of the family's transformers config
//! classes, because that is what the checkpoint's authors relied on (LAION's ports and
//! Google's SigLIP configs list only the values that differ). A key that is present but
//! unusable is an error that names the file and the field.

use std::path::Path;

use serde_json::Value;

use crate::family::Family;
use crate::fields::{FieldError, Fields};
use crate::model::config::{
    Activation, ClipConfig, ConfigError, EosPooling, TextConfig, VisionConfig,
};

impl ClipConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses `config.json` text; `origin` names the file in errors. What the file leaves
    /// out, and the rules that differ by family, come from [`family`].
    pub fn from_json_str(json: &str, origin: &Path) -> Result<Self, ConfigError> {
        let root: Value = serde_json::from_str(json).map_err(|source| ConfigError::Json {
            path: origin.to_path_buf(),
            cause: source,
        })?;
        let root = Fields::root(&root, origin)?;
        let family = if let Some(model_type) = root.map().get("model_type") {
            let model_type = model_type.as_str().unwrap_or_default();
            if model_type == "blip" {
                return Err(ConfigError::Blip {
                    path: origin.to_path_buf(),
                });
            }
            super::of_model_type(model_type).map_err(|what| ConfigError::NotClip {
                path: origin.to_path_buf(),
                model_type: model_type.to_string(),
                what,
            })?
        } else if !root.map().contains_key("text_config")
            || !root.map().contains_key("vision_config")
        {
            return Err(root
                .error(
                    "text_config",
                    "is missing (and there is no model_type); this does not look like a CLIP config.json",
                )
                .into());
        } else {
            Family::Clip
        };
        let text_fields = tower(&root, "text_config")?;
        let vision_fields = tower(&root, "vision_config")?;
        let text = TextConfig::parse(&text_fields, family)?;
        let vision = VisionConfig::parse(&vision_fields, family)?;
        let projection_dim =
            super::projection_dim(family, &root, &text_fields, &vision_fields, &text, &vision)?;
        Ok(Self {
            family,
            text,
            vision,
            projection_dim,
        })
    }
}

/// The tower's settings: `text_config`, overridden by the legacy `text_config_dict` as
/// transformers does.
pub(crate) fn tower<'a>(root: &Fields<'a>, key: &str) -> Result<Fields<'a>, FieldError> {
    let mut merged = root.object(key)?.map().clone();
    let legacy = format!("{key}_dict");
    merged.extend(root.object(&legacy)?.map().clone());
    Ok(Fields::new(merged, root.path(), &format!("{key}.")))
}

impl TextConfig {
    fn parse(f: &Fields, family: Family) -> Result<Self, FieldError> {
        let defaults = super::defaults(family);
        let vocab_size = f.usize("vocab_size", defaults.vocab_size)?;
        let (pad_token_id, pooling) = super::text_ids(family, f)?;
        let config = Self {
            vocab_size,
            hidden_size: f.usize("hidden_size", defaults.text_hidden_size)?,
            intermediate_size: f.usize("intermediate_size", defaults.text_intermediate_size)?,
            num_hidden_layers: f.usize("num_hidden_layers", 12)?,
            num_attention_heads: f.usize("num_attention_heads", defaults.text_heads)?,
            max_position_embeddings: f.usize("max_position_embeddings", defaults.context)?,
            hidden_act: activation(f, defaults.hidden_act)?,
            layer_norm_eps: f.f64("layer_norm_eps", defaults.layer_norm_eps)?,
            pad_token_id,
            pooling,
            causal: super::causal_text(family),
        };
        f.divisible(
            config.hidden_size,
            config.num_attention_heads,
            "num_attention_heads",
        )?;
        if pad_token_id as usize >= vocab_size {
            return Err(f.error("pad_token_id", "is outside the vocabulary"));
        }
        if let EosPooling::FirstToken(id) = pooling {
            if id as usize >= vocab_size {
                return Err(f.error("eos_token_id", "is outside the vocabulary"));
            }
        }
        Ok(config)
    }
}

impl VisionConfig {
    fn parse(f: &Fields, family: Family) -> Result<Self, FieldError> {
        let defaults = super::defaults(family);
        let config = Self {
            hidden_size: f.usize("hidden_size", 768)?,
            intermediate_size: f.usize("intermediate_size", 3072)?,
            num_hidden_layers: f.usize("num_hidden_layers", 12)?,
            num_attention_heads: f.usize("num_attention_heads", 12)?,
            num_channels: f.usize("num_channels", 3)?,
            image_size: f.usize("image_size", 224)?,
            patch_size: f.usize("patch_size", defaults.patch_size)?,
            hidden_act: activation(f, defaults.hidden_act)?,
            layer_norm_eps: f.f64("layer_norm_eps", defaults.layer_norm_eps)?,
        };
        f.divisible(
            config.hidden_size,
            config.num_attention_heads,
            "num_attention_heads",
        )?;
        super::check_patches(family, f, config.image_size, config.patch_size)?;
        if config.num_channels != 3 {
            return Err(f.error("num_channels", "must be 3 (RGB input)"));
        }
        Ok(config)
    }
}

/// `hidden_act`, or the family's default.
pub(crate) fn activation(f: &Fields, default: Activation) -> Result<Activation, FieldError> {
    match f.get("hidden_act") {
        None => Ok(default),
        Some(v) => v.as_str().and_then(Activation::parse).ok_or_else(|| {
            f.error(
                "hidden_act",
                format!(
                    "is {v}; vlm supports quick_gelu, gelu, gelu_new, gelu_pytorch_tanh and relu"
                ),
            )
        }),
    }
}
