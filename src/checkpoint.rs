//! A loaded checkpoint ready to classify: encoders, tokenizer and preprocessing together.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::family::{Family, Scoring};
use crate::labels::PromptSet;
use crate::model::config::ClipConfig;
use crate::model::{family, l2_normalize, ClipModel, LoadOptions, Precision};
use crate::preprocess::{self, DecodeOptions, PreprocessConfig, Preprocessor};
use crate::progress::{Level, Progress};
use crate::score::{self, Score};
use crate::source::ModelFiles;
use crate::tokenize::ClipTokenizer;

/// Prompts encoded per forward pass: bounds memory for thousands of labels.
const TEXT_BATCH: usize = 64;

/// Embedded prompts, in the order given.
pub struct PromptEmbeddings {
    /// Projected text embeddings, one row per prompt (not normalised).
    pub embeddings: Tensor,
    /// For each prompt, whether it was cut to the model's context.
    pub truncated: Vec<bool>,
}

/// Warns about each of `prompts` that was cut (`truncated`, in the same order) to the
/// model's `context` tokens.
pub fn warn_truncated(
    prompts: &[String],
    truncated: &[bool],
    context: usize,
    progress: &dyn Progress,
) {
    for (prompt, _) in prompts.iter().zip(truncated).filter(|(_, &cut)| cut) {
        progress.say(
            Level::Warning,
            &format_args!(
                "prompt {prompt:?} is longer than the model's {context} tokens and was truncated"
            ),
        );
    }
}

/// Everything needed to turn image files and prompts into ranked scores.
pub struct Checkpoint {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    preprocessor: Preprocessor,
    decode: DecodeOptions,
    config: ClipConfig,
}

impl Checkpoint {
    /// Loads a checkpoint's four files onto `device`, computing in f32.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        Self::load_as(files, device, DType::F32)
    }

    /// Loads a checkpoint's four files onto `device`, computing in `precision` (a float
    /// `DType`, or [`Precision::Int8`]).
    pub fn load_as(
        files: &ModelFiles,
        device: &Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        Self::load_with(files, device, precision, &LoadOptions::default())
    }

    /// Like [`Self::load_as`], with a pack cache and other [`LoadOptions`].
    pub fn load_with(
        files: &ModelFiles,
        device: &Device,
        precision: impl Into<Precision>,
        options: &LoadOptions,
    ) -> Result<Self> {
        let precision = precision.into();
        let (config, preprocess_config) = family::read_configs(files, |name| {
            Ok::<_, Error>(crate::model::tensor_shape(
                &files.weights,
                Family::OpenClip,
                name,
            )?)
        })?;
        check_input_size(
            &preprocess_config,
            config.vision.image_size,
            &files.preprocessor,
        )?;
        // Parsing tokenizer.json (~50 ms for CLIP's vocabulary and merges) overlaps the
        // weights' load, which is a page-cache read or a mapping.
        let (model, tokenizer) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| {
                family::tokenizer(files, config.text.max_position_embeddings, config.family)
            });
            let model = ClipModel::load_with(&config, &files.weights, device, precision, options);
            let tokenizer = tokenizer
                .join()
                .map_err(|_| Error::Internal("the tokenizer thread panicked"));
            (model, tokenizer)
        });
        let (model, tokenizer) = (model?, tokenizer??);
        Ok(Self {
            model,
            tokenizer,
            preprocessor: Preprocessor::new(preprocess_config),
            decode: DecodeOptions::default(),
            config,
        })
    }

    /// Limits and shortcuts for decoding images (the largest accepted pixel count, JPEG
    /// downscaling: see [`DecodeOptions::with_jpeg_downscale`]).
    pub fn set_decode_options(&mut self, options: DecodeOptions) {
        self.decode = options;
    }

    /// The decoding options in use.
    pub fn decode_options(&self) -> &DecodeOptions {
        &self.decode
    }

    /// The checkpoint's family.
    pub fn family(&self) -> Family {
        self.config.family
    }

    /// How this checkpoint's probabilities are computed.
    pub fn scoring(&self) -> Scoring {
        self.config.family.scoring()
    }

    /// The encoders.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// The checkpoint's architecture.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The tokenizer, truncating to the model's context.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The checkpoint's image preprocessing.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// How this classifier computes beyond the checkpoint and its preprocessing config
    /// (numeric type, decoding shortcuts, whether truncated files are accepted): cached embeddings are only valid for the same.
    pub fn compute_fingerprint(&self) -> String {
        format!(
            "family {}; {}{}",
            self.family(),
            self.numeric_fingerprint(),
            self.decode.fingerprint()
        )
    }

    /// The part of [`Self::compute_fingerprint`] that defines the embedding space (the
    /// numeric type), without decoding shortcuts, which move embeddings only slightly:
    /// what a linear probe must match.
    pub fn numeric_fingerprint(&self) -> String {
        self.model.precision().name().to_string()
    }

    /// Tokenises and embeds prompts, a bounded batch at a time. Batches are formed from
    /// prompts of similar length (sorted by token count), so little of each batch is
    /// padding; rows come back in the order of `prompts`.
    pub fn embed_prompts(&self, prompts: &[String]) -> Result<PromptEmbeddings> {
        let mut truncated = Vec::with_capacity(prompts.len());
        let mut ids = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let tokens = self.tokenizer.encode(prompt)?;
            truncated.push(tokens.truncated);
            ids.push(tokens.ids);
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut parts = Vec::new();
        for chunk in order.chunks(TEXT_BATCH) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
            parts.push(self.model.encode_text(&batch)?);
        }
        // Row `r` of the sorted result is prompt `order[r]`; gather them back.
        let mut position = vec![0u32; order.len()];
        for (row, &i) in order.iter().enumerate() {
            position[i] = row as u32;
        }
        let unsort = || -> candle_core::Result<Tensor> {
            let sorted = Tensor::cat(&parts, 0)?;
            let position = Tensor::from_vec(position, order.len(), sorted.device())?;
            sorted.index_select(&position, 0)
        };
        let embeddings = unsort().map_err(Error::Tensor)?;
        Ok(PromptEmbeddings {
            embeddings,
            truncated,
        })
    }

    /// One embedding per class of `set`: the class's only prompt, or the normalised mean of
    /// its normalised prompt embeddings when it has several (templates or synonyms).
    pub fn embed_classes(&self, set: &PromptSet) -> Result<PromptEmbeddings> {
        let prompts = self.embed_prompts(&set.prompts)?;
        if set.prompts.len() == set.classes.len() {
            return Ok(prompts);
        }
        let ensemble = || -> candle_core::Result<Tensor> {
            let unit = l2_normalize(&prompts.embeddings)?;
            let means = set
                .ranges
                .iter()
                .map(|range| unit.narrow(0, range.start, range.len())?.mean_keepdim(0))
                .collect::<candle_core::Result<Vec<_>>>()?;
            l2_normalize(&Tensor::cat(&means, 0)?)
        };
        Ok(PromptEmbeddings {
            embeddings: ensemble().map_err(Error::Tensor)?,
            truncated: prompts.truncated,
        })
    }

    /// Decodes and preprocesses one image file into normalised (3, size, size) pixels.
    pub fn load_pixels(&self, path: &Path) -> Result<Vec<f32>> {
        let image = preprocess::decode_file_region(path, &self.decode)?;
        Ok(self.preprocessor.preprocess_decoded(&image)?)
    }

    /// Decodes and preprocesses an image already in memory; `origin` names it in errors.
    pub fn pixels_from_bytes(&self, bytes: &[u8], origin: &Path) -> Result<Vec<f32>> {
        Ok(self
            .preprocessor
            .preprocess_bytes(bytes, origin, &self.decode)?)
    }

    /// Embeds a batch of preprocessed images (each from [`Self::load_pixels`]).
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Tensor> {
        let size = self.model.image_size();
        let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
        let batch = Tensor::from_vec(flat, (pixels.len(), 3, size, size), self.model.device())
            .map_err(|source| crate::model::ModelError::Run {
                what: "images",
                cause: source,
            })?;
        Ok(self.model.encode_images(&batch)?)
    }

    /// Embeds a batch of preprocessed images, one row of floats per image.
    pub fn embed_pixels_rows(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        self.embed_pixels(pixels)?.to_vec2().map_err(Error::Tensor)
    }

    /// Ranks the prompts for image embeddings given as rows of floats.
    pub fn rank_rows(
        &self,
        rows: &[&[f32]],
        prompts: &PromptEmbeddings,
    ) -> Result<Vec<Vec<Score>>> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let matrix = Tensor::from_vec(flat, (rows.len(), first.len()), self.model.device())
            .map_err(Error::Tensor)?;
        self.rank(&matrix, prompts)
    }

    /// Ranks the prompts for each embedded image.
    pub fn rank(
        &self,
        image_embeddings: &Tensor,
        prompts: &PromptEmbeddings,
    ) -> Result<Vec<Vec<Score>>> {
        score::rank_scored(
            image_embeddings,
            &prompts.embeddings,
            self.model.logit_scale(),
            self.model.logit_bias(),
            self.scoring(),
        )
        .map_err(Error::Tensor)
    }
}

/// Refuses preprocessing whose output is not the vision tower's `size` x `size` input.
pub(crate) fn check_input_size(config: &PreprocessConfig, size: usize, path: &Path) -> Result<()> {
    let (height, width) = config.output_size();
    if height as usize != size || width as usize != size {
        return Err(Error::InputSize {
            path: path.to_path_buf(),
            height,
            width,
            size,
        });
    }
    Ok(())
}

/// The usual short name of a float type.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        DType::F64 => "f64",
        _ => "other",
    }
}
