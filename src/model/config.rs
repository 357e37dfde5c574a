//! The architecture of a checkpoint, read from its `config.json`.
//!
//! Keys that a config leaves out take the defaults of the family's transformers config
//! classes (`CLIPTextConfig`/`CLIPVisionConfig`/`CLIPConfig`, `MetaClip2Config`, or
//! `SiglipTextConfig`/`SiglipVisionConfig`), because that is what the checkpoint's authors
//! relied on (LAION's ports and Google's SigLIP configs list only the values that differ).
//! A key that is present but unusable is an error that names the file and the field.

use std::path::PathBuf;

use crate::family::Family;
use crate::fields::FieldError;

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
    pub(crate) fn parse(name: &str) -> Option<Self> {
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

impl From<FieldError> for ConfigError {
    fn from(error: FieldError) -> Self {
        Self::Field {
            path: error.path,
            field: error.field,
            problem: error.problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
