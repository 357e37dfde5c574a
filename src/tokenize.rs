//! Prompt tokenisation with the checkpoint's own `tokenizer.json` (or, for open_clip
//! repos that ship none, the CLIP BPE tokenizer bundled in the binary), plus what each
//! family's reference does around it: SigLIP's canonicalisation and fixed-length padding,
//! open_clip's HTML unescaping.

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

/// The CLIP BPE tokenizer (openai/clip-vit-base-patch32's `tokenizer.json`, rebuilt from
/// open_clip's `bpe_simple_vocab_16e6.txt.gz` by `tests/fixtures/make_family_fixtures.py`).
const BUNDLED_CLIP_BPE: &str = include_str!("../assets/clip_bpe_tokenizer.json");

/// Text cleaning applied before the tokenizer, as the family's reference does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextClean {
    /// None beyond the tokenizer's own normaliser (CLIP, MetaCLIP 2, SigLIP 2 in transformers).
    None,
    /// transformers' `SiglipTokenizer.canonicalize_text` (from big_vision): lowercase (when
    /// `do_lower_case`), drop ASCII punctuation, collapse whitespace, strip.
    SiglipCanonical { lowercase: bool },
    /// open_clip's `clean="lower"`: HTML entities unescaped (twice) before the CLIP
    /// tokenizer's own whitespace and case normalisation. ftfy's mojibake repair is not
    /// reproduced.
    OpenClip,
}

/// A tokenizer that cuts prompts to the model's context, as transformers does with
/// `truncation=True, max_length=context`, and pads them to it when the family needs that.
pub struct ClipTokenizer {
    inner: Tokenizer,
    clean: TextClean,
    /// SigLIP: pad every prompt to exactly this many tokens with this id (the tower sees
    /// no mask and pools at the last position).
    fixed: Option<FixedLength>,
}

/// Fixed-length padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedLength {
    pub len: usize,
    pub pad_id: u32,
    /// `padding_side: "left"` in `tokenizer_config.json`.
    pub left: bool,
    /// The end-of-sequence id, appended when the `tokenizer.json` has no post-processor
    /// that adds it (`SiglipTokenizer._add_eos_if_not_present`, Gemma's `add_eos_token`).
    pub eos_id: Option<u32>,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; `context` is the text encoder's `max_position_embeddings`.
    pub fn from_file(path: &Path, context: usize) -> Result<Self, TokenizeError> {
        let inner = Tokenizer::from_file(path).map_err(|e| TokenizeError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::with_truncation(inner, path, context)
    }

    /// Loads `path`, or the bundled CLIP BPE tokenizer when `None` (an open_clip repo
    /// without a `tokenizer.json`); `context` is the text encoder's
    /// `max_position_embeddings`. The family adds its cleaning and padding rules
    /// ([`crate::model::family::tokenizer`]).
    pub fn load(path: Option<&Path>, context: usize) -> Result<Self, TokenizeError> {
        match path {
            Some(path) => Self::from_file(path, context),
            None => {
                let origin = Path::new("<bundled CLIP BPE tokenizer>");
                let inner =
                    BUNDLED_CLIP_BPE
                        .parse::<Tokenizer>()
                        .map_err(|e| TokenizeError::Load {
                            path: origin.to_path_buf(),
                            message: e.to_string(),
                        })?;
                Self::with_truncation(inner, origin, context)
            }
        }
    }

    /// Cleans text with `clean` before tokenizing.
    pub fn with_clean(mut self, clean: TextClean) -> Self {
        self.clean = clean;
        self
    }

    /// Pads every prompt to a fixed length (for a tower that sees no mask).
    pub fn with_fixed_length(mut self, fixed: FixedLength) -> Self {
        self.fixed = Some(fixed);
        self
    }

    /// The `tokenizers` tokenizer inside, for the family's rules (its vocabulary).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The text cleaning in use.
    pub fn clean(&self) -> TextClean {
        self.clean
    }

    /// Whether prompts are padded to a fixed length, and with which id.
    pub fn pad_id(&self) -> Option<u32> {
        self.fixed.map(|f| f.pad_id)
    }

    fn with_truncation(
        mut inner: Tokenizer,
        path: &Path,
        context: usize,
    ) -> Result<Self, TokenizeError> {
        let load_error = |message: String| TokenizeError::Load {
            path: path.to_path_buf(),
            message,
        };
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
        Ok(Self {
            inner,
            clean: TextClean::None,
            fixed: None,
        })
    }

    /// Tokenises one prompt with start and end-of-text tokens.
    pub fn encode(&self, prompt: &str) -> Result<Tokens, TokenizeError> {
        let cleaned = match self.clean {
            TextClean::None => None,
            TextClean::SiglipCanonical { lowercase } => Some(canonicalize(prompt, lowercase)),
            TextClean::OpenClip => Some(unescape_html(&unescape_html(prompt))),
        };
        let text = cleaned.as_deref().unwrap_or(prompt);
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| TokenizeError::Encode {
                prompt: prompt.to_string(),
                message: e.to_string(),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        let mut truncated = !encoding.get_overflowing().is_empty();
        if let Some(eos) = self.fixed.and_then(|f| f.eos_id) {
            if ids.last() != Some(&eos) {
                let context = self.fixed.map_or(usize::MAX, |f| f.len);
                if ids.len() >= context {
                    ids.truncate(context - 1);
                    truncated = true;
                }
                ids.push(eos);
            }
        }
        if ids.is_empty() {
            return Err(TokenizeError::Empty {
                prompt: prompt.to_string(),
            });
        }
        if let Some(fixed) = self.fixed {
            let padding = fixed.len.saturating_sub(ids.len());
            if fixed.left {
                ids.splice(0..0, std::iter::repeat_n(fixed.pad_id, padding));
            } else {
                ids.resize(ids.len() + padding, fixed.pad_id);
            }
        }
        Ok(Tokens { ids, truncated })
    }
}

/// Python's `str.isspace`, which `re`'s `\s` follows: Unicode White_Space plus the
/// information separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// transformers 5.23.0 `SiglipTokenizer.canonicalize_text` (tokenization_siglip.py): lowercase,
/// remove ASCII `string.punctuation`, `re.sub(r"\s+", " ")`, `strip()`.
pub fn canonicalize(text: &str, lowercase: bool) -> String {
    let lowered;
    let text = if lowercase {
        lowered = text.to_lowercase();
        lowered.as_str()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars().filter(|c| !c.is_ascii_punctuation()) {
        if python_space(c) {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// Python's `html.unescape` for numeric references and the entities prompts use; other
/// named entities are left as written.
pub fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1);
        let (name, after) = match end {
            Some(e) if rest[e..].starts_with(';') => (&rest[1..e], &rest[e + 1..]),
            _ => (
                &rest[1..end.unwrap_or(rest.len())],
                &rest[end.unwrap_or(rest.len())..],
            ),
        };
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let value = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            value.and_then(char::from_u32).map(String::from)
        } else {
            match name {
                "amp" => Some("&".into()),
                "lt" => Some("<".into()),
                "gt" => Some(">".into()),
                "quot" => Some("\"".into()),
                "apos" => Some("'".into()),
                "nbsp" => Some("\u{a0}".into()),
                _ => None,
            }
        };
        match decoded {
            Some(d) => {
                out.push_str(&d);
                rest = after;
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_follows_big_vision() {
        assert_eq!(
            canonicalize("  This is a PHOTO, of a \"cat\"!!! ", true),
            "this is a photo of a cat"
        );
        assert_eq!(
            canonicalize("a\x1cb\u{3000}c\u{a0}d\t\ne", true),
            "a b c d e"
        );
        // Only ASCII punctuation goes.
        assert_eq!(canonicalize("¿Qué? ¡Sí! 。", false), "¿Qué ¡Sí 。");
        assert_eq!(canonicalize("!!!", true), "");
    }

    #[test]
    fn html_entities_are_unescaped_like_python() {
        assert_eq!(unescape_html("fish &amp; chips"), "fish & chips");
        assert_eq!(unescape_html("&#39;q&#x27; &lt;b&gt;"), "'q' <b>");
        assert_eq!(unescape_html("AT&T &unknown; &"), "AT&T &unknown; &");
        assert_eq!(unescape_html(&unescape_html("&amp;amp;")), "&");
    }
}
