//! The text tower: token and position embeddings, a transformer (causal for CLIP,
//! bidirectional for SigLIP), pooling (at the end-of-text token, or SigLIP's last position),
//! and the projection into the shared space (SigLIP's is a `head` with a bias).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};

use super::config::{EosPooling, TextConfig};
use super::layers::{Dense, Encoder, Packer, StackShape};
use crate::kernels::Store;

/// The token-embedding table: candle's, or rows read in place from a pack file.
enum TokenTable {
    Candle(Embedding),
    Mapped { values: Store<f32>, hidden: usize },
}

impl TokenTable {
    /// (batch, seq) ids → (batch, seq, hidden).
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            TokenTable::Candle(e) => e.forward(ids),
            TokenTable::Mapped { values, hidden } => {
                let (batch, seq) = ids.dims2()?;
                let table = values.as_slice();
                let rows = table.len() / hidden.max(&1);
                let mut out = Vec::with_capacity(batch * seq * hidden);
                for id in ids.flatten_all()?.to_vec1::<u32>()? {
                    let id = id as usize;
                    if id >= rows {
                        candle_core::bail!("token id {id} is outside the {rows}-token vocabulary");
                    }
                    out.extend_from_slice(&table[id * hidden..][..*hidden]);
                }
                Tensor::from_vec(out, (batch, seq, *hidden), ids.device())
            }
        }
    }
}

pub(crate) struct TextTower {
    token_embedding: TokenTable,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    projection: Dense,
    pooling: EosPooling,
    pad_id: u32,
    context: usize,
    causal: bool,
}

impl TextTower {
    /// `vb` is the checkpoint root: the tower lives under `text_model`, its projection beside it.
    pub fn load(
        vb: VarBuilder,
        config: &TextConfig,
        projection_dim: usize,
        p: &Packer,
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
        let table_vb = embeddings.pp("token_embedding");
        let token_embedding = match p.packing.table(&format!("{}.weight", table_vb.prefix()))? {
            Some((dims, values)) if dims == [config.vocab_size, config.hidden_size] => {
                TokenTable::Mapped {
                    values,
                    hidden: config.hidden_size,
                }
            }
            Some((dims, _)) => candle_core::bail!(
                "pack entry for the token embeddings has shape {dims:?}, config.json implies {:?}",
                [config.vocab_size, config.hidden_size]
            ),
            None => TokenTable::Candle(embedding(config.vocab_size, config.hidden_size, table_vb)?),
        };
        Ok(Self {
            token_embedding,
            position_embedding: embeddings.get(
                (config.max_position_embeddings, config.hidden_size),
                "position_embedding.weight",
            )?,
            encoder: Encoder::load(tower.pp("encoder"), &shape, p)?,
            final_layer_norm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                tower.pp("final_layer_norm"),
            )?,
            // SigLIP: `text_model.head`, a Linear with bias (modeling_siglip.py,
            // SiglipTextTransformer); CLIP: `text_projection` without one.
            projection: if config.pooling == EosPooling::Last {
                Dense::load(
                    tower.pp("head"),
                    config.hidden_size,
                    projection_dim,
                    true,
                    p,
                )?
            } else {
                Dense::load(
                    vb.pp("text_projection"),
                    config.hidden_size,
                    projection_dim,
                    false,
                    p,
                )?
            },
            pooling: config.pooling,
            pad_id: config.pad_token_id,
            context: config.max_position_embeddings,
            causal: config.causal,
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
            EosPooling::Last => ids.len().saturating_sub(1),
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
        // SigLIP attends to its padding (no mask) and pools at the last position, so its
        // input must be the tokenizer's fixed-length sequence; padding here would change it.
        if self.pooling == EosPooling::Last {
            if let Some(bad) = sequences.iter().find(|ids| ids.len() != self.context) {
                candle_core::bail!(
                    "this text tower pools at the last of exactly {} tokens (padded by the \
                     tokenizer), got {}",
                    self.context,
                    bad.len()
                );
            }
        }
        // For causal towers, padding sits after every end-of-text token, and the causal
        // mask keeps earlier positions from seeing it, so the pooled rows do not depend on it.
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
        let hidden = self.encoder.forward(&xs, self.causal)?;
        let hidden_size = hidden.dim(2)?;
        let gather = Tensor::from_vec(gather, batch, device)?;
        let pooled = hidden
            .reshape((batch * seq, hidden_size))?
            .index_select(&gather, 0)?;
        let pooled = self.final_layer_norm.forward(&pooled)?;
        self.projection.forward(&pooled)
    }
}
