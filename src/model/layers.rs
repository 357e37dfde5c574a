//! The transformer block shared by both towers: pre-norm self-attention and MLP.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use super::config::Activation;

/// Sizes of one tower's transformer stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub act: Activation,
    pub eps: f64,
}

pub(crate) fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluTanh => xs.gelu(),
        Activation::Relu => xs.relu(),
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/clip/modeling_clip.py#L280-L335
/// Self-attention with the query, key and value projections fused into one matrix
/// multiply, and the 1/sqrt(head_dim) score scale folded into the query weights at load.
struct Attention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, shape: &StackShape) -> Result<Self> {
        let h = shape.hidden;
        let head_dim = h / shape.heads;
        let scale = (head_dim as f64).powf(-0.5);
        let part = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = vb.pp(name);
            Ok((vb.get((h, h), "weight")?, vb.get(h, "bias")?))
        };
        let (qw, qb) = part("q_proj")?;
        let (kw, kb) = part("k_proj")?;
        let (vw, vb_) = part("v_proj")?;
        let weight = Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?;
        let bias = Tensor::cat(&[&(qb * scale)?, &kb, &vb_], 0)?;
        Ok(Self {
            qkv: Linear::new(weight, Some(bias)),
            out: linear(h, h, vb.pp("out_proj"))?,
            heads: shape.heads,
            head_dim,
        })
    }

    /// `mask`, when given, is added to the attention scores: shape (seq, seq).
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch, seq, hidden) = xs.dims3()?;
        // (batch, seq, 3 * hidden) → (3, batch, heads, seq, head_dim) in one copy; q, k
        // and v are then contiguous slices of it.
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((batch, seq, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        self.out.forward(&context)
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/clip/modeling_clip.py#L338-L350
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    fn load(vb: VarBuilder, shape: &StackShape) -> Result<Self> {
        Ok(Self {
            fc1: linear(shape.hidden, shape.intermediate, vb.pp("fc1"))?,
            fc2: linear(shape.intermediate, shape.hidden, vb.pp("fc2"))?,
            act: shape.act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = activate(self.act, &self.fc1.forward(xs)?)?;
        self.fc2.forward(&hidden)
    }
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/clip/modeling_clip.py#L353-L380
struct Block {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, shape: &StackShape) -> Result<Self> {
        Ok(Self {
            norm1: layer_norm(shape.hidden, shape.eps, vb.pp("layer_norm1"))?,
            attention: Attention::load(vb.pp("self_attn"), shape)?,
            norm2: layer_norm(shape.hidden, shape.eps, vb.pp("layer_norm2"))?,
            mlp: Mlp::load(vb.pp("mlp"), shape)?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let attended = self.attention.forward(&self.norm1.forward(xs)?, mask)?;
        let xs = (xs + attended)?;
        let transformed = self.mlp.forward(&self.norm2.forward(&xs)?)?;
        xs + transformed
    }
}

/// `encoder.layers.*` of a CLIP tower.
pub(crate) struct Encoder {
    blocks: Vec<Block>,
}

impl Encoder {
    pub fn load(vb: VarBuilder, shape: &StackShape) -> Result<Self> {
        let vb = vb.pp("layers");
        let blocks = (0..shape.layers)
            .map(|i| Block::load(vb.pp(i), shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks })
    }

    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for block in &self.blocks {
            xs = block.forward(&xs, mask)?;
        }
        Ok(xs)
    }
}

/// Row-wise L2 normalisation of a (rows, dim) matrix.
pub(crate) fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norms)
}
