//! OpenAI CLIP and MetaCLIP 2 in the Hugging Face layout: transformers' `CLIPTextConfig`/
//! `CLIPVisionConfig`/`CLIPConfig` (and `MetaClip2Config`) defaults, where the text tower
//! pools, `preprocessor_config.json` as `CLIPImageProcessorPil` reads it, and
//! `tokenizer.json` as it is. open_clip's layout starts from the same defaults.

use super::Defaults;
use crate::family::Family;
use crate::fields::{FieldError, Fields};
use crate::model::config::{Activation, EosPooling};

/// transformers' CLIP config defaults.
pub const DEFAULTS: Defaults = Defaults {
    vocab_size: 49408,
    text_hidden_size: 512,
    text_intermediate_size: 2048,
    text_heads: 8,
    context: 77,
    patch_size: 32,
    layer_norm_eps: 1e-5,
    hidden_act: Activation::QuickGelu,
};

/// The pad id and where the text tower pools, from `text_config`.
pub fn text_ids(family: Family, f: &Fields) -> Result<(u32, EosPooling), FieldError> {
    let pad = f.u32("pad_token_id", 1)?;
    let pooling = match family {
        // transformers' MetaClip2TextTransformer always pools at the first EOS, "even if
        // the EOS token is 2 (it is set to 2 in released weights)".
        Family::MetaClip2 => EosPooling::FirstToken(f.u32("eos_token_id", 2)?),
        // Configs from before transformers PR #24773 say `eos_token_id: 2`, which means
        // pooling at the largest token id (the end-of-text token).
        _ => match f.u32("eos_token_id", 49407)? {
            2 => EosPooling::ArgmaxId,
            eos => EosPooling::FirstToken(eos),
        },
    };
    Ok((pad, pooling))
}
