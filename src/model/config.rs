//! The architecture of a checkpoint, read from its `config.json`.
//!
//! Keys that a config leaves out take the defaults of the family's transformers config
//! classes (`CLIPTextConfig`/`CLIPVisionConfig`/`CLIPConfig`, `MetaClip2Config`, or
//! `SiglipTextConfig`/`SiglipVisionConfig`), because that is what the checkpoint's authors
//! relied on (LAION's ports and Google's SigLIP configs list only the values that differ).
//! A key that is present but unusable is an error that names the file and the field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::family::Family;

/// Why a `config.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {cause}; check that the model directory is complete", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not valid JSON: {cause}; re-download the checkpoint", path.display())]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("{}: field `{field}` {problem}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error(
        "{} describes a `{model_type}` model ({what}), which vlm cannot run; vlm runs the families \
         clip, siglip (SigLIP and fixed-resolution SigLIP 2), metaclip_2 and open_clip (plain ViT): \
         pass one of those with --model (see `vlm models`)",
        path.display()
    )]
    NotClip {
        path: PathBuf,
        model_type: String,
        what: &'static str,
    },
    #[error(
        "{} is a BLIP checkpoint: it writes captions or answers about images, it does not score \
         labels; use `vlm caption` with it (`vlm ask` for a question-answering BLIP)",
        path.display()
    )]
    Blip { path: PathBuf },
}

/// The activation between the two MLP layers of every transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's original CLIP.
    QuickGelu,
    /// Exact (erf) GELU, used by LAION's OpenCLIP ports.
    Gelu,
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }
}

/// Where the text encoder takes its pooled output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EosPooling {
    /// Configs from before transformers PR #24773 say `eos_token_id: 2`; transformers then
    /// pools at the position of the largest token id, which is the end-of-text token.
    ArgmaxId,
    /// Pool at the first position holding this token id.
    FirstToken(u32),
    /// Pool at the last position of the fixed-length (padded) sequence: SigLIP, whose text
    /// tower sees no mask, so the last position is usually a pad token.
    Last,
}

/// The text tower.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub pooling: EosPooling,
    /// Whether attention is causal (CLIP) or bidirectional (SigLIP).
    pub causal: bool,
}

/// The vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches along one side of the (square) input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// A whole model: its family, both towers and the shared embedding size.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// The family, from `model_type` (or the open_clip layout).
    pub family: Family,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

impl ClipConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses `config.json` text; `origin` names the file in errors.
    pub fn from_json_str(json: &str, origin: &Path) -> Result<Self, ConfigError> {
        let root: Value = serde_json::from_str(json).map_err(|source| ConfigError::Json {
            path: origin.to_path_buf(),
            cause: source,
        })?;
        let fields = Fields {
            path: origin,
            prefix: "",
        };
        let root = fields.object(&root, "")?;
        let family = if let Some(model_type) = root.get("model_type") {
            let model_type = model_type.as_str().unwrap_or_default();
            if model_type == "blip" {
                return Err(ConfigError::Blip {
                    path: origin.to_path_buf(),
                });
            }
            family_of(model_type).map_err(|what| ConfigError::NotClip {
                path: origin.to_path_buf(),
                model_type: model_type.to_string(),
                what,
            })?
        } else if !root.contains_key("text_config") || !root.contains_key("vision_config") {
            return Err(fields.error(
                "text_config",
                "is missing (and there is no model_type); this does not look like a CLIP config.json",
            ));
        } else {
            Family::Clip
        };

        let text_map = tower_map(root, "text_config", &fields)?;
        let vision_map = tower_map(root, "vision_config", &fields)?;
        let text_fields = Fields {
            path: origin,
            prefix: "text_config.",
        };
        let vision_fields = Fields {
            path: origin,
            prefix: "vision_config.",
        };
        let text = TextConfig::parse(&text_map, &text_fields, family)?;
        let vision = VisionConfig::parse(&vision_map, &vision_fields, family)?;
        let projection_dim = if family == Family::Siglip {
            // No projection on the vision side: the embedding is the MAP head's output, and
            // the text head projects to the same width.
            if vision_fields.present_bool(&vision_map, "vision_use_head") == Some(false) {
                return Err(vision_fields.error(
                    "vision_use_head",
                    "is false: this SigLIP has no pooled image embedding, so it cannot classify",
                ));
            }
            let text_out = text_fields.usize(&text_map, "projection_size", text.hidden_size)?;
            if text_out != vision.hidden_size {
                return Err(text_fields.error(
                    "projection_size",
                    &format!(
                        "({text_out}) differs from vision_config.hidden_size ({}), so text and \
                         image embeddings cannot be compared",
                        vision.hidden_size
                    ),
                ));
            }
            vision.hidden_size
        } else {
            fields.usize(root, "projection_dim", 512)?
        };
        Ok(Self {
            family,
            text,
            vision,
            projection_dim,
        })
    }
}

/// The family a `model_type` names, or what it is when vlm cannot run it.
fn family_of(model_type: &str) -> Result<Family, &'static str> {
    match model_type {
        "clip" => Ok(Family::Clip),
        "siglip" => Ok(Family::Siglip),
        "metaclip_2" => Ok(Family::MetaClip2),
        "siglip2" => Err("SigLIP 2 NaFlex, variable resolution; not supported yet, use a fixed-resolution SigLIP 2 checkpoint such as google/siglip2-base-patch16-224"),
        "chinese_clip" => Err("ChineseCLIP, a BERT text tower; not supported yet"),
        "altclip" => Err("AltCLIP, an XLM-R text tower; not supported"),
        "blip-2" | "blip_2" => Err("BLIP-2, a captioning model with a large language model; not supported"),
        "clip_text_model" | "clip_vision_model" | "siglip_text_model" | "siglip_vision_model" => {
            Err("a single tower; vlm needs the full image-text checkpoint")
        }
        _ => Err("not an image-text model family vlm knows"),
    }
}

/// The tower's settings: `text_config`, overridden by the legacy `text_config_dict` as
/// transformers does.
pub(super) fn tower_map(
    root: &Map<String, Value>,
    key: &str,
    fields: &Fields,
) -> Result<Map<String, Value>, ConfigError> {
    let mut merged = match root.get(key) {
        None | Some(Value::Null) => Map::new(),
        Some(value) => fields.object(value, key)?.clone(),
    };
    let legacy = format!("{key}_dict");
    if let Some(value) = root.get(&legacy).filter(|v| !v.is_null()) {
        for (k, v) in fields.object(value, &legacy)? {
            merged.insert(k.clone(), v.clone());
        }
    }
    Ok(merged)
}

impl TextConfig {
    fn parse(map: &Map<String, Value>, f: &Fields, family: Family) -> Result<Self, ConfigError> {
        let siglip = family == Family::Siglip;
        let vocab_size = f.usize(map, "vocab_size", if siglip { 32000 } else { 49408 })?;
        // SigLIP's pad/eos ids in config.json are meaningless (transformers' defaults are
        // CLIP's); its tokenizer pads, and pooling takes the last position.
        let pad_token_id = if siglip {
            0
        } else {
            f.u32(map, "pad_token_id", 1)?
        };
        let pooling = match family {
            Family::Siglip => EosPooling::Last,
            // transformers' MetaClip2TextTransformer always pools at the first EOS, "even if
            // the EOS token is 2 (it is set to 2 in released weights)".
            Family::MetaClip2 => EosPooling::FirstToken(f.u32(map, "eos_token_id", 2)?),
            Family::Clip | Family::OpenClip => match f.u32(map, "eos_token_id", 49407)? {
                2 => EosPooling::ArgmaxId,
                eos => EosPooling::FirstToken(eos),
            },
        };
        let config = Self {
            vocab_size,
            hidden_size: f.usize(map, "hidden_size", if siglip { 768 } else { 512 })?,
            intermediate_size: f.usize(
                map,
                "intermediate_size",
                if siglip { 3072 } else { 2048 },
            )?,
            num_hidden_layers: f.usize(map, "num_hidden_layers", 12)?,
            num_attention_heads: f.usize(
                map,
                "num_attention_heads",
                if siglip { 12 } else { 8 },
            )?,
            max_position_embeddings: f.usize(
                map,
                "max_position_embeddings",
                if siglip { 64 } else { 77 },
            )?,
            hidden_act: f.activation(map, family)?,
            layer_norm_eps: f.f64(map, "layer_norm_eps", if siglip { 1e-6 } else { 1e-5 })?,
            pad_token_id,
            pooling,
            causal: !siglip,
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
    fn parse(map: &Map<String, Value>, f: &Fields, family: Family) -> Result<Self, ConfigError> {
        let siglip = family == Family::Siglip;
        let config = Self {
            hidden_size: f.usize(map, "hidden_size", 768)?,
            intermediate_size: f.usize(map, "intermediate_size", 3072)?,
            num_hidden_layers: f.usize(map, "num_hidden_layers", 12)?,
            num_attention_heads: f.usize(map, "num_attention_heads", 12)?,
            num_channels: f.usize(map, "num_channels", 3)?,
            image_size: f.usize(map, "image_size", 224)?,
            patch_size: f.usize(map, "patch_size", if siglip { 16 } else { 32 })?,
            hidden_act: f.activation(map, family)?,
            layer_norm_eps: f.f64(map, "layer_norm_eps", if siglip { 1e-6 } else { 1e-5 })?,
        };
        f.divisible(
            config.hidden_size,
            config.num_attention_heads,
            "num_attention_heads",
        )?;
        // SigLIP's "valid" patch convolution drops the right and bottom `image_size mod
        // patch_size` pixels (so400m: 384 px, patch 14, 6 px dropped); CLIP's position table
        // is sized for an exact grid.
        if !siglip {
            f.divisible(config.image_size, config.patch_size, "patch_size")?;
        } else if config.patch_size > config.image_size {
            return Err(f.error("patch_size", "is larger than image_size"));
        }
        if config.num_channels != 3 {
            return Err(f.error("num_channels", "must be 3 (RGB input)"));
        }
        Ok(config)
    }
}

/// Typed access to config fields, with errors that name the file and the field path.
pub(super) struct Fields<'a> {
    pub(super) path: &'a Path,
    pub(super) prefix: &'a str,
}

impl Fields<'_> {
    pub(super) fn error(&self, field: &str, problem: &str) -> ConfigError {
        ConfigError::Field {
            path: self.path.to_path_buf(),
            field: format!("{}{field}", self.prefix),
            problem: problem.to_string(),
        }
    }

    pub(super) fn object<'v>(
        &self,
        value: &'v Value,
        field: &str,
    ) -> Result<&'v Map<String, Value>, ConfigError> {
        value.as_object().ok_or_else(|| {
            if field.is_empty() {
                self.error("<top level>", "must be a JSON object")
            } else {
                self.error(field, "must be a JSON object")
            }
        })
    }

    pub(super) fn present<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn usize(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match Self::present(map, key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => usize::try_from(n).map_err(|_| self.error(key, "is too large")),
                _ => Err(self.error(key, &format!("must be a positive integer, found {v}"))),
            },
        }
    }

    pub(super) fn u32(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: u32,
    ) -> Result<u32, ConfigError> {
        match Self::present(map, key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    self.error(
                        key,
                        &format!("must be a token id (a non-negative integer), found {v}"),
                    )
                }),
        }
    }

    pub(super) fn f64(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: f64,
    ) -> Result<f64, ConfigError> {
        match Self::present(map, key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(self.error(key, &format!("must be a positive number, found {v}"))),
            },
        }
    }

    pub(super) fn present_bool(&self, map: &Map<String, Value>, key: &str) -> Option<bool> {
        Self::present(map, key).and_then(Value::as_bool)
    }

    fn activation(
        &self,
        map: &Map<String, Value>,
        family: Family,
    ) -> Result<Activation, ConfigError> {
        let default = match family {
            Family::Siglip => Activation::GeluTanh,
            _ => Activation::QuickGelu,
        };
        self.activation_or(map, default)
    }

    /// `hidden_act`, or `default` when absent.
    pub(super) fn activation_or(
        &self,
        map: &Map<String, Value>,
        default: Activation,
    ) -> Result<Activation, ConfigError> {
        match Self::present(map, "hidden_act") {
            None => Ok(default),
            Some(v) => v.as_str().and_then(Activation::parse).ok_or_else(|| {
                self.error(
                    "hidden_act",
                    &format!("is {v}; vlm supports quick_gelu, gelu, gelu_new, gelu_pytorch_tanh and relu"),
                )
            }),
        }
    }

    pub(super) fn divisible(&self, size: usize, by: usize, field: &str) -> Result<(), ConfigError> {
        if size.is_multiple_of(by) {
            Ok(())
        } else {
            Err(self.error(field, &format!("({by}) must divide {size} evenly")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siglip_takes_siglip_defaults_and_pools_last() {
        let config = parse(
            r#"{"model_type": "siglip", "text_config": {"pad_token_id": 1, "eos_token_id": 49407},
                "vision_config": {"image_size": 384, "patch_size": 14}}"#,
        )
        .expect("siglip parses");
        assert_eq!(config.family, Family::Siglip);
        assert_eq!(config.text.pooling, EosPooling::Last);
        assert!(!config.text.causal);
        assert_eq!(config.text.max_position_embeddings, 64);
        assert_eq!(config.text.hidden_act, Activation::GeluTanh);
        assert_eq!(config.text.layer_norm_eps, 1e-6);
        assert_eq!(config.vision.grid(), 27);
        assert_eq!(config.projection_dim, 768);
        let err = parse(
            r#"{"model_type": "siglip", "text_config": {"projection_size": 512}, "vision_config": {}}"#,
        )
        .expect_err("mismatched head");
        assert!(err.to_string().contains("projection_size"), "{err}");
    }

    #[test]
    fn metaclip_2_pools_at_the_first_eos_even_when_it_is_two() {
        let config = parse(
            r#"{"model_type": "metaclip_2", "text_config": {"eos_token_id": 2, "vocab_size": 901629},
                "vision_config": {}}"#,
        )
        .expect("parses");
        assert_eq!(config.family, Family::MetaClip2);
        assert_eq!(config.text.pooling, EosPooling::FirstToken(2));
        assert!(config.text.causal);
    }

    fn parse(json: &str) -> Result<ClipConfig, ConfigError> {
        ClipConfig::from_json_str(json, Path::new("m/config.json"))
    }

    #[test]
    fn absent_keys_take_transformers_defaults() {
        let config = parse(
            r#"{"model_type": "clip", "text_config": {"hidden_act": "gelu"}, "vision_config": {}}"#,
        )
        .expect("minimal config parses");
        assert_eq!(config.projection_dim, 512);
        assert_eq!(config.text.hidden_size, 512);
        assert_eq!(config.text.hidden_act, Activation::Gelu);
        assert_eq!(config.text.pooling, EosPooling::FirstToken(49407));
        assert_eq!(config.vision.hidden_size, 768);
        assert_eq!(config.vision.patch_size, 32);
        assert_eq!(config.vision.hidden_act, Activation::QuickGelu);
        assert_eq!(config.vision.grid(), 7);
    }

    #[test]
    fn legacy_eos_id_two_pools_at_argmax() {
        let config = parse(
            r#"{"model_type": "clip", "text_config": {"eos_token_id": 2}, "vision_config": {}}"#,
        )
        .expect("parses");
        assert_eq!(config.text.pooling, EosPooling::ArgmaxId);
    }

    #[test]
    fn config_dict_overrides_config() {
        let config = parse(
            r#"{"text_config": {"hidden_size": 64, "num_attention_heads": 2},
                "text_config_dict": {"hidden_size": 128},
                "vision_config": {"layer_norm_eps": 1e-6}}"#,
        )
        .expect("parses");
        assert_eq!(config.text.hidden_size, 128);
        assert_eq!(config.vision.layer_norm_eps, 1e-6);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = parse(r#"{"model_type": "clip", "text_config": {"hidden_act": "swish"}, "vision_config": {}}"#)
            .expect_err("unknown activation");
        let message = err.to_string();
        assert!(message.contains("m/config.json"), "{message}");
        assert!(message.contains("text_config.hidden_act"), "{message}");

        let err = parse(
            r#"{"model_type": "clip", "text_config": {}, "vision_config": {"patch_size": 30}}"#,
        )
        .expect_err("patch does not divide image");
        assert!(
            err.to_string().contains("vision_config.patch_size"),
            "{err}"
        );

        let err = parse(
            r#"{"model_type": "clip", "text_config": {"hidden_size": "big"}, "vision_config": {}}"#,
        )
        .expect_err("string width");
        assert!(err.to_string().contains("text_config.hidden_size"), "{err}");
    }

    #[test]
    fn other_architectures_are_refused() {
        let err = parse(r#"{"model_type": "siglip2", "text_config": {}, "vision_config": {}}"#)
            .expect_err("naflex");
        assert!(matches!(err, ConfigError::NotClip { .. }));
        assert!(err.to_string().contains("NaFlex"), "{err}");
        let err =
            parse(r#"{"architectures": ["BertModel"], "hidden_size": 768}"#).expect_err("bert");
        assert!(
            err.to_string().contains("does not look like a CLIP"),
            "{err}"
        );
        assert!(matches!(parse("[1, 2]"), Err(ConfigError::Field { .. })));
        assert!(matches!(parse("{"), Err(ConfigError::Json { .. })));
    }
}
