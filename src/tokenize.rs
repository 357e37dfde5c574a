//! Prompt tokenisation with the checkpoint's own `tokenizer.json`.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("cannot load tokenizer {}: {message}; re-download the checkpoint or check that the file is a tokenizers JSON", path.display())]
    Load { path: PathBuf, message: String },
    #[error("cannot tokenise {prompt:?}: {message}")]
    Encode { prompt: String, message: String },
    #[error("the tokenizer turned {prompt:?} into no tokens; the tokenizer.json lacks its start/end-of-text post-processor")]
    Empty { prompt: String },
}

/// Token ids for one prompt, ready for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// The prompt was longer than the model's context and lost its tail.
    pub truncated: bool,
}

/// A CLIP tokenizer that cuts prompts to the model's context, as transformers does with
/// `truncation=True, max_length=context`.
pub struct ClipTokenizer {
    inner: Tokenizer,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; `context` is the text encoder's `max_position_embeddings`.
    pub fn from_file(path: &Path, context: usize) -> Result<Self, TokenizeError> {
        let load_error = |message: String| TokenizeError::Load {
            path: path.to_path_buf(),
            message,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| load_error(e.to_string()))?;
        // The start/end tokens count against the context; the tokenizer accounts for the
        // ones its post-processor adds.
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| load_error(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner })
    }

    /// Tokenises one prompt with start and end-of-text tokens.
    pub fn encode(&self, prompt: &str) -> Result<Tokens, TokenizeError> {
        let encoding = self
            .inner
            .encode(prompt, true)
            .map_err(|e| TokenizeError::Encode {
                prompt: prompt.to_string(),
                message: e.to_string(),
            })?;
        let ids = encoding.get_ids().to_vec();
        if ids.is_empty() {
            return Err(TokenizeError::Empty {
                prompt: prompt.to_string(),
            });
        }
        Ok(Tokens {
            ids,
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }
}
