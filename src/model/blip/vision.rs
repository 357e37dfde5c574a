//! BLIP's vision transformer: patch embedding (a convolution with bias), class token,
//! position embeddings, pre-norm encoder layers and a post layer norm over every token.
//! Unlike CLIP's there is no pre-layer-norm and no projection: the decoder cross-attends
//! to all tokens.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::config::VisionConfig;
use crate::model::layers::{Dense, Encoder, Norm, Packer, StackShape};
use crate::model::pack::host;

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip.py#L450-L498
pub(crate) struct BlipVision {
    /// The stride-patch convolution as a linear layer over flattened patches.
    patch_embedding: Dense,
    class_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    post_layernorm: Norm,
    patch: usize,
    grid: usize,
    hidden: usize,
    image_size: usize,
}

impl BlipVision {
    /// `vb` is the checkpoint root: the tower lives under `vision_model`.
    pub fn load(vb: VarBuilder, config: &VisionConfig, p: &Packer) -> Result<Self> {
        let tower = vb.pp("vision_model");
        let embeddings = tower.pp("embeddings");
        let (hidden, patch, grid) = (config.hidden_size, config.patch_size, config.grid());
        let shape = StackShape::vision(config);
        // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip.py#L172-L243
        let patch_name = format!("{}.patch_embedding", embeddings.prefix());
        let patch_embedding = Dense::build(
            p,
            &patch_name,
            (hidden, config.num_channels * patch * patch),
            || {
                let pe = embeddings.pp("patch_embedding");
                let weight = pe
                    .get((hidden, config.num_channels, patch, patch), "weight")?
                    .reshape((hidden, config.num_channels * patch * patch))?;
                Ok((weight, Some(pe.get(hidden, "bias")?)))
            },
        )?;
        Ok(Self {
            patch_embedding,
            class_embedding: embeddings.get((1, 1, hidden), "class_embedding")?,
            position_embedding: embeddings
                .get((1, grid * grid + 1, hidden), "position_embedding")?,
            encoder: Encoder::load(tower.pp("encoder"), &shape, p)?,
            post_layernorm: Norm::load(tower.pp("post_layernorm"), hidden, config.layer_norm_eps)?,
            patch,
            grid,
            hidden,
            image_size: config.image_size,
        })
    }

    /// The square input side in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Tokens per image: the class token and one per patch.
    pub fn tokens(&self) -> usize {
        self.grid * self.grid + 1
    }

    /// `pixels`: (batch, 3, size, size) f32. Returns `image_embeds`, the post-normed last
    /// hidden state, `(batch, tokens, hidden)` row-major.
    pub fn forward(&self, pixels: &Tensor) -> Result<Vec<f32>> {
        let (batch, channels, height, width) = pixels.dims4()?;
        if height != self.image_size || width != self.image_size {
            candle_core::bail!(
                "pixel input is {height}x{width}, the model takes {0}x{0}",
                self.image_size
            );
        }
        let (g, p, h) = (self.grid, self.patch, self.hidden);
        let patches = pixels
            .reshape((batch, channels, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((batch * g * g, channels * p * p))?;
        let patches = self
            .patch_embedding
            .forward(&patches)?
            .reshape((batch, g * g, h))?;
        let class = self.class_embedding.broadcast_as((batch, 1, h))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let xs = host(&self.encoder.forward(&xs, false)?)?;
        let mut out = vec![0.0f32; xs.len()];
        self.post_layernorm.run(&xs, &mut out);
        Ok(out)
    }
}
