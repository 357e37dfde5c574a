//! Each family in one place: how its files become the model's configuration, the image
//! preprocessing and the tokenizer's rules.
//!
//! - [`clip`]: OpenAI CLIP and MetaCLIP 2 in the Hugging Face layout (`config.json`,
//!   `preprocessor_config.json`, `tokenizer.json`).
//! - [`siglip`]: SigLIP and fixed-resolution SigLIP 2 in the Hugging Face layout, with
//!   their own defaults, projection, preprocessing and SentencePiece/Gemma tokenizer rules.
//! - [`open_clip`]: open_clip's own layout (`open_clip_config.json`, open_clip tensor names).
//!
//! [`model::config`](super::config) reads the Hugging Face `config.json` fields every
//! family shares and asks the family here for what differs.

pub mod clip;
pub(crate) mod hf;
pub mod open_clip;
pub mod siglip;

use super::config::{Activation, ClipConfig, ConfigError, EosPooling, TextConfig, VisionConfig};
use crate::family::Family;
use crate::fields::{FieldError, Fields};
use crate::preprocess::{PreprocessConfig, PreprocessError};
use crate::source::ModelFiles;
use crate::tokenize::{ClipTokenizer, TokenizeError};

/// What a family's transformers config classes give the keys a `config.json` leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub vocab_size: usize,
    pub text_hidden_size: usize,
    pub text_intermediate_size: usize,
    pub text_heads: usize,
    /// The text tower's `max_position_embeddings`.
    pub context: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
}

/// The defaults of `family`'s config classes.
pub fn defaults(family: Family) -> &'static Defaults {
    match family {
        Family::Siglip => &siglip::DEFAULTS,
        Family::Clip | Family::MetaClip2 | Family::OpenClip => &clip::DEFAULTS,
    }
}

/// The family a `model_type` names, or what it is when vlm cannot run it.
pub fn of_model_type(model_type: &str) -> Result<Family, &'static str> {
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

/// The text tower's pad id and where it pools, from `text_config`.
pub fn text_ids(family: Family, f: &Fields) -> Result<(u32, EosPooling), FieldError> {
    match family {
        Family::Siglip => Ok(siglip::text_ids()),
        Family::Clip | Family::MetaClip2 | Family::OpenClip => clip::text_ids(family, f),
    }
}

/// Whether the text tower's attention is causal (CLIP) or bidirectional (SigLIP).
pub fn causal_text(family: Family) -> bool {
    family != Family::Siglip
}

/// Checks that the patches fit the image as the family's patch embedding needs.
pub fn check_patches(
    family: Family,
    f: &Fields,
    image_size: usize,
    patch_size: usize,
) -> Result<(), FieldError> {
    match family {
        Family::Siglip => siglip::check_patches(f, image_size, patch_size),
        Family::Clip | Family::MetaClip2 | Family::OpenClip => {
            f.divisible(image_size, patch_size, "patch_size")
        }
    }
}

/// The shared embedding size.
pub fn projection_dim(
    family: Family,
    root: &Fields,
    text_fields: &Fields,
    vision_fields: &Fields,
    text: &TextConfig,
    vision: &VisionConfig,
) -> Result<usize, FieldError> {
    match family {
        Family::Siglip => siglip::projection_dim(text_fields, vision_fields, text, vision),
        Family::Clip | Family::MetaClip2 | Family::OpenClip => root.usize("projection_dim", 512),
    }
}

/// The architecture and preprocessing of a checkpoint, read the way its family is stored;
/// `shape_of` gives the shape of a weights tensor (open_clip states some widths only there).
pub fn read_configs<E>(
    files: &ModelFiles,
    shape_of: impl Fn(&str) -> Result<Vec<usize>, E>,
) -> Result<(ClipConfig, PreprocessConfig), E>
where
    E: From<ConfigError> + From<PreprocessError>,
{
    if open_clip::is_open_clip(files) {
        return open_clip::read_configs(files, shape_of);
    }
    let config = ClipConfig::from_file(&files.config)?;
    let preprocess = match config.family {
        Family::Siglip => siglip::preprocess_config(&files.preprocessor)?,
        _ => PreprocessConfig::from_file(&files.preprocessor)?,
    };
    Ok((config, preprocess))
}

/// The tokenizer of a checkpoint of `family` with a text context of `context` tokens:
/// `tokenizer.json` (or, where a repo has none, the bundled CLIP BPE tokenizer) with the
/// family's cleaning and padding rules.
pub fn tokenizer(
    files: &ModelFiles,
    context: usize,
    family: Family,
) -> Result<ClipTokenizer, TokenizeError> {
    let path = files
        .tokenizer
        .is_file()
        .then_some(files.tokenizer.as_path());
    match family {
        Family::Clip | Family::MetaClip2 => ClipTokenizer::load(path, context),
        Family::OpenClip => open_clip::tokenizer(path, context),
        Family::Siglip => siglip::tokenizer(path, context),
    }
}
