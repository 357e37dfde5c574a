//! Generation settings, and where transformers 5.23 takes each one from for BLIP.
//!
//! `BlipForConditionalGeneration.generate` and `BlipForQuestionAnswering.generate` call
//! `self.text_decoder.generate(...)`. The text decoder is a model of its own whose
//! `generation_config` was built from `text_config` when the model was constructed
//! (`GenerationConfig.from_model_config`); the checkpoint's top-level
//! `generation_config.json` is loaded into the outer model's `generation_config`, which the
//! outer `generate` never reads. And `PreTrainedConfig.__init__` pops every generation
//! parameter from a config (`max_length`, `num_beams`, `min_length`, `repetition_penalty`,
//! `length_penalty`, `no_repeat_ngram_size`, `early_stopping`, ... which Salesforce's
//! `config.json` files hold in `text_config`, saved by transformers 4.26), so the text
//! decoder's generation config keeps only token ids. What is left:
//!
//! | setting | from |
//! |---|---|
//! | the start token | `text_config.bos_token_id` (`generate` writes it over the prompt's `[CLS]`) |
//! | the end token | `text_config.sep_token_id` (passed as `eos_token_id`) |
//! | padding | `text_config.pad_token_id` (fills finished rows of a batch; no effect on a sequence) |
//! | length | 20 new tokens (`GenerationConfig` default `max_length` 20 plus the input length), capped at `text_config.max_position_embeddings` |
//! | everything else | transformers' defaults: greedy (`num_beams` 1), `min_length` 0, `repetition_penalty` 1, `length_penalty` 1, `no_repeat_ngram_size` 0, `early_stopping` false |
//!
//! Arguments to `generate` (here: [`GenerationOptions`]) override the defaults; an explicit
//! `max_length` or `max_new_tokens` is not capped (transformers then fails once a sequence
//! outgrows the position table; vlm refuses such a length before it starts).
//! `tests/fixtures/make_blip_fixtures.py` builds a checkpoint (`blip-files`) that sets all
//! of the ignored keys and changes every one that is read, and records what transformers does.

use super::CaptionError;

/// transformers' `GenerationConfig` default `max_length`: with nothing set, `generate`
/// produces this many new tokens.
pub const DEFAULT_NEW_TOKENS: usize = 20;

/// When beam search stops looking for better sequences (`early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `False` (the default): stop once the best running beam, at its current length,
    /// cannot beat the worst finished one.
    #[default]
    Heuristic,
    /// `True`: stop as soon as `num_beams` sequences have finished.
    Finished,
    /// `"never"`: the canonical beam search; with a positive length penalty the best
    /// running beam is judged at the maximum length.
    Never,
}

impl std::str::FromStr for EarlyStopping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "false" | "heuristic" => Ok(Self::Heuristic),
            "true" | "finished" => Ok(Self::Finished),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "early stopping {other:?} is not one of false, true, never"
            )),
        }
    }
}

/// The most beams a caption or answer may search with (`--beams`, a request's `beams`).
pub const MAX_BEAMS: u64 = 64;
/// The most tokens a caption or answer may add (`--max-new-tokens`, `max_new_tokens`).
pub const MAX_NEW_TOKENS: u64 = 512;

/// How to generate: the arguments transformers' `generate` takes, `None` or the default
/// meaning "as the checkpoint's files say" (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Beams; 1 is greedy search.
    pub num_beams: usize,
    /// New tokens at most (the start token and prompt not counted). Wins over `max_length`.
    pub max_new_tokens: Option<usize>,
    /// Tokens at most in the whole sequence, start token and prompt included.
    pub max_length: Option<usize>,
    /// The end token is barred while the sequence (start token and prompt included) is
    /// shorter than this.
    pub min_length: usize,
    /// Logits (greedy) or log-probabilities (beams) of tokens already in the sequence are
    /// divided by this when positive, multiplied when negative.
    pub repetition_penalty: f32,
    /// Beam scores are the summed log-probabilities divided by `length ^ length_penalty`.
    pub length_penalty: f32,
    /// No n-gram of this size occurs twice (0: off).
    pub no_repeat_ngram_size: usize,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            num_beams: 1,
            max_new_tokens: None,
            max_length: None,
            min_length: 0,
            repetition_penalty: 1.0,
            length_penalty: 1.0,
            no_repeat_ngram_size: 0,
            early_stopping: EarlyStopping::Heuristic,
        }
    }
}

/// Settings with every length decided, for one run over inputs of one length.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub num_beams: usize,
    /// Total sequence length at which generation stops.
    pub max_length: usize,
    pub min_length: usize,
    pub repetition_penalty: f32,
    pub length_penalty: f32,
    pub no_repeat_ngram_size: usize,
    pub early_stopping: EarlyStopping,
    /// The token that ends a sequence.
    pub eos: u32,
}

impl GenerationOptions {
    // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/utils.py#L2016-L2070
    /// The settings for inputs of `input_len` tokens (start token and prompt) on a decoder
    /// with `positions` position embeddings, as `_prepare_generated_length` decides them.
    pub(crate) fn resolve(
        &self,
        input_len: usize,
        positions: usize,
        eos: u32,
    ) -> Result<Resolved, CaptionError> {
        let bad = |reason: String| CaptionError::Settings { reason };
        if self.num_beams == 0 {
            return Err(bad("the number of beams must be at least 1".into()));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(bad(format!(
                "the repetition penalty must be a positive number, not {}",
                self.repetition_penalty
            )));
        }
        if !self.length_penalty.is_finite() {
            return Err(bad("the length penalty must be a finite number".into()));
        }
        let max_length = match (self.max_new_tokens, self.max_length) {
            (Some(0), _) => return Err(bad("max new tokens must be at least 1".into())),
            (Some(new), _) => new + input_len,
            (None, Some(total)) => total,
            (None, None) => (DEFAULT_NEW_TOKENS + input_len).min(positions),
        };
        if input_len >= max_length {
            return Err(bad(format!(
                "the input is {input_len} tokens (start token and prompt), so a maximum length \
                 of {max_length} leaves nothing to generate; raise the maximum length or set \
                 max new tokens"
            )));
        }
        if max_length > positions {
            return Err(bad(format!(
                "a maximum length of {max_length} tokens is past the {positions} positions the \
                 decoder has embeddings for; lower the maximum length or max new tokens"
            )));
        }
        Ok(Resolved {
            num_beams: self.num_beams,
            max_length,
            min_length: self.min_length,
            repetition_penalty: self.repetition_penalty,
            length_penalty: self.length_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            early_stopping: self.early_stopping,
            eos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_prepare_generated_length() {
        let o = GenerationOptions::default();
        // 20 new tokens after the input, capped by the position table.
        assert_eq!(o.resolve(1, 512, 102).unwrap().max_length, 21);
        assert_eq!(o.resolve(9, 512, 102).unwrap().max_length, 29);
        assert_eq!(o.resolve(9, 12, 102).unwrap().max_length, 12);
        // max_new_tokens wins over max_length; max_length counts the input.
        let o = GenerationOptions {
            max_new_tokens: Some(4),
            max_length: Some(50),
            ..Default::default()
        };
        assert_eq!(o.resolve(3, 512, 102).unwrap().max_length, 7);
        let o = GenerationOptions {
            max_length: Some(6),
            ..Default::default()
        };
        assert_eq!(o.resolve(3, 512, 102).unwrap().max_length, 6);
        let err = o.resolve(6, 512, 102).unwrap_err().to_string();
        assert!(err.contains("leaves nothing to generate"), "{err}");
        let o = GenerationOptions {
            max_new_tokens: Some(15),
            ..Default::default()
        };
        let err = o.resolve(1, 12, 102).unwrap_err().to_string();
        assert!(err.contains("past the 12 positions"), "{err}");
    }

    #[test]
    fn nonsense_settings_are_refused() {
        for o in [
            GenerationOptions {
                num_beams: 0,
                ..Default::default()
            },
            GenerationOptions {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            GenerationOptions {
                length_penalty: f32::NAN,
                ..Default::default()
            },
            GenerationOptions {
                max_new_tokens: Some(0),
                ..Default::default()
            },
        ] {
            assert!(o.resolve(1, 512, 102).is_err(), "{o:?}");
        }
        assert_eq!("never".parse(), Ok(EarlyStopping::Never));
        assert_eq!("true".parse(), Ok(EarlyStopping::Finished));
        assert!("sometimes".parse::<EarlyStopping>().is_err());
    }
}
