//! BLIP's BERT-style text transformer (`modeling_blip_text.py`): word and position
//! embeddings with a layer norm, then layers of self-attention, cross-attention to an
//! encoder's states, and a feed-forward block, each followed by a residual add and a layer
//! norm (post-norm, as BERT). The same stack is the question encoder (bidirectional) and
//! the caption or answer decoder (causal, with a key/value cache); the decoder ends in the
//! LM head, whose output weights are the word embeddings.
//!
//! Everything runs on host f32 rows with the packed kernels: each linear layer is packed
//! once at load, with the 1/sqrt(head_dim) score scale folded into the query weights.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::BlipTextConfig;
use crate::kernels::{self, Act, KvView, Queries};
use crate::model::layers::{kernel_act, Norm, PackedLinear, Packer};
use crate::model::pack::host;

/// Sizes of a text stack.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    heads: usize,
    head_dim: usize,
    act: Act,
}

/// Keys and values of one layer for one source, laid out for [`kernels::attend`]: keys
/// transposed per head with room for `capacity` positions, values row-major.
#[derive(Debug, Clone)]
pub(crate) struct KvBlock {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    padded: usize,
    len: usize,
    heads: usize,
    head_dim: usize,
}

impl KvBlock {
    fn new(heads: usize, head_dim: usize, capacity: usize) -> Self {
        let padded = capacity.max(1).div_ceil(16) * 16;
        Self {
            keys_t: vec![0.0; heads * head_dim * padded],
            values: vec![0.0; padded * heads * head_dim],
            padded,
            len: 0,
            heads,
            head_dim,
        }
    }

    /// Appends one position's key and value (each `hidden` wide), growing when full.
    fn push(&mut self, key: &[f32], value: &[f32]) {
        let hidden = self.heads * self.head_dim;
        if self.len == self.padded {
            let mut grown = Self::new(self.heads, self.head_dim, self.padded * 2);
            for row in 0..hidden {
                grown.keys_t[row * grown.padded..][..self.len]
                    .copy_from_slice(&self.keys_t[row * self.padded..][..self.len]);
            }
            grown.values[..self.len * hidden].copy_from_slice(&self.values[..self.len * hidden]);
            grown.len = self.len;
            *self = grown;
        }
        for (row, &k) in key.iter().enumerate() {
            self.keys_t[row * self.padded + self.len] = k;
        }
        self.values[self.len * hidden..][..hidden].copy_from_slice(value);
        self.len += 1;
    }

    fn view(&self) -> KvView<'_> {
        KvView {
            keys_t: &self.keys_t,
            padded: self.padded,
            values: &self.values,
            len: self.len,
        }
    }
}

/// A sequence's self-attention keys and values, one block per layer: what the decoder has
/// seen so far. Cloned when beam search continues a beam in several ways.
#[derive(Debug, Clone)]
pub(crate) struct SequenceCache {
    layers: Vec<KvBlock>,
}

impl SequenceCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len)
    }
}

/// The cross-attention keys and values of one encoder output (an image, or a question
/// encoding), one block per layer: computed once, read at every decoding step.
#[derive(Debug)]
pub(crate) struct CrossStates {
    layers: Vec<KvBlock>,
}

/// q, k and v weights (out, in) and biases of `BlipTextSelfAttention` under `vb`, the
/// query rows scaled by 1/sqrt(head_dim) (the score scale); k and v read `input` wide.
// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L93-L198
fn attention_weights(
    vb: &VarBuilder,
    hidden: usize,
    input: usize,
    head_dim: usize,
) -> Result<[(Tensor, Tensor); 3]> {
    let part = |name: &str, width: usize| -> Result<(Tensor, Tensor)> {
        let vb = vb.pp(name);
        Ok((vb.get((hidden, width), "weight")?, vb.get(hidden, "bias")?))
    };
    let scale = (head_dim as f64).powf(-0.5);
    let (qw, qb) = part("query", hidden)?;
    Ok([
        ((qw * scale)?, (qb * scale)?),
        part("key", input)?,
        part("value", input)?,
    ])
}

/// Weights (out, in) and biases stacked along the outputs: one product for several.
fn fused(parts: &[&(Tensor, Tensor)]) -> Result<(Tensor, Option<Tensor>)> {
    let weights: Vec<&Tensor> = parts.iter().map(|p| &p.0).collect();
    let biases: Vec<&Tensor> = parts.iter().map(|p| &p.1).collect();
    Ok((Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?)))
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L201-L213
/// `BlipTextSelfOutput`: `LayerNorm(dense(context) + input)`.
struct AttentionOutput {
    dense: PackedLinear,
    norm: Norm,
}

impl AttentionOutput {
    fn load(vb: VarBuilder, cfg: &BlipTextConfig, p: &Packer) -> Result<Self> {
        let h = cfg.hidden_size;
        let dense = vb.pp("dense");
        Ok(Self {
            dense: PackedLinear::load(p, &dense.prefix(), (h, h), || {
                Ok((dense.get((h, h), "weight")?, Some(dense.get(h, "bias")?)))
            })?,
            norm: Norm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    /// `x = LayerNorm(dense(context) + x)`.
    fn finish(&self, context: &[f32], rows: usize, x: &mut [f32]) {
        let mut sum = x.to_vec();
        self.dense.run(context, rows, Act::Identity, true, &mut sum);
        self.norm.run(&sum, x);
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L241-L269
/// `LayerNorm(dense2(act(dense1(x))) + x)`.
struct FeedForward {
    intermediate: PackedLinear,
    output: PackedLinear,
    norm: Norm,
}

impl FeedForward {
    fn load(vb: VarBuilder, cfg: &BlipTextConfig, p: &Packer) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let linear = |vb: VarBuilder, n: usize, k: usize| {
            PackedLinear::load(p, &vb.prefix(), (n, k), || {
                Ok((vb.get((n, k), "weight")?, Some(vb.get(n, "bias")?)))
            })
        };
        Ok(Self {
            intermediate: linear(vb.pp("intermediate").pp("dense"), i, h)?,
            output: linear(vb.pp("output").pp("dense"), h, i)?,
            norm: Norm::load(vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    fn run(&self, x: &mut [f32], rows: usize, act: Act) {
        let mid_width = self.intermediate.dims().0;
        let mut mid = vec![0.0f32; rows * mid_width];
        self.intermediate.run(x, rows, act, false, &mut mid);
        let mut sum = x.to_vec();
        self.output.run(&mid, rows, Act::Identity, true, &mut sum);
        self.norm.run(&sum, x);
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L272-L317
struct TextLayer {
    /// Self-attention's q, k and v in one product.
    qkv: PackedLinear,
    attention: AttentionOutput,
    cross_query: PackedLinear,
    /// Cross-attention's k and v in one product, reading the encoder's width.
    cross_key_value: PackedLinear,
    crossattention: AttentionOutput,
    feed_forward: FeedForward,
}

impl TextLayer {
    fn load(vb: VarBuilder, cfg: &BlipTextConfig, p: &Packer) -> Result<Self> {
        let h = cfg.hidden_size;
        let head_dim = h / cfg.num_attention_heads;
        let this = vb.pp("attention").pp("self");
        let [q, k, v] = attention_weights(&this, h, h, head_dim)?;
        let qkv = PackedLinear::load(p, &format!("{}.qkv", this.prefix()), (3 * h, h), || {
            fused(&[&q, &k, &v])
        })?;
        let cross = vb.pp("crossattention").pp("self");
        let [q, k, v] = attention_weights(&cross, h, cfg.encoder_hidden_size, head_dim)?;
        Ok(Self {
            qkv,
            attention: AttentionOutput::load(vb.pp("attention").pp("output"), cfg, p)?,
            cross_query: PackedLinear::load(
                p,
                &format!("{}.query", cross.prefix()),
                (h, h),
                || Ok((q.0, Some(q.1))),
            )?,
            cross_key_value: PackedLinear::load(
                p,
                &format!("{}.key_value", cross.prefix()),
                (2 * h, cfg.encoder_hidden_size),
                || fused(&[&k, &v]),
            )?,
            crossattention: AttentionOutput::load(vb.pp("crossattention").pp("output"), cfg, p)?,
            feed_forward: FeedForward::load(vb, cfg, p)?,
        })
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L45-L89
/// Word and position embeddings, summed and layer-normed (no token types).
struct Embeddings {
    words: Vec<f32>,
    positions: Vec<f32>,
    norm: Norm,
    vocab: usize,
    max_positions: usize,
}

/// A BLIP text stack (`BlipTextModel` without pooler): the question encoder of a
/// question-answering checkpoint, or the `bert` part of its decoders.
// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L460-L578
pub(crate) struct TextModel {
    embeddings: Embeddings,
    layers: Vec<TextLayer>,
    shape: Shape,
}

impl TextModel {
    /// `vb` is the stack's root (`text_encoder` or `text_decoder.bert`).
    pub fn load(vb: VarBuilder, cfg: &BlipTextConfig, p: &Packer) -> Result<Self> {
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let embeddings = Embeddings {
            words: host(&emb.get((cfg.vocab_size, h), "word_embeddings.weight")?)?,
            positions: host(&emb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?)?,
            norm: Norm::load(emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| TextLayer::load(vb.pp("encoder").pp("layer").pp(i), cfg, p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            shape: Shape {
                hidden: h,
                heads: cfg.num_attention_heads,
                head_dim: h / cfg.num_attention_heads,
                act: kernel_act(cfg.hidden_act),
            },
        })
    }

    /// The word-embedding table `(vocab, hidden)`: also the LM head's output weights.
    pub fn word_embeddings(&self) -> &[f32] {
        &self.embeddings.words
    }

    /// An empty self-attention cache with room for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> SequenceCache {
        let s = self.shape;
        SequenceCache {
            layers: (0..self.layers.len())
                .map(|_| KvBlock::new(s.heads, s.head_dim, capacity))
                .collect(),
        }
    }

    /// The cross-attention keys and values of every layer for one encoder output, `len`
    /// rows of the encoder's width.
    pub fn cross_states(&self, encoder: &[f32], len: usize) -> CrossStates {
        let s = self.shape;
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let mut projected = vec![0.0f32; len * 2 * s.hidden];
                layer
                    .cross_key_value
                    .run(encoder, len, Act::Identity, false, &mut projected);
                let mut block = KvBlock::new(s.heads, s.head_dim, len);
                for row in projected.chunks_exact(2 * s.hidden) {
                    block.push(&row[..s.hidden], &row[s.hidden..]);
                }
                block
            })
            .collect();
        CrossStates { layers }
    }

    /// Runs `n` new tokens of each sequence through the stack: sequence `r` reads tokens
    /// `ids[r * n..][..n]`, appends their keys and values to `caches[r]` (whose length
    /// gives their positions) and cross-attends to `cross[r]`. With `causal`, a token sees
    /// only the cache up to itself (the decoder); without, all of it (the encoder, with
    /// fresh caches). Returns the last hidden states, `(caches.len() * n, hidden)`.
    pub fn forward(
        &self,
        ids: &[u32],
        n: usize,
        caches: &mut [&mut SequenceCache],
        causal: bool,
        cross: &[&CrossStates],
    ) -> Result<Vec<f32>> {
        let s = self.shape;
        let (h, rows) = (s.hidden, caches.len() * n);
        if ids.len() != rows || cross.len() != caches.len() {
            candle_core::bail!("text stack called with mismatched rows");
        }
        let e = &self.embeddings;
        let mut summed = vec![0.0f32; rows * h];
        for (r, cache) in caches.iter().enumerate() {
            for i in 0..n {
                let id = ids[r * n + i] as usize;
                let position = cache.len() + i;
                if id >= e.vocab {
                    candle_core::bail!("token id {id} is outside the {}-token vocabulary", e.vocab);
                }
                if position >= e.max_positions {
                    candle_core::bail!(
                        "position {position} is past the {} the text model has embeddings for",
                        e.max_positions
                    );
                }
                let out = &mut summed[(r * n + i) * h..][..h];
                let (word, pos) = (&e.words[id * h..][..h], &e.positions[position * h..][..h]);
                for ((o, &w), &p) in out.iter_mut().zip(word).zip(pos) {
                    *o = w + p;
                }
            }
        }
        let mut x = vec![0.0f32; rows * h];
        e.norm.run(&summed, &mut x);
        let mut context = vec![0.0f32; rows * h];
        for (l, layer) in self.layers.iter().enumerate() {
            // Self-attention over each sequence's cache, extended by its new tokens.
            let mut qkv = vec![0.0f32; rows * 3 * h];
            layer.qkv.run(&x, rows, Act::Identity, false, &mut qkv);
            for (r, cache) in caches.iter_mut().enumerate() {
                for i in 0..n {
                    let row = &qkv[(r * n + i) * 3 * h..][..3 * h];
                    cache.layers[l].push(&row[h..2 * h], &row[2 * h..]);
                }
            }
            let views: Vec<KvView> = caches.iter().map(|c| c.layers[l].view()).collect();
            let queries = Queries {
                per_source: n,
                heads: s.heads,
                head_dim: s.head_dim,
                stride: 3 * h,
                causal,
            };
            kernels::attend(&qkv, queries, &views, &mut context);
            layer.attention.finish(&context, rows, &mut x);
            // Cross-attention to the encoder's states.
            let mut q = vec![0.0f32; rows * h];
            layer
                .cross_query
                .run(&x, rows, Act::Identity, false, &mut q);
            let views: Vec<KvView> = cross.iter().map(|c| c.layers[l].view()).collect();
            let queries = Queries {
                stride: h,
                causal: false,
                ..queries
            };
            kernels::attend(&q, queries, &views, &mut context);
            layer.crossattention.finish(&context, rows, &mut x);
            layer.feed_forward.run(&mut x, rows, s.act);
        }
        Ok(x)
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip_text.py#L387-L430
/// `BlipTextOnlyMLMHead`: dense, activation, layer norm, then the word embeddings
/// (tied output weights) with their own bias.
pub(crate) struct LmHead {
    transform: PackedLinear,
    norm: Norm,
    decoder: PackedLinear,
    act: Act,
    vocab: usize,
}

impl LmHead {
    /// `vb` is `text_decoder.cls.predictions`; `words` the decoder's word embeddings.
    pub fn load(vb: VarBuilder, cfg: &BlipTextConfig, words: &[f32], p: &Packer) -> Result<Self> {
        let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let dense = vb.pp("transform").pp("dense");
        let bias = vb.get(vocab, "bias")?;
        let device = bias.device().clone();
        Ok(Self {
            transform: PackedLinear::load(p, &dense.prefix(), (h, h), || {
                Ok((dense.get((h, h), "weight")?, Some(dense.get(h, "bias")?)))
            })?,
            norm: Norm::load(vb.pp("transform").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            decoder: PackedLinear::load(
                p,
                &format!("{}.decoder", vb.prefix()),
                (vocab, h),
                || Ok((Tensor::from_slice(words, (vocab, h), &device)?, Some(bias))),
            )?,
            act: kernel_act(cfg.hidden_act),
            vocab,
        })
    }

    /// Logits `(rows, vocab)` for hidden states `(rows, hidden)`.
    pub fn forward(&self, hidden: &[f32], rows: usize) -> Vec<f32> {
        let h = self.transform.dims().0;
        let mut t = vec![0.0f32; rows * h];
        self.transform.run(hidden, rows, self.act, false, &mut t);
        let mut normed = vec![0.0f32; rows * h];
        self.norm.run(&t, &mut normed);
        let mut logits = vec![0.0f32; rows * self.vocab];
        self.decoder
            .run(&normed, rows, Act::Identity, false, &mut logits);
        logits
    }
}
