//! SigLIP and fixed-resolution SigLIP 2 in the Hugging Face layout: what differs from CLIP.
//!
//! - Config defaults: transformers' `SiglipTextConfig`/`SiglipVisionConfig`.
//! - The text tower pads every prompt to its context, sees no mask, pools at the last
//!   position and is bidirectional; `pad_token_id`/`eos_token_id` in `config.json` are
//!   meaningless (transformers' defaults are CLIP's).
//! - No projection on the vision side: the embedding is the MAP head's output, and the
//!   text head projects to the same width.
//! - Preprocessing: `SiglipImageProcessorPil`'s defaults (squash, no crop, mean/std 0.5)
//!   when the checkpoint has no `preprocessor_config.json`.
//! - Tokenizer: `SiglipTokenizer` (T5-style SentencePiece, canonicalised text, `</s>`
//!   padding) or SigLIP 2's `GemmaTokenizer`, per `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use super::Defaults;
use crate::fields::{FieldError, Fields};
use crate::model::config::{Activation, EosPooling, TextConfig, VisionConfig};
use crate::preprocess::{PreprocessConfig, PreprocessError};
use crate::tokenize::{ClipTokenizer, FixedLength, TextClean, TokenizeError};

/// transformers' `SiglipTextConfig`/`SiglipVisionConfig` defaults.
pub const DEFAULTS: Defaults = Defaults {
    vocab_size: 32000,
    text_hidden_size: 768,
    text_intermediate_size: 3072,
    text_heads: 12,
    context: 64,
    patch_size: 16,
    layer_norm_eps: 1e-6,
    hidden_act: Activation::GeluTanh,
};

/// The pad id (the tokenizer pads; the tower never reads it) and the pooling: the last
/// position of the padded sequence.
pub fn text_ids() -> (u32, EosPooling) {
    (0, EosPooling::Last)
}

/// SigLIP's "valid" patch convolution drops the right and bottom `image_size mod
/// patch_size` pixels (so400m: 384 px, patch 14, 6 px dropped), so only a patch larger
/// than the image is refused.
pub fn check_patches(f: &Fields, image_size: usize, patch_size: usize) -> Result<(), FieldError> {
    if patch_size > image_size {
        return Err(f.error("patch_size", "is larger than image_size"));
    }
    Ok(())
}

/// The embedding size: the vision width, which the text head must project to.
pub fn projection_dim(
    text_fields: &Fields,
    vision_fields: &Fields,
    text: &TextConfig,
    vision: &VisionConfig,
) -> Result<usize, FieldError> {
    if vision_fields
        .get("vision_use_head")
        .and_then(|v| v.as_bool())
        == Some(false)
    {
        return Err(vision_fields.error(
            "vision_use_head",
            "is false: this SigLIP has no pooled image embedding, so it cannot classify",
        ));
    }
    let text_out = text_fields.usize("projection_size", text.hidden_size)?;
    if text_out != vision.hidden_size {
        return Err(text_fields.error(
            "projection_size",
            format!(
                "({text_out}) differs from vision_config.hidden_size ({}), so text and image \
                 embeddings cannot be compared",
                vision.hidden_size
            ),
        ));
    }
    Ok(vision.hidden_size)
}

/// `preprocessor_config.json`, or `SiglipImageProcessorPil`'s defaults when the checkpoint
/// has none.
pub fn preprocess_config(path: &Path) -> Result<PreprocessConfig, PreprocessError> {
    if path.is_file() {
        PreprocessConfig::from_file(path)
    } else {
        Ok(PreprocessConfig::siglip_defaults())
    }
}

/// The tokenizer: `tokenizer.json` with the rules `tokenizer_config.json` beside it gives.
///
/// transformers 5.23 maps `model_type: "siglip"` to `SiglipTokenizer` (T5-style
/// SentencePiece: canonicalises, pads with `</s>`) unless the config names another class;
/// SigLIP 2's name `GemmaTokenizer` (no cleaning, pad `<pad>`).
pub fn tokenizer(path: Option<&Path>, context: usize) -> Result<ClipTokenizer, TokenizeError> {
    let Some(path) = path else {
        return Err(TokenizeError::Load {
            path: PathBuf::from("tokenizer.json"),
            message: "SigLIP checkpoints need their tokenizer.json".into(),
        });
    };
    let mut tokenizer = ClipTokenizer::from_file(path, context)?;
    let config_path = path.with_file_name("tokenizer_config.json");
    let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| TokenizeError::Load {
            path: config_path.clone(),
            message: e.to_string(),
        })?,
        Err(_) => serde_json::Value::Null,
    };
    let string = |key: &str| {
        config.get(key).and_then(|v| {
            v.as_str().map(str::to_string).or_else(|| {
                v.get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
        })
    };
    // Without a config, the vocabulary type tells the two apart: SentencePiece unigram
    // (v1) or byte-fallback BPE (Gemma).
    let inner = tokenizer.inner();
    let bpe = matches!(inner.get_model(), tokenizers::ModelWrapper::BPE(_));
    let class = string("tokenizer_class").unwrap_or_else(|| {
        if bpe {
            "GemmaTokenizer".into()
        } else {
            "SiglipTokenizer".into()
        }
    });
    let siglip_v1 = class.starts_with("SiglipTokenizer");
    let pad =
        string("pad_token").unwrap_or_else(|| if siglip_v1 { "</s>" } else { "<pad>" }.to_string());
    let pad_id = inner.token_to_id(&pad).ok_or_else(|| TokenizeError::Load {
        path: path.to_path_buf(),
        message: format!(
            "the pad token {pad:?} is not in the vocabulary; SigLIP prompts must be padded \
             with the tokenizer's own pad token"
        ),
    })?;
    let left = string("padding_side").as_deref() == Some("left");
    let eos =
        string("eos_token").unwrap_or_else(|| if siglip_v1 { "</s>" } else { "<eos>" }.to_string());
    let fixed = FixedLength {
        len: context,
        pad_id,
        left,
        eos_id: inner.token_to_id(&eos),
    };
    if siglip_v1 {
        let lowercase = config
            .get("do_lower_case")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        tokenizer = tokenizer.with_clean(TextClean::SiglipCanonical { lowercase });
    }
    Ok(tokenizer.with_fixed_length(fixed))
}
