//! BLIP's `config.json`: `BlipConfig` with its `text_config` and `vision_config`, with the
//! defaults of transformers 5.23's `configuration_blip.py` for missing keys.
//!
//! Generation settings that older configs carry in `text_config` (`max_length`,
//! `num_beams`, ... as Salesforce's checkpoints saved them with transformers 4.26) are not
//! read: transformers 5.23 pops them when it builds the config (`PreTrainedConfig.__init__`),
//! so they change nothing there either (see [`crate::caption::settings`]).

use std::path::Path;

use serde_json::Value;

use crate::fields::{FieldError, Fields};
use crate::model::config::{Activation, ConfigError, VisionConfig};
use crate::model::family::hf::{activation, tower};

/// What a BLIP checkpoint does, from `architectures` (or, without it, from its weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlipTask {
    /// `BlipForConditionalGeneration`: a caption for an image.
    Caption,
    /// `BlipForQuestionAnswering`: an answer to a question about an image.
    Answer,
}

impl BlipTask {
    /// `caption` or `answer`, as the registry and outputs name it.
    pub fn name(self) -> &'static str {
        match self {
            BlipTask::Caption => "caption",
            BlipTask::Answer => "answer",
        }
    }
}

/// The BERT-style text transformer (`BlipTextConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the states the cross-attention reads: always the vision width
    /// (`BlipConfig.__post_init__` overwrites whatever the file says).
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// The decoder's start token (`[DEC]` in the released vocabularies).
    pub bos_token_id: u32,
    /// The token that ends a generated sequence: `generate` passes `sep_token_id` as the
    /// decoder's `eos_token_id`.
    pub sep_token_id: u32,
    /// Fills finished rows of transformers' batched output; vlm's results hold none.
    pub pad_token_id: u32,
}

/// A BLIP checkpoint's architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct BlipConfig {
    /// From `architectures`; `None` when the file does not say (the weights then tell).
    pub task: Option<BlipTask>,
    pub text: BlipTextConfig,
    pub vision: VisionConfig,
}

impl BlipConfig {
    /// Reads and validates a BLIP `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses `config.json` text; `origin` names the file in errors.
    pub fn from_json_str(json: &str, origin: &Path) -> Result<Self, ConfigError> {
        let root: Value = serde_json::from_str(json).map_err(|cause| ConfigError::Json {
            path: origin.to_path_buf(),
            cause,
        })?;
        let root = Fields::root(&root, origin)?;
        match root.str("model_type") {
            Some("blip") => {}
            other => {
                return Err(root
                    .error(
                        "model_type",
                        format!(
                            "is {}, not \"blip\"; captions and answers need a BLIP checkpoint \
                             (see `vlm models`)",
                            other.map_or("missing".to_string(), |t| format!("{t:?}"))
                        ),
                    )
                    .into())
            }
        }
        let task = task_of(&root)?;
        let vf = tower(&root, "vision_config")?;
        let tf = tower(&root, "text_config")?;
        // configuration_blip.py, BlipVisionConfig
        let vision = VisionConfig {
            hidden_size: vf.usize("hidden_size", 768)?,
            intermediate_size: vf.usize("intermediate_size", 3072)?,
            num_hidden_layers: vf.usize("num_hidden_layers", 12)?,
            num_attention_heads: vf.usize("num_attention_heads", 12)?,
            num_channels: vf.usize("num_channels", 3)?,
            image_size: vf.usize("image_size", 384)?,
            patch_size: vf.usize("patch_size", 16)?,
            hidden_act: activation(&vf, Activation::Gelu)?,
            layer_norm_eps: vf.f64("layer_norm_eps", 1e-5)?,
        };
        vf.divisible(
            vision.hidden_size,
            vision.num_attention_heads,
            "num_attention_heads",
        )?;
        vf.divisible(vision.image_size, vision.patch_size, "patch_size")?;
        if vision.num_channels != 3 {
            return Err(vf.error("num_channels", "must be 3 (RGB input)").into());
        }
        // configuration_blip.py, BlipTextConfig
        let text = BlipTextConfig {
            vocab_size: tf.usize("vocab_size", 30524)?,
            hidden_size: tf.usize("hidden_size", 768)?,
            encoder_hidden_size: vision.hidden_size,
            intermediate_size: tf.usize("intermediate_size", 3072)?,
            num_hidden_layers: tf.usize("num_hidden_layers", 12)?,
            num_attention_heads: tf.usize("num_attention_heads", 8)?,
            max_position_embeddings: tf.usize("max_position_embeddings", 512)?,
            hidden_act: activation(&tf, Activation::Gelu)?,
            layer_norm_eps: tf.f64("layer_norm_eps", 1e-12)?,
            bos_token_id: tf.u32("bos_token_id", 30522)?,
            sep_token_id: tf.u32("sep_token_id", 102)?,
            pad_token_id: tf.u32("pad_token_id", 0)?,
        };
        tf.divisible(
            text.hidden_size,
            text.num_attention_heads,
            "num_attention_heads",
        )?;
        for (field, id) in [
            ("bos_token_id", text.bos_token_id),
            ("sep_token_id", text.sep_token_id),
            ("pad_token_id", text.pad_token_id),
        ] {
            if id as usize >= text.vocab_size {
                return Err(tf
                    .error(field, "is outside the vocabulary (vocab_size)")
                    .into());
            }
        }
        if task == Some(BlipTask::Answer) && text.hidden_size != vision.hidden_size {
            // The answer decoder cross-attends to the question encoding with weights sized
            // for the image (encoder_hidden_size); transformers fails on such a model too.
            return Err(tf
                .error(
                    "hidden_size",
                    format!(
                        "({}) differs from vision_config.hidden_size ({}): a question-answering \
                         BLIP needs them equal",
                        text.hidden_size, vision.hidden_size
                    ),
                )
                .into());
        }
        Ok(Self { task, text, vision })
    }
}

/// The task `architectures` names, if it names one.
fn task_of(root: &Fields) -> Result<Option<BlipTask>, FieldError> {
    let Some(list) = root.get("architectures").and_then(Value::as_array) else {
        return Ok(None);
    };
    for name in list.iter().filter_map(Value::as_str) {
        match name {
            "BlipForConditionalGeneration" => return Ok(Some(BlipTask::Caption)),
            "BlipForQuestionAnswering" => return Ok(Some(BlipTask::Answer)),
            "BlipForImageTextRetrieval" | "BlipModel" => {
                return Err(root.error(
                    "architectures",
                    format!(
                        "is {name}: image-text matching, which vlm does not run; captions need \
                         BlipForConditionalGeneration, answers BlipForQuestionAnswering"
                    ),
                ))
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BlipConfig, ConfigError> {
        BlipConfig::from_json_str(json, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_blip_base_and_legacy_generation_keys_are_ignored() {
        let c = parse(
            r#"{"model_type": "blip", "architectures": ["BlipForConditionalGeneration"],
                "text_config": {"num_attention_heads": 12, "max_length": 5, "num_beams": 4},
                "vision_config": {}}"#,
        )
        .unwrap();
        assert_eq!(c.task, Some(BlipTask::Caption));
        assert_eq!((c.vision.image_size, c.vision.patch_size), (384, 16));
        assert_eq!(c.vision.hidden_act, Activation::Gelu);
        assert_eq!(
            (
                c.text.bos_token_id,
                c.text.sep_token_id,
                c.text.pad_token_id
            ),
            (30522, 102, 0)
        );
        assert_eq!((c.text.vocab_size, c.text.num_attention_heads), (30524, 12));
        assert_eq!(c.text.layer_norm_eps, 1e-12);
    }

    #[test]
    fn encoder_width_is_the_vision_width_whatever_the_file_says() {
        let c = parse(
            r#"{"model_type": "blip", "text_config": {"encoder_hidden_size": 99, "hidden_size": 64,
                "num_attention_heads": 4}, "vision_config": {"hidden_size": 32, "num_attention_heads": 2}}"#,
        )
        .unwrap();
        assert_eq!(c.text.encoder_hidden_size, 32);
        assert_eq!(c.task, None);
    }

    #[test]
    fn other_models_and_broken_fields_are_refused_by_name() {
        let err = parse(r#"{"model_type": "clip"}"#).unwrap_err().to_string();
        assert!(
            err.contains("model_type") && err.contains("\"clip\""),
            "{err}"
        );
        let err =
            parse(r#"{"model_type": "blip", "architectures": ["BlipForImageTextRetrieval"]}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("image-text matching"), "{err}");
        let err = parse(r#"{"model_type": "blip", "text_config": {"vocab_size": 10}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("text_config.bos_token_id"), "{err}");
        let err = parse(
            r#"{"model_type": "blip", "architectures": ["BlipForQuestionAnswering"],
                "text_config": {"hidden_size": 512}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("question-answering"), "{err}");
    }
}
