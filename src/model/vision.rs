//! The vision tower: patch embedding, class token, a transformer, and the projection of
//! the class token into the shared space.

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

use super::config::VisionConfig;
use super::layers::{Dense, Encoder, Packer, StackShape};

pub(crate) struct VisionTower {
    /// The patch convolution as a linear layer from channels * patch * patch to hidden: a
    /// stride-patch convolution is a matmul over non-overlapping patches.
    patch_embedding: Dense,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    projection: Dense,
    patch: usize,
    grid: usize,
    image_size: usize,
}

impl VisionTower {
    /// `vb` is the checkpoint root: the tower lives under `vision_model`.
    pub fn load(
        vb: VarBuilder,
        config: &VisionConfig,
        projection_dim: usize,
        p: &Packer,
    ) -> Result<Self> {
        let tower = vb.pp("vision_model");
        let embeddings = tower.pp("embeddings");
        let hidden = config.hidden_size;
        let patch = config.patch_size;
        let grid = config.grid();
        let shape = StackShape::vision(config);
        let patch_name = format!("{}.patch_embedding", embeddings.prefix());
        let patch_dims = (hidden, config.num_channels * patch * patch);
        let patch_embedding = Dense::build(p, &patch_name, patch_dims, || {
            let weight = embeddings
                .get(
                    (hidden, config.num_channels, patch, patch),
                    "patch_embedding.weight",
                )?
                .reshape((hidden, config.num_channels * patch * patch))?;
            Ok((weight, None))
        })?;
        Ok(Self {
            patch_embedding,
            class_embedding: embeddings.get(hidden, "class_embedding")?,
            position_embedding: embeddings
                .get((grid * grid + 1, hidden), "position_embedding.weight")?,
            // "pre_layrnorm" is the checkpoint's own spelling.
            pre_layernorm: layer_norm(hidden, config.layer_norm_eps, tower.pp("pre_layrnorm"))?,
            encoder: Encoder::load(tower.pp("encoder"), &shape, p)?,
            post_layernorm: layer_norm(hidden, config.layer_norm_eps, tower.pp("post_layernorm"))?,
            projection: Dense::load(vb.pp("visual_projection"), hidden, projection_dim, false, p)?,
            patch,
            grid,
            image_size: config.image_size,
        })
    }

    /// The square input side in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// `pixels`: (batch, 3, size, size). Returns projected (not normalised) embeddings.
    // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/clip/modeling_clip.py#L604-L640
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = pixels.dims4()?;
        if height != self.image_size || width != self.image_size {
            candle_core::bail!(
                "pixel input is {height}x{width}, the model takes {0}x{0}",
                self.image_size
            );
        }
        let (g, p) = (self.grid, self.patch);
        let patches = pixels
            .reshape((batch, channels, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((batch * g * g, channels * p * p))?;
        let patches = self.patch_embedding.forward(&patches)?;
        let hidden = patches.dim(1)?;
        let patches = patches.reshape((batch, g * g, hidden))?;
        let class = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((batch, 1, hidden))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let xs = self.pre_layernorm.forward(&xs)?;
        let xs = self.encoder.forward(&xs, false)?;
        let pooled = self
            .post_layernorm
            .forward(&xs.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?)?;
        self.projection.forward(&pooled)
    }
}
