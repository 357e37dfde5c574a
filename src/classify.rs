//! A loaded checkpoint ready to classify: encoders, tokenizer and preprocessing together.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::config::ClipConfig;
use crate::error::{Error, Result};
use crate::model::ClipModel;
use crate::preprocess::{self, PreprocessConfig, Preprocessor};
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

/// Everything needed to turn image files and prompts into ranked scores.
pub struct Classifier {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    preprocessor: Preprocessor,
    config: ClipConfig,
}

impl Classifier {
    /// Loads a checkpoint's four files onto `device`.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        let config = ClipConfig::from_file(&files.config)?;
        let preprocess_config = PreprocessConfig::from_file(&files.preprocessor)?;
        let (height, width) = preprocess_config.output_size();
        let size = config.vision.image_size;
        if height as usize != size || width as usize != size {
            return Err(Error::InputSize {
                path: files.preprocessor.clone(),
                height,
                width,
                size,
            });
        }
        let model = ClipModel::load(&config, &files.weights, device)?;
        let tokenizer = ClipTokenizer::from_file(&files.tokenizer, model.text_context())?;
        Ok(Self {
            model,
            tokenizer,
            preprocessor: Preprocessor::new(preprocess_config),
            config,
        })
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

    /// Tokenises and embeds prompts, a bounded batch at a time.
    pub fn embed_prompts(&self, prompts: &[String]) -> Result<PromptEmbeddings> {
        let mut truncated = Vec::with_capacity(prompts.len());
        let mut parts = Vec::new();
        for chunk in prompts.chunks(TEXT_BATCH) {
            let mut ids = Vec::with_capacity(chunk.len());
            for prompt in chunk {
                let tokens = self.tokenizer.encode(prompt)?;
                truncated.push(tokens.truncated);
                ids.push(tokens.ids);
            }
            parts.push(self.model.encode_text(&ids)?);
        }
        let embeddings = Tensor::cat(&parts, 0).map_err(Error::Score)?;
        Ok(PromptEmbeddings {
            embeddings,
            truncated,
        })
    }

    /// Decodes and preprocesses one image file into normalised (3, size, size) pixels.
    pub fn load_pixels(&self, path: &Path) -> Result<Vec<f32>> {
        let image = preprocess::decode_file(path)?;
        Ok(self.preprocessor.preprocess(&image)?)
    }

    /// Embeds a batch of preprocessed images (each from [`Self::load_pixels`]).
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Tensor> {
        let size = self.model.image_size();
        let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
        let batch = Tensor::from_vec(flat, (pixels.len(), 3, size, size), self.model.device())
            .map_err(|source| crate::model::ModelError::Run {
                what: "images",
                source,
            })?;
        Ok(self.model.encode_images(&batch)?)
    }

    /// Ranks the prompts for each embedded image.
    pub fn rank(
        &self,
        image_embeddings: &Tensor,
        prompts: &PromptEmbeddings,
    ) -> Result<Vec<Vec<Score>>> {
        score::rank(
            image_embeddings,
            &prompts.embeddings,
            self.model.logit_scale(),
        )
        .map_err(Error::Score)
    }
}
