//! Captions and answers about images with BLIP, token for token as transformers 5.23's
//! `generate` makes them.
//!
//! [`Captioner`] ties a BLIP checkpoint together: the model ([`crate::model::blip`]), its
//! WordPiece tokenizer and its image preprocessing. Images are encoded once
//! ([`Captioner::encode`], an [`ImageEncoding`] a caller may keep), then captioned
//! ([`Captioner::caption`], optionally continuing a prompt such as "a photograph of") or
//! asked about ([`Captioner::answer`]). Generation ([`generate`]) is greedy or beam search
//! with the settings of [`GenerationOptions`]; [`settings`] says where transformers takes
//! each default from.
//!
//! The log-probability reported with each result ([`Generated::log_prob`]): with beams,
//! transformers' `sequences_scores` (the beam's summed log-probabilities, as the logits
//! processors left them, divided by `generated_tokens ^ length_penalty`); greedy, the sum
//! over the generated tokens of `log_softmax(processed logits)` at the chosen token, what
//! `compute_transition_scores(..., normalize_logits=True)` gives, summed. The start token
//! and prompt are not scored; the end token is.

mod generate;
pub mod records;
mod run;
pub mod settings;
mod tokenizer;

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::model::blip::{BlipConfig, BlipModel, BlipTask, CrossStates, SequenceCache};
use crate::model::config::ConfigError;
use crate::model::{LoadOptions, ModelError, Precision};
use crate::preprocess::{self, DecodeOptions, PreprocessConfig, PreprocessError, Preprocessor};
use crate::source::ModelFiles;
use crate::tokenize::TokenizeError;
use generate::{Decoder, Sequence};
pub use records::RecordWriter;
pub use run::{CaptionSession, Describe, DescribeError, Described, Describer, Request};
pub use settings::{EarlyStopping, GenerationOptions, MAX_BEAMS, MAX_NEW_TOKENS};
pub use tokenizer::{clean_up_tokenization, BlipTokenizer};

/// Why captions or answers could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaptionError {
    #[error(transparent)]
    Core(#[from] crate::Error),
    #[error("{model} is {found}, which cannot {wanted}; use `{command}` with it")]
    WrongTask {
        model: String,
        found: &'static str,
        wanted: &'static str,
        command: &'static str,
    },
    #[error("cannot generate with these settings: {reason}")]
    Settings { reason: String },
}

impl From<ModelError> for CaptionError {
    fn from(e: ModelError) -> Self {
        Self::Core(e.into())
    }
}

impl From<ConfigError> for CaptionError {
    fn from(e: ConfigError) -> Self {
        Self::Core(e.into())
    }
}

impl From<TokenizeError> for CaptionError {
    fn from(e: TokenizeError) -> Self {
        Self::Core(e.into())
    }
}

impl From<PreprocessError> for CaptionError {
    fn from(e: PreprocessError) -> Self {
        Self::Core(e.into())
    }
}

/// An image as the decoder reads it: BLIP's `image_embeds`, every token of the vision
/// transformer's output. Depends only on the pixels, the checkpoint and the compute type.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEncoding {
    values: Vec<f32>,
}

impl ImageEncoding {
    /// An encoding kept from [`Self::values`] (a cache); its length must match the model.
    pub fn from_values(values: Vec<f32>) -> Self {
        Self { values }
    }

    /// The encoding, `(tokens, hidden)` row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

impl AsRef<[f32]> for ImageEncoding {
    fn as_ref(&self) -> &[f32] {
        &self.values
    }
}

/// One caption or answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The text: the generated tokens decoded without special tokens; a caption from a
    /// prompt starts with the prompt, as transformers returns it.
    pub text: String,
    /// The whole sequence as transformers returns it for this input: the start token, the
    /// prompt's tokens (captions), the generated tokens (the end token included when the
    /// sequence ended with it, no padding).
    pub tokens: Vec<u32>,
    /// How many of [`Self::tokens`] were generated.
    pub generated: usize,
    /// The sequence's log-probability (see the module documentation).
    pub log_prob: f64,
    /// Whether the sequence ended with the end token (else the length limit cut it).
    pub ended: bool,
}

/// A BLIP checkpoint ready to caption or answer.
pub struct Captioner {
    model: BlipModel,
    tokenizer: BlipTokenizer,
    preprocessor: Preprocessor,
    decode: DecodeOptions,
    config: BlipConfig,
    id: String,
}

/// The decoder over a batch's cross-attention states.
struct BlipDecoder<'a> {
    model: &'a BlipModel,
    cross: &'a [CrossStates],
    vocab: usize,
}

impl Decoder for BlipDecoder<'_> {
    type Cache = SequenceCache;

    fn vocab(&self) -> usize {
        self.vocab
    }

    fn new_cache(&self, capacity: usize) -> SequenceCache {
        self.model.new_cache(capacity)
    }

    fn step(
        &self,
        ids: &[u32],
        n: usize,
        caches: &mut [&mut SequenceCache],
        items: &[usize],
    ) -> Result<Vec<f32>, CaptionError> {
        let cross: Vec<&CrossStates> = items.iter().map(|&i| &self.cross[i]).collect();
        Ok(self.model.decode(ids, n, caches, &cross)?)
    }
}

impl Captioner {
    /// Loads a BLIP checkpoint's files onto `device` (the CPU), computing in `precision`
    /// (f32, bf16 on a CPU with a bf16 kernel, or int8). A checkpoint of another kind is refused before
    /// its weights are read, with the command that runs it.
    pub fn load(
        files: &ModelFiles,
        device: &Device,
        precision: impl Into<Precision>,
        options: &LoadOptions,
    ) -> Result<Self, CaptionError> {
        refuse_matching_models(files)?;
        let config = BlipConfig::from_file(&files.config)?;
        let preprocess_config = PreprocessConfig::from_file(&files.preprocessor)?;
        crate::checkpoint::check_input_size(
            &preprocess_config,
            config.vision.image_size,
            &files.preprocessor,
        )?;
        let tokenizer = BlipTokenizer::from_file(&files.tokenizer)?;
        let model = BlipModel::load(&config, &files.weights, device, precision.into(), options)?;
        Ok(Self {
            model,
            tokenizer,
            preprocessor: Preprocessor::new(preprocess_config),
            decode: DecodeOptions::default(),
            config,
            id: files.id.clone(),
        })
    }

    /// What the checkpoint does: captions or answers.
    pub fn task(&self) -> BlipTask {
        self.model.task()
    }

    /// The checkpoint's architecture.
    pub fn config(&self) -> &BlipConfig {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &BlipTokenizer {
        &self.tokenizer
    }

    /// Which kernels run the model.
    pub fn kernels(&self) -> &'static str {
        self.model.kernels()
    }

    /// The number type the model's products compute in.
    pub fn precision(&self) -> Precision {
        self.model.precision()
    }

    /// How images are resized and normalised.
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        self.preprocessor.config()
    }

    /// What, besides the weights and the preprocessing, changes the image encodings: the
    /// model, the number type, and decoding shortcuts ([`DecodeOptions::fingerprint`]).
    pub fn compute_fingerprint(&self) -> String {
        format!(
            "blip vision; {}{}",
            self.model.precision().name(),
            self.decode.fingerprint()
        )
    }

    /// Limits and shortcuts for decoding images.
    pub fn set_decode_options(&mut self, options: DecodeOptions) {
        self.decode = options;
    }

    /// Decodes and preprocesses one image file into normalised (3, size, size) pixels.
    pub fn load_pixels(&self, path: &Path) -> Result<Vec<f32>, CaptionError> {
        let image = preprocess::decode_file_region(path, &self.decode)?;
        Ok(self.preprocessor.preprocess_decoded(&image)?)
    }

    /// Decodes and preprocesses an image already in memory; `origin` names it in errors.
    pub fn pixels_from_bytes(&self, bytes: &[u8], origin: &Path) -> Result<Vec<f32>, CaptionError> {
        let image = preprocess::decode_bytes_region(bytes, origin, &self.decode)?;
        Ok(self.preprocessor.preprocess_decoded(&image)?)
    }

    /// Values in one [`ImageEncoding`] of this model (tokens x width): a kept encoding of
    /// another length is not this model's.
    pub fn encoding_len(&self) -> usize {
        self.model.image_tokens() * self.config.vision.hidden_size
    }

    /// Runs the vision transformer over a batch of preprocessed images.
    pub fn encode(&self, pixels: &[Vec<f32>]) -> Result<Vec<ImageEncoding>, CaptionError> {
        Ok(self
            .encode_rows(pixels)?
            .into_iter()
            .map(|values| ImageEncoding { values })
            .collect())
    }

    fn encode_rows(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let size = self.model.image_size();
        let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
        let batch = Tensor::from_vec(flat, (pixels.len(), 3, size, size), &Device::Cpu).map_err(
            |cause| ModelError::Run {
                what: "images",
                cause,
            },
        )?;
        let values = self.model.encode_images(&batch)?;
        let per = values.len() / pixels.len();
        Ok(values.chunks_exact(per).map(<[f32]>::to_vec).collect())
    }

    fn check_encodings<E: AsRef<[f32]> + ?Sized>(&self, images: &[&E]) -> Result<(), CaptionError> {
        let want = self.encoding_len();
        match images.iter().find(|e| (**e).as_ref().len() != want) {
            Some(e) => Err(CaptionError::Settings {
                reason: format!(
                    "an image encoding holds {} values, this model's hold {want}; it was made by \
                     another model (clear the cache)",
                    (**e).as_ref().len()
                ),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn require(&self, task: BlipTask) -> Result<(), CaptionError> {
        match (self.task(), task) {
            (have, want) if have == want => Ok(()),
            (BlipTask::Caption, _) => Err(CaptionError::WrongTask {
                model: self.id.clone(),
                found: "a captioning checkpoint",
                wanted: "answer questions",
                command: "vlm caption",
            }),
            (BlipTask::Answer, _) => Err(CaptionError::WrongTask {
                model: self.id.clone(),
                found: "a question-answering checkpoint",
                wanted: "write captions",
                command: "vlm ask",
            }),
        }
    }

    /// Captions each image, continuing `prompt` when given. Images finish on their own;
    /// results come back in the order given.
    pub fn caption<E: AsRef<[f32]> + ?Sized>(
        &self,
        images: &[&E],
        prompt: Option<&str>,
        options: &GenerationOptions,
    ) -> Result<Vec<Generated>, CaptionError> {
        self.require(BlipTask::Caption)?;
        let (cross, prefix) = self.caption_states(images, prompt)?;
        self.run(&cross, &prefix, options)
    }

    /// Answers questions about images: `questions[i]` about `images[i]`. Each answer is
    /// what transformers gives for that image and question alone (a padded batch of
    /// questions of different lengths would change transformers' answers: its answer
    /// decoder attends to the padding).
    pub fn answer<E: AsRef<[f32]> + ?Sized>(
        &self,
        images: &[&E],
        questions: &[&str],
        options: &GenerationOptions,
    ) -> Result<Vec<Generated>, CaptionError> {
        self.require(BlipTask::Answer)?;
        let cross = self.question_states(images, questions)?;
        self.run(&cross, &[self.config.text.bos_token_id], options)
    }

    /// The decoder's logits for the first token it generates, one row per image: what
    /// transformers' first generation step sees. `text` is the prompt (captions, optional)
    /// or the question (answers).
    pub fn first_step_logits<E: AsRef<[f32]> + ?Sized>(
        &self,
        images: &[&E],
        text: Option<&str>,
    ) -> Result<Vec<Vec<f32>>, CaptionError> {
        let (cross, prefix) = match (self.task(), text) {
            (BlipTask::Caption, prompt) => self.caption_states(images, prompt)?,
            (BlipTask::Answer, Some(question)) => {
                let questions = vec![question; images.len()];
                let cross = self.question_states(images, &questions)?;
                (cross, vec![self.config.text.bos_token_id])
            }
            (BlipTask::Answer, None) => {
                return Err(CaptionError::Settings {
                    reason: "a question-answering checkpoint needs a question".into(),
                })
            }
        };
        let mut caches: Vec<SequenceCache> = images
            .iter()
            .map(|_| self.model.new_cache(prefix.len()))
            .collect();
        let mut refs: Vec<&mut SequenceCache> = caches.iter_mut().collect();
        let ids: Vec<u32> = images.iter().flat_map(|_| prefix.iter().copied()).collect();
        let refs_cross: Vec<&CrossStates> = cross.iter().collect();
        let logits = self
            .model
            .decode(&ids, prefix.len(), &mut refs, &refs_cross)?;
        let vocab = self.config.text.vocab_size;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip.py#L857-L932
    /// What the caption decoder cross-attends to for each image, and its input: the start
    /// token, then the prompt's tokens (`generate` writes the start token over `[CLS]` and
    /// drops the final `[SEP]`).
    fn caption_states<E: AsRef<[f32]> + ?Sized>(
        &self,
        images: &[&E],
        prompt: Option<&str>,
    ) -> Result<(Vec<CrossStates>, Vec<u32>), CaptionError> {
        self.check_encodings(images)?;
        let prefix = self.caption_prefix(prompt)?;
        let tokens = self.model.image_tokens();
        let cross = images
            .iter()
            .map(|e| self.model.decoder_states((**e).as_ref(), tokens))
            .collect();
        Ok((cross, prefix))
    }

    // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip.py#L1070-L1155
    /// What the answer decoder cross-attends to for each image and question: the question
    /// encoded with the image.
    fn question_states<E: AsRef<[f32]> + ?Sized>(
        &self,
        images: &[&E],
        questions: &[&str],
    ) -> Result<Vec<CrossStates>, CaptionError> {
        self.check_encodings(images)?;
        if images.len() != questions.len() {
            return Err(CaptionError::Settings {
                reason: format!(
                    "{} images and {} questions; give one question per image",
                    images.len(),
                    questions.len()
                ),
            });
        }
        let ids = self.question_ids(questions)?;
        // Questions of one length are encoded together.
        let mut lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let mut cross: Vec<Option<CrossStates>> = (0..images.len()).map(|_| None).collect();
        for n in lengths {
            let members: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].len() == n).collect();
            let flat: Vec<u32> = members
                .iter()
                .flat_map(|&i| ids[i].iter().copied())
                .collect();
            let pictures: Vec<&[f32]> = members.iter().map(|&i| (*images[i]).as_ref()).collect();
            let encoded = self.model.encode_questions(&flat, n, &pictures)?;
            let width = encoded.len() / (members.len() * n).max(1);
            for (k, &i) in members.iter().enumerate() {
                let rows = &encoded[k * n * width..][..n * width];
                cross[i] = Some(self.model.decoder_states(rows, n));
            }
        }
        Ok(cross.into_iter().flatten().collect())
    }

    /// The caption decoder's input: the start token, then the prompt's tokens (`generate`
    /// writes the start token over `[CLS]` and drops the final `[SEP]`).
    fn caption_prefix(&self, prompt: Option<&str>) -> Result<Vec<u32>, CaptionError> {
        let bos = self.config.text.bos_token_id;
        Ok(match prompt {
            None => vec![bos],
            Some(text) => {
                let mut ids = self.tokenizer.encode(text)?;
                ids[0] = bos;
                ids.pop();
                ids
            }
        })
    }

    /// Each question as `[CLS] ... [SEP]` ids, refused when longer than the model reads.
    fn question_ids(&self, questions: &[&str]) -> Result<Vec<Vec<u32>>, CaptionError> {
        let ids: Vec<Vec<u32>> = questions
            .iter()
            .map(|q| self.tokenizer.encode(q))
            .collect::<Result<_, _>>()?;
        let positions = self.config.text.max_position_embeddings;
        if let Some((q, i)) = questions
            .iter()
            .zip(&ids)
            .find(|(_, i)| i.len() > positions)
        {
            return Err(CaptionError::Settings {
                reason: format!(
                    "the question {q:?} is {} tokens, more than the {positions} the model reads",
                    i.len()
                ),
            });
        }
        Ok(ids)
    }

    /// Checks, before any image is read, that this checkpoint does `task` and that the
    /// prompt (captions, at most one) or every question (answers) can be generated from
    /// with `options`.
    pub fn check(
        &self,
        task: BlipTask,
        texts: &[&str],
        options: &GenerationOptions,
    ) -> Result<(), CaptionError> {
        self.require(task)?;
        let text = &self.config.text;
        let input_len = match task {
            BlipTask::Caption => self.caption_prefix(texts.first().copied())?.len(),
            BlipTask::Answer => {
                self.question_ids(texts)?;
                1
            }
        };
        options.resolve(input_len, text.max_position_embeddings, text.sep_token_id)?;
        Ok(())
    }

    fn run(
        &self,
        cross: &[CrossStates],
        prefix: &[u32],
        options: &GenerationOptions,
    ) -> Result<Vec<Generated>, CaptionError> {
        let text = &self.config.text;
        let settings = options.resolve(
            prefix.len(),
            text.max_position_embeddings,
            text.sep_token_id,
        )?;
        let decoder = BlipDecoder {
            model: &self.model,
            cross,
            vocab: text.vocab_size,
        };
        let sequences = generate::generate(&decoder, cross.len(), prefix, &settings)?;
        sequences
            .into_iter()
            .map(|Sequence { tokens, log_prob }| {
                Ok(Generated {
                    text: self.tokenizer.decode(&tokens)?,
                    generated: tokens.len() - prefix.len(),
                    ended: tokens.last() == Some(&settings.eos) && tokens.len() > prefix.len(),
                    tokens,
                    log_prob,
                })
            })
            .collect()
    }
}

/// The job drives BLIP's vision tower: an encoding is the whole `image_embeds` sequence,
/// flattened (tokens x width), which the cache keeps as it keeps an embedding.
impl crate::job::ImageEncoder for Captioner {
    fn encoding_len(&self) -> usize {
        Captioner::encoding_len(self)
    }

    fn prepare(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, crate::Error> {
        let image = preprocess::decode_bytes_region(bytes, Path::new(name), &self.decode)?;
        Ok(self.preprocessor.preprocess_decoded(&image)?)
    }

    fn encode(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, crate::Error> {
        Ok(self.encode_rows(batch)?)
    }
}

/// Refuses an image-text matching checkpoint (CLIP, SigLIP, MetaCLIP 2, open_clip) before
/// anything but its config is read.
fn refuse_matching_models(files: &ModelFiles) -> Result<(), CaptionError> {
    let wrong = || CaptionError::WrongTask {
        model: files.id.clone(),
        found: "an image-text matching checkpoint (it scores labels)",
        wanted: "write captions or answers",
        command: "vlm classify",
    };
    if files
        .config
        .file_name()
        .is_some_and(|n| n == crate::source::OPEN_CLIP_CONFIG)
    {
        return Err(wrong());
    }
    let model_type = std::fs::read_to_string(&files.config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("model_type")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
    match model_type.as_deref() {
        Some("clip" | "siglip" | "siglip2" | "metaclip_2" | "chinese_clip" | "altclip") => {
            Err(wrong())
        }
        _ => Ok(()),
    }
}

/// Just the task of a BLIP checkpoint's `config.json` (`None` when it is not BLIP or does
/// not say): commands check it before loading anything.
pub fn task_of_config(path: &Path) -> Option<BlipTask> {
    BlipConfig::from_file(path).ok().and_then(|c| c.task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captioner_can_be_shared_by_threads() {
        // Decoding and preprocessing run on worker threads while the model generates.
        fn shared<T: Send + Sync>() {}
        shared::<Captioner>();
        shared::<ImageEncoding>();
    }
}
