//! SigLIP's vision tower: biased patch convolution that drops the pixels the patch grid
//! does not cover, position embeddings without a class token, no pre-LayerNorm, and the
//! multi-head attention-pooling ("MAP") head whose output is the image embedding.
//!
//! Ported from transformers 5.23.0 `models/siglip/modeling_siglip.py`
//! (`SiglipVisionEmbeddings`, `SiglipVisionTransformer`, `SiglipMultiheadAttentionPoolingHead`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use super::layers::{activate, Encoder, Packer, StackShape};
use crate::model::config::{Activation, VisionConfig};

/// `vision_model.head`: one learned query (`probe`) attending over all patch tokens with
/// torch's `nn.MultiheadAttention`, then a residual MLP.
struct MapHead {
    probe: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    layernorm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    heads: usize,
}

impl MapHead {
    fn load(vb: VarBuilder, config: &VisionConfig) -> Result<Self> {
        let h = config.hidden_size;
        let attention = vb.pp("attention");
        // `in_proj_weight` packs the query, key and value rows in that order.
        let in_w = attention.get((3 * h, h), "in_proj_weight")?;
        let in_b = attention.get(3 * h, "in_proj_bias")?;
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(
                in_w.narrow(0, i * h, h)?.contiguous()?,
                Some(in_b.narrow(0, i * h, h)?.contiguous()?),
            ))
        };
        let mlp = vb.pp("mlp");
        Ok(Self {
            probe: vb.get((1, 1, h), "probe")?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out: linear(h, h, attention.pp("out_proj"))?,
            layernorm: layer_norm(h, config.layer_norm_eps, vb.pp("layernorm"))?,
            fc1: linear(h, config.intermediate_size, mlp.pp("fc1"))?,
            fc2: linear(config.intermediate_size, h, mlp.pp("fc2"))?,
            act: config.hidden_act,
            heads: config.num_attention_heads,
        })
    }

    /// `xs`: (batch, tokens, hidden) → (batch, hidden).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, tokens, hidden) = xs.dims3()?;
        let head_dim = hidden / self.heads;
        let probe = self.probe.broadcast_as((batch, 1, hidden))?.contiguous()?;
        let split = |t: Tensor, len: usize| -> Result<Tensor> {
            t.reshape((batch, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(&probe)? * (head_dim as f64).powf(-0.5))?, 1)?;
        let k = split(self.k.forward(xs)?, tokens)?;
        let v = split(self.v.forward(xs)?, tokens)?;
        let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let attended = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, 1, hidden))?;
        let y = self.out.forward(&attended)?;
        // The residual is taken before the head's LayerNorm.
        let transformed = self.fc2.forward(&activate(
            self.act,
            &self.fc1.forward(&self.layernorm.forward(&y)?)?,
        )?)?;
        (y + transformed)?.squeeze(1)
    }
}

pub(crate) struct SiglipVision {
    /// The patch convolution as a matrix (channels * patch * patch, hidden).
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    head: MapHead,
    patch: usize,
    grid: usize,
    image_size: usize,
}

impl SiglipVision {
    /// `vb` is the checkpoint root: the tower lives under `vision_model`.
    pub fn load(vb: VarBuilder, config: &VisionConfig, p: &Packer) -> Result<Self> {
        let tower = vb.pp("vision_model");
        let embeddings = tower.pp("embeddings");
        let hidden = config.hidden_size;
        let patch = config.patch_size;
        let grid = config.grid();
        let shape = StackShape::vision(config);
        let patch_weight = embeddings
            .get(
                (hidden, config.num_channels, patch, patch),
                "patch_embedding.weight",
            )?
            .reshape((hidden, config.num_channels * patch * patch))?;
        Ok(Self {
            patch_weight: patch_weight.t()?.contiguous()?,
            patch_bias: embeddings.get(hidden, "patch_embedding.bias")?,
            position_embedding: embeddings
                .get((grid * grid, hidden), "position_embedding.weight")?,
            encoder: Encoder::load(tower.pp("encoder"), &shape, p)?,
            post_layernorm: layer_norm(hidden, config.layer_norm_eps, tower.pp("post_layernorm"))?,
            head: MapHead::load(tower.pp("head"), config)?,
            patch,
            grid,
            image_size: config.image_size,
        })
    }

    /// The square input side in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// `pixels`: (batch, 3, size, size). Returns the (unnormalised) image embeddings.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = pixels.dims4()?;
        if height != self.image_size || width != self.image_size {
            candle_core::bail!(
                "pixel input is {height}x{width}, the model takes {0}x{0}",
                self.image_size
            );
        }
        let (g, p) = (self.grid, self.patch);
        // The "valid" convolution ignores the right and bottom `size mod patch` pixels.
        let covered = g * p;
        let patches = pixels
            .narrow(2, 0, covered)?
            .narrow(3, 0, covered)?
            .reshape((batch, channels, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((batch * g * g, channels * p * p))?;
        let hidden = self.patch_weight.dim(1)?;
        let xs = patches
            .matmul(&self.patch_weight)?
            .broadcast_add(&self.patch_bias)?
            .reshape((batch, g * g, hidden))?
            .broadcast_add(&self.position_embedding)?;
        let xs = self.encoder.forward(&xs, false)?;
        let xs = self.post_layernorm.forward(&xs)?;
        self.head.forward(&xs)
    }
}
