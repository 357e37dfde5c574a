//! BLIP's WordPiece tokenizer (`BertTokenizer` with `[DEC]` added as the start token),
//! from the checkpoint's `tokenizer.json`, as `BlipProcessor` uses it: prompts and
//! questions get `[CLS] ... [SEP]` from the post-processor, generated ids are decoded
//! without special tokens, then with transformers' `clean_up_tokenization` when
//! `tokenizer_config.json` asks for it.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::tokenize::TokenizeError;

/// The tokenizer of a BLIP checkpoint.
pub struct BlipTokenizer {
    inner: Tokenizer,
    /// `clean_up_tokenization_spaces` from `tokenizer_config.json` (transformers 5's
    /// default when absent: false).
    clean_up: bool,
}

impl BlipTokenizer {
    /// Loads `tokenizer.json`, and `tokenizer_config.json` beside it when present.
    pub fn from_file(path: &Path) -> Result<Self, TokenizeError> {
        let load_error = |path: PathBuf, message: String| TokenizeError::Load { path, message };
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| load_error(path.to_path_buf(), e.to_string()))?;
        // The processor neither truncates nor pads a single text.
        inner
            .with_truncation(None)
            .map_err(|e| load_error(path.to_path_buf(), e.to_string()))?;
        inner.with_padding(None);
        let config_path = path.with_file_name("tokenizer_config.json");
        let clean_up = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| load_error(config_path.clone(), e.to_string()))?
                .get("clean_up_tokenization_spaces")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            Err(_) => false,
        };
        // transformers skips the clean-up for BPE vocabularies, whatever the file says.
        let clean_up = clean_up && !matches!(inner.get_model(), tokenizers::ModelWrapper::BPE(_));
        Ok(Self { inner, clean_up })
    }

    /// `[CLS] text [SEP]` as ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| TokenizeError::Encode {
                prompt: text.to_string(),
                message: e.to_string(),
            })?;
        let ids = encoding.get_ids().to_vec();
        // generate() overwrites the first id with the start token and drops the last: both
        // must be the post-processor's [CLS] and [SEP], or real text would be lost.
        let special = encoding.get_special_tokens_mask();
        if ids.len() < 2 || special.first() != Some(&1) || special.last() != Some(&1) {
            return Err(TokenizeError::Empty {
                prompt: text.to_string(),
            });
        }
        Ok(ids)
    }

    /// The text of generated ids, special tokens left out (`decode(ids,
    /// skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        let text = self
            .inner
            .decode(ids, true)
            .map_err(|e| TokenizeError::Encode {
                prompt: format!("{ids:?}"),
                message: e.to_string(),
            })?;
        Ok(if self.clean_up {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// transformers' `PreTrainedTokenizerBase.clean_up_tokenization` (tokenization_utils_base.py).
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokenizer_without_cls_and_sep_is_refused() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/blip-caption/tokenizer.json");
        let tok = BlipTokenizer::from_file(&fixture).unwrap();
        let ids = tok.encode("a photograph of").unwrap();
        assert_eq!((ids[0], *ids.last().unwrap()), (2, 3), "[CLS] ... [SEP]");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
        json["post_processor"] = serde_json::Value::Null;
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("tokenizer.json");
        std::fs::write(&bare, json.to_string()).unwrap();
        let err = BlipTokenizer::from_file(&bare)
            .unwrap()
            .encode("a photograph of")
            .unwrap_err()
            .to_string();
        assert!(err.contains("post-processor"), "{err}");
    }

    #[test]
    fn clean_up_follows_transformers() {
        assert_eq!(
            clean_up_tokenization("is n't it , yes . he 's here ! ok ?"),
            "isn't it, yes. he's here! ok?"
        );
        assert_eq!(clean_up_tokenization("a ' b"), "a'b");
    }
}
