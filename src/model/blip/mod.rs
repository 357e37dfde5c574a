//! BLIP (`model_type: "blip"`) as transformers 5.23 runs it: `BlipForConditionalGeneration`
//! (the vision transformer and a caption decoder cross-attending to every image token) and
//! `BlipForQuestionAnswering` (the vision transformer, a question encoder cross-attending to
//! the image, and an answer decoder cross-attending to the question encoding).
//!
//! Both run on the CPU's packed kernels, in f32, bf16 products where the CPU has a bf16
//! kernel, or int8 (every transformer product of both stacks; the patch embedding stays
//! f32). [`crate::caption`] drives generation over them.

pub mod config;
mod text;
mod vision;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Compute, Packer};
use super::{LoadOptions, ModelError, Precision};
pub use config::{BlipConfig, BlipTask, BlipTextConfig};
pub(crate) use text::{CrossStates, SequenceCache};
use text::{LmHead, TextModel};
use vision::BlipVision;

/// A loaded BLIP checkpoint.
pub struct BlipModel {
    task: BlipTask,
    vision: BlipVision,
    /// `text_encoder`: question answering only.
    question_encoder: Option<TextModel>,
    /// `text_decoder.bert`.
    decoder: TextModel,
    /// `text_decoder.cls.predictions`.
    lm_head: LmHead,
    compute: Compute,
    precision: Precision,
}

impl BlipModel {
    /// Loads `weights` (safetensors or a PyTorch pickle) for `config` on the CPU, computing
    /// in `precision`: f32, bf16 on a CPU with a bf16 kernel (AMX or AVX512-BF16), or int8.
    pub fn load(
        config: &BlipConfig,
        weights: &Path,
        device: &Device,
        precision: Precision,
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        let (dtype, compute) = super::choose_compute(device, precision, options)?;
        if let Compute::Int8(..) = compute {
            return Self::load_on(config, weights, compute, precision);
        }
        if compute == Compute::Candle {
            return Err(ModelError::DType {
                dtype,
                device: if matches!(device, Device::Cpu) {
                    "CPU"
                } else {
                    "GPU"
                },
                hint: "BLIP runs on the CPU's packed kernels, in f32 or bf16; use --device cpu \
                       --dtype f32",
            });
        }
        let bf16_runs = matches!(compute, Compute::Bf16(kernel) if kernel.supported());
        super::check_dtype(dtype, device, compute, bf16_runs)?;
        Self::load_on(config, weights, compute, precision)
    }

    /// [`Self::load`] on the given kernels (tests run every kernel this CPU has).
    pub(crate) fn load_on(
        config: &BlipConfig,
        weights: &Path,
        compute: Compute,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let wrap = |cause| ModelError::Weights {
            path: weights.to_path_buf(),
            cause,
        };
        let backend = super::open_file(weights, true)?;
        let has_encoder = backend.contains_tensor("text_encoder.embeddings.word_embeddings.weight");
        let task = config.task.unwrap_or(if has_encoder {
            BlipTask::Answer
        } else {
            BlipTask::Caption
        });
        let vb = VarBuilder::from_backend(backend, DType::F32, Device::Cpu);
        let p = Packer::fresh(compute);
        let build = || -> candle_core::Result<Self> {
            let vision = BlipVision::load(vb.clone(), &config.vision, &p)?;
            let question_encoder = match task {
                BlipTask::Answer => Some(TextModel::load(vb.pp("text_encoder"), &config.text, &p)?),
                BlipTask::Caption => None,
            };
            let head = vb.pp("text_decoder");
            let decoder = TextModel::load(head.pp("bert"), &config.text, &p)?;
            // tie_word_embeddings (true in every released config): the LM head's weights
            // are the decoder's word embeddings, saved once. An int8 model keeps the head in
            // f32, as it keeps CLIP's projections: quantised alone, it changed a benchmark
            // caption and moved log-probabilities by up to 6.3, more than the twelve
            // decoder layers together (4.0, no caption changed), and saved no time
            // (BENCHMARKS.md, "Captions in int8").
            let lm_head = LmHead::load(
                head.pp("cls").pp("predictions"),
                &config.text,
                decoder.word_embeddings(),
                &p.edge(),
            )?;
            Ok(Self {
                task,
                vision,
                question_encoder,
                decoder,
                lm_head,
                compute,
                precision,
            })
        };
        build().map_err(wrap)
    }

    /// What the checkpoint does.
    pub fn task(&self) -> BlipTask {
        self.task
    }

    /// The number type the products compute in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Which kernels run the model (`"packed avx2"`, `"packed amx-bf16"`, ...).
    pub fn kernels(&self) -> &'static str {
        super::compute_label(self.compute)
    }

    /// The square input side in pixels.
    pub fn image_size(&self) -> usize {
        self.vision.image_size()
    }

    /// Tokens per image encoding (patches and the class token).
    pub fn image_tokens(&self) -> usize {
        self.vision.tokens()
    }

    /// `image_embeds` for `pixels` (batch, 3, size, size): `(batch, tokens, hidden)` rows.
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Vec<f32>, ModelError> {
        pixels
            .to_dtype(DType::F32)
            .and_then(|p| self.vision.forward(&p))
            .map_err(|cause| ModelError::Run {
                what: "images",
                cause,
            })
    }

    /// What the decoder cross-attends to for one image's `image_embeds` (captions), or for
    /// one question encoding (answers).
    pub(crate) fn decoder_states(&self, encoder: &[f32], len: usize) -> CrossStates {
        self.decoder.cross_states(encoder, len)
    }

    /// Encodes questions about images: question `r` (`ids[r * n..][..n]`, `[CLS] ... [SEP]`)
    /// with image `images[r]` (its `image_embeds`, [`Self::image_tokens`] rows). Returns
    /// the question encodings, `(rows * n, hidden)`.
    pub(crate) fn encode_questions(
        &self,
        ids: &[u32],
        n: usize,
        images: &[&[f32]],
    ) -> Result<Vec<f32>, ModelError> {
        let run = |cause| ModelError::Run {
            what: "questions",
            cause,
        };
        let Some(encoder) = &self.question_encoder else {
            return Err(run(candle_core::Error::Msg(
                "this checkpoint has no question encoder".into(),
            )));
        };
        let tokens = self.vision.tokens();
        let states: Vec<CrossStates> = images
            .iter()
            .map(|image| encoder.cross_states(image, tokens))
            .collect();
        let mut caches: Vec<SequenceCache> = images.iter().map(|_| encoder.new_cache(n)).collect();
        let mut refs: Vec<&mut SequenceCache> = caches.iter_mut().collect();
        let cross: Vec<&CrossStates> = states.iter().collect();
        encoder
            .forward(ids, n, &mut refs, false, &cross)
            .map_err(run)
    }

    /// An empty decoder cache with room for `capacity` tokens.
    pub(crate) fn new_cache(&self, capacity: usize) -> SequenceCache {
        self.decoder.new_cache(capacity)
    }

    /// One decoding step: `n` new tokens for each sequence (`ids[r * n..][..n]`), appended
    /// to `caches[r]`, cross-attending to `cross[r]`. Returns the logits of each sequence's
    /// last new token, `(caches.len(), vocab)`.
    pub(crate) fn decode(
        &self,
        ids: &[u32],
        n: usize,
        caches: &mut [&mut SequenceCache],
        cross: &[&CrossStates],
    ) -> Result<Vec<f32>, ModelError> {
        let hidden = self
            .decoder
            .forward(ids, n, caches, true, cross)
            .map_err(|cause| ModelError::Run {
                what: "captions",
                cause,
            })?;
        let rows = caches.len();
        let width = hidden.len() / (rows * n).max(1);
        let mut last = Vec::with_capacity(rows * width);
        for r in 0..rows {
            last.extend_from_slice(&hidden[((r + 1) * n - 1) * width..][..width]);
        }
        Ok(self.lm_head.forward(&last, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Bf16Kernel, Isa};

    /// The caption fixture on every kernel this CPU runs (f32: AVX-512, AVX2, portable;
    /// bf16 where present, to a looser bound): first-step logits against transformers'.
    #[test]
    fn every_kernel_gives_transformers_first_step_logits() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dir = fixtures.join("models/blip-caption");
        let config = BlipConfig::from_file(&dir.join("config.json")).unwrap();
        let reference = candle_core::safetensors::load(
            fixtures.join("reference/blip-caption.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let pixels = Tensor::stack(
            &(0..4)
                .map(|i| reference[&format!("pixel_values.{i}")].clone())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let want: Vec<f32> = reference["logits.greedy"]
            .narrow(0, 0, 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut kernels: Vec<(Compute, f32)> = [Isa::Avx512, Isa::Avx2, Isa::Scalar]
            .into_iter()
            .filter(|isa| isa.supported())
            .map(|isa| (Compute::Packed(isa), 1e-4))
            .collect();
        kernels.extend(
            [Bf16Kernel::Amx, Bf16Kernel::Avx512Bf16]
                .into_iter()
                .filter(|k| k.supported())
                .map(|k| (Compute::Bf16(k), 0.25)),
        );
        for (compute, bound) in kernels {
            let model = BlipModel::load_on(
                &config,
                &dir.join("model.safetensors"),
                compute,
                DType::F32.into(),
            )
            .unwrap();
            let embeds = model.encode_images(&pixels).unwrap();
            let per = embeds.len() / 4;
            let cross: Vec<CrossStates> = embeds
                .chunks(per)
                .map(|e| model.decoder_states(e, model.image_tokens()))
                .collect();
            let mut caches: Vec<SequenceCache> = (0..4).map(|_| model.new_cache(1)).collect();
            let mut refs: Vec<&mut SequenceCache> = caches.iter_mut().collect();
            let cross: Vec<&CrossStates> = cross.iter().collect();
            let bos = config.text.bos_token_id;
            let got = model.decode(&[bos; 4], 1, &mut refs, &cross).unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= bound,
                "{}: logits differ by {diff}",
                model.kernels()
            );
        }
    }
}
