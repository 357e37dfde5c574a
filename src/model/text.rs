//! The text tower: token and position embeddings, a causal transformer, pooling at the
//! end-of-text token, and the projection into the shared space.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};

use super::config::{EosPooling, TextConfig};
use super::layers::{Compute, Dense, Encoder, StackShape};

pub(crate) struct TextTower {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    projection: Dense,
    pooling: EosPooling,
    pad_id: u32,
    context: usize,
}

impl TextTower {
    /// `vb` is the checkpoint root: the tower lives under `text_model`, its projection beside it.
    pub fn load(
        vb: VarBuilder,
        config: &TextConfig,
        projection_dim: usize,
        compute: Compute,
    ) -> Result<Self> {
        let tower = vb.pp("text_model");
        let embeddings = tower.pp("embeddings");
        let shape = StackShape {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            act: config.hidden_act,
            eps: config.layer_norm_eps,
        };
        Ok(Self {
            token_embedding: embedding(
                config.vocab_size,
                config.hidden_size,
                embeddings.pp("token_embedding"),
            )?,
            position_embedding: embeddings.get(
                (config.max_position_embeddings, config.hidden_size),
                "position_embedding.weight",
            )?,
            encoder: Encoder::load(tower.pp("encoder"), &shape, compute)?,
            final_layer_norm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                tower.pp("final_layer_norm"),
            )?,
            projection: Dense::load(
                vb.pp("text_projection"),
                config.hidden_size,
                projection_dim,
                false,
                compute,
            )?,
            pooling: config.pooling,
            pad_id: config.pad_token_id,
            context: config.max_position_embeddings,
        })
    }

    /// The longest token sequence the position table covers.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The position transformers pools at for one unpadded sequence.
    // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/clip/modeling_clip.py#L552-L574
    fn pool_position(&self, ids: &[u32]) -> usize {
        // Both rules take the first match, as torch's argmax does on ties.
        match self.pooling {
            EosPooling::ArgmaxId => {
                ids.iter()
                    .enumerate()
                    .fold((0, None::<u32>), |best, (i, &id)| match best.1 {
                        Some(max) if max >= id => best,
                        _ => (i, Some(id)),
                    })
                    .0
            }
            EosPooling::FirstToken(eos) => ids.iter().position(|&id| id == eos).unwrap_or(0),
        }
    }

    /// Projected (not normalised) embeddings, one row per sequence. Every sequence must be
    /// non-empty and at most [`Self::context`] long.
    pub fn forward(&self, sequences: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let batch = sequences.len();
        let seq = sequences.iter().map(Vec::len).max().unwrap_or(0);
        if batch == 0 || seq == 0 || seq > self.context {
            candle_core::bail!(
                "text batch needs 1..={} tokens per prompt, got {seq}",
                self.context
            );
        }
        // Padding sits after every end-of-text token, and the causal mask keeps earlier
        // positions from seeing it, so the pooled rows do not depend on it.
        let mut flat = Vec::with_capacity(batch * seq);
        let mut gather = Vec::with_capacity(batch);
        for (row, ids) in sequences.iter().enumerate() {
            flat.extend_from_slice(ids);
            flat.resize((row + 1) * seq, self.pad_id);
            gather.push((row * seq + self.pool_position(ids)) as u32);
        }
        let ids = Tensor::from_vec(flat, (batch, seq), device)?;
        let positions = self.position_embedding.narrow(0, 0, seq)?;
        let xs = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&positions)?;
        let hidden = self.encoder.forward(&xs, true)?;
        let hidden_size = hidden.dim(2)?;
        let gather = Tensor::from_vec(gather, batch, device)?;
        let pooled = hidden
            .reshape((batch * seq, hidden_size))?
            .index_select(&gather, 0)?;
        let pooled = self.final_layer_norm.forward(&pooled)?;
        self.projection.forward(&pooled)
    }
}
