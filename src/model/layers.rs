//! The transformer block shared by both towers: pre-norm self-attention and MLP.
//!
//! Two implementations of the same block: candle's ops (GPUs, and f16 on the CPU), and on
//! the CPU in f32 the crate's own kernels ([`crate::kernels`]) with each weight packed
//! once at load and bias, activation and residual add fused into the products.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use super::config::{Activation, VisionConfig};
pub(crate) use super::pack::Compute;
use super::pack::{host, PackedWeight, Packing};
use crate::kernels::{self, Act, Bf16Kernel, Epilogue, Heads, Int8Kernel};

/// How a load builds its layers: the implementation, and where packed weights come from.
pub(crate) struct Packer {
    pub compute: Compute,
    pub packing: Packing,
}

impl Packer {
    /// Packs each weight from the weights file, recording nothing.
    pub fn fresh(compute: Compute) -> Self {
        Self {
            compute,
            packing: Packing::Fresh(None),
        }
    }

    /// The packer for the layers outside the transformer stack (patch embedding,
    /// projections): the same, except that an int8 model keeps them in f32. The patch
    /// embedding reads raw pixels and the projections run once per image or prompt, so
    /// int8 would buy little time there for most of the accuracy it costs (measured in
    /// BENCHMARKS.md).
    pub fn edge(&self) -> Self {
        Self {
            compute: match self.compute {
                Compute::Int8(_, isa) => Compute::Packed(isa),
                other => other,
            },
            packing: self.packing.clone(),
        }
    }
}

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

impl StackShape {
    /// The transformer of a vision tower.
    pub fn vision(config: &VisionConfig) -> Self {
        Self {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            act: config.hidden_act,
            eps: config.layer_norm_eps,
        }
    }
}

pub(crate) fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluTanh => xs.gelu(),
        Activation::Relu => xs.relu(),
    }
}

pub(crate) fn kernel_act(act: Activation) -> Act {
    match act {
        Activation::QuickGelu => Act::QuickGelu,
        Activation::Gelu => Act::GeluErf,
        Activation::GeluTanh => Act::GeluTanh,
        Activation::Relu => Act::Relu,
    }
}

/// A weight packed for the CPU kernels, with its bias as host floats.
pub(crate) struct PackedLinear {
    weight: PackedWeight,
    bias: Option<Vec<f32>>,
    compute: Compute,
}

impl PackedLinear {
    /// The packed layer `name`: from the pack file, or packed from `build`'s weight
    /// (out, in) as PyTorch stores it, and bias. `p.compute` must be a packed kind.
    pub(crate) fn load(
        p: &Packer,
        name: &str,
        dims: (usize, usize),
        build: impl FnOnce() -> Result<(Tensor, Option<Tensor>)>,
    ) -> Result<Self> {
        let (weight, bias) = p.packing.linear(name, p.compute, dims, build)?;
        Ok(Self {
            weight,
            bias,
            compute: p.compute,
        })
    }

    /// (output features, input features).
    pub(crate) fn dims(&self) -> (usize, usize) {
        match &self.weight {
            PackedWeight::F32(w) => (w.n(), w.k()),
            PackedWeight::Bf16(w) => (w.n(), w.k()),
            PackedWeight::I8(w) => (w.n(), w.k()),
        }
    }

    /// `out = act(x · wᵀ + b)`, or `out += …` when `accumulate`.
    pub(crate) fn run(&self, x: &[f32], rows: usize, act: Act, accumulate: bool, out: &mut [f32]) {
        let ep = Epilogue {
            bias: self.bias.as_deref(),
            act,
            accumulate,
        };
        match &self.weight {
            PackedWeight::F32(w) => kernels::matmul(x, rows, w, &ep, out),
            PackedWeight::Bf16(w) => {
                let kernel = match self.compute {
                    Compute::Bf16(kernel) => kernel,
                    // Only bf16 loads make bf16 weights; AMX is the layout's first kernel.
                    _ => Bf16Kernel::Amx,
                };
                kernels::matmul_bf16(x, rows, w, &ep, out, kernel)
            }
            PackedWeight::I8(w) => {
                let kernel = match self.compute {
                    Compute::Int8(kernel, _) => kernel,
                    // Only int8 loads make int8 weights.
                    _ => Int8Kernel::Portable,
                };
                kernels::matmul_int8(x, rows, w, &ep, out, kernel)
            }
        }
    }
}

/// A linear layer of either implementation, on tensors: used outside the transformer
/// stack (patch embedding, projections).
pub(crate) enum Dense {
    Candle(Linear),
    Packed(PackedLinear),
}

impl Dense {
    /// The layer `name` of `dims` (out, in), from `build`'s weight (out, in) and bias (or
    /// the pack file).
    pub fn build(
        p: &Packer,
        name: &str,
        dims: (usize, usize),
        build: impl FnOnce() -> Result<(Tensor, Option<Tensor>)>,
    ) -> Result<Self> {
        let p = p.edge();
        Ok(match p.compute {
            Compute::Candle => {
                let (weight, bias) = build()?;
                Dense::Candle(Linear::new(weight, bias))
            }
            _ => Dense::Packed(PackedLinear::load(&p, name, dims, build)?),
        })
    }

    /// Reads `weight` (and `bias` when `with_bias`) under `vb`.
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        with_bias: bool,
        p: &Packer,
    ) -> Result<Self> {
        Self::build(p, &vb.prefix(), (out_dim, in_dim), || {
            let weight = vb.get((out_dim, in_dim), "weight")?;
            let bias = with_bias.then(|| vb.get(out_dim, "bias")).transpose()?;
            Ok((weight, bias))
        })
    }

    /// Applies the layer to the last dimension of `xs`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Dense::Candle(linear) => linear.forward(xs),
            Dense::Packed(packed) => {
                let (n, k) = packed.dims();
                let mut dims = xs.dims().to_vec();
                let rows = xs.elem_count() / k.max(1);
                let mut out = vec![0.0f32; rows * n];
                packed.run(&host(xs)?, rows, Act::Identity, false, &mut out);
                if let Some(last) = dims.last_mut() {
                    *last = n;
                }
                Tensor::from_vec(out, dims, xs.device())
            }
        }
    }
}

/// Self-attention with the query, key and value projections fused into one matrix
/// multiply, and the 1/sqrt(head_dim) score scale folded into the query weights at load.
struct Attention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

/// The fused q/k/v weight and bias, with the query rows pre-scaled.
fn fused_qkv(vb: &VarBuilder, shape: &StackShape) -> Result<(Tensor, Tensor)> {
    let h = shape.hidden;
    let head_dim = h / shape.heads;
    let scale = (head_dim as f64).powf(-0.5);
    // BLIP's vision attention stores them fused already (`qkv`, then `projection`).
    // https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/blip/modeling_blip.py#L285-L344
    if vb.contains_tensor("qkv.weight") {
        let (weight, bias) = (
            vb.get((3 * h, h), "qkv.weight")?,
            vb.get(3 * h, "qkv.bias")?,
        );
        let rescale = |t: &Tensor| -> Result<Tensor> {
            Tensor::cat(
                &[&(t.narrow(0, 0, h)? * scale)?, &t.narrow(0, h, 2 * h)?],
                0,
            )
        };
        return Ok((rescale(&weight)?, rescale(&bias)?));
    }
    let part = |name: &str| -> Result<(Tensor, Tensor)> {
        let vb = vb.pp(name);
        Ok((vb.get((h, h), "weight")?, vb.get(h, "bias")?))
    };
    let (qw, qb) = part("q_proj")?;
    let (kw, kb) = part("k_proj")?;
    let (vw, vb_) = part("v_proj")?;
    let weight = Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?;
    let bias = Tensor::cat(&[&(qb * scale)?, &kb, &vb_], 0)?;
    Ok((weight, bias))
}

/// The attention's output projection: `out_proj` (CLIP, SigLIP) or `projection` (BLIP).
fn out_projection<'a>(vb: &VarBuilder<'a>) -> VarBuilder<'a> {
    if vb.contains_tensor("projection.weight") {
        vb.pp("projection")
    } else {
        vb.pp("out_proj")
    }
}

impl Attention {
    fn load(vb: VarBuilder, shape: &StackShape) -> Result<Self> {
        let h = shape.hidden;
        let (weight, bias) = fused_qkv(&vb, shape)?;
        Ok(Self {
            qkv: Linear::new(weight, Some(bias)),
            out: linear(h, h, out_projection(&vb))?,
            heads: shape.heads,
            head_dim: h / shape.heads,
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

pub(crate) struct Block {
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

/// Layer-norm parameters as host floats.
pub(crate) struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: host(&vb.get(dim, "weight")?)?,
            beta: host(&vb.get(dim, "bias")?)?,
            eps: eps as f32,
        })
    }

    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        kernels::layer_norm(x, self.gamma.len(), &self.gamma, &self.beta, self.eps, out);
    }
}

/// One block on the packed CPU kernels.
pub(crate) struct PackedBlock {
    norm1: Norm,
    qkv: PackedLinear,
    out: PackedLinear,
    norm2: Norm,
    fc1: PackedLinear,
    fc2: PackedLinear,
}

impl PackedBlock {
    fn load(vb: VarBuilder, shape: &StackShape, p: &Packer) -> Result<Self> {
        let (h, i) = (shape.hidden, shape.intermediate);
        let attn = vb.pp("self_attn");
        let linear = |vb: VarBuilder, n: usize, k: usize| {
            PackedLinear::load(p, &vb.prefix(), (n, k), || {
                Ok((vb.get((n, k), "weight")?, Some(vb.get(n, "bias")?)))
            })
        };
        let qkv_name = format!("{}.qkv", attn.prefix());
        Ok(Self {
            norm1: Norm::load(vb.pp("layer_norm1"), h, shape.eps)?,
            qkv: PackedLinear::load(p, &qkv_name, (3 * h, h), || {
                let (w, b) = fused_qkv(&attn, shape)?;
                Ok((w, Some(b)))
            })?,
            out: linear(out_projection(&attn), h, h)?,
            norm2: Norm::load(vb.pp("layer_norm2"), h, shape.eps)?,
            fc1: linear(vb.pp("mlp").pp("fc1"), i, h)?,
            fc2: linear(vb.pp("mlp").pp("fc2"), h, i)?,
        })
    }
}

/// Scratch buffers of one forward pass, reused by every block.
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    mid: Vec<f32>,
}

/// `encoder.layers.*` of a CLIP tower.
pub(crate) enum Encoder {
    Candle(Vec<Block>),
    Packed {
        blocks: Vec<PackedBlock>,
        shape: StackShape,
    },
}

impl Encoder {
    pub fn load(vb: VarBuilder, shape: &StackShape, p: &Packer) -> Result<Self> {
        let vb = vb.pp("layers");
        Ok(match p.compute {
            Compute::Candle => Encoder::Candle(
                (0..shape.layers)
                    .map(|i| Block::load(vb.pp(i), shape))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Compute::Packed(_) | Compute::Bf16(_) | Compute::Int8(..) => Encoder::Packed {
                blocks: (0..shape.layers)
                    .map(|i| PackedBlock::load(vb.pp(i), shape, p))
                    .collect::<Result<Vec<_>>>()?,
                shape: *shape,
            },
        })
    }

    /// `xs`: (batch, seq, hidden). With `causal`, token `i` attends only to `0..=i`.
    pub fn forward(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
        match self {
            Encoder::Candle(blocks) => {
                let (_, seq, _) = xs.dims3()?;
                let mask = causal
                    .then(|| causal_mask(seq, xs.dtype(), xs.device()))
                    .transpose()?;
                let mut xs = xs.clone();
                for block in blocks {
                    xs = block.forward(&xs, mask.as_ref())?;
                }
                Ok(xs)
            }
            Encoder::Packed { blocks, shape } => {
                let (batch, seq, hidden) = xs.dims3()?;
                let mut x = host(xs)?;
                let heads = Heads {
                    batch,
                    seq,
                    heads: shape.heads,
                    head_dim: hidden / shape.heads,
                    causal,
                };
                let tokens = batch * seq;
                let mut s = Scratch {
                    normed: vec![0.0; tokens * hidden],
                    qkv: vec![0.0; tokens * 3 * hidden],
                    context: vec![0.0; tokens * hidden],
                    mid: vec![0.0; tokens * shape.intermediate],
                };
                let act = kernel_act(shape.act);
                for b in blocks {
                    b.norm1.run(&x, &mut s.normed);
                    b.qkv
                        .run(&s.normed, tokens, Act::Identity, false, &mut s.qkv);
                    kernels::attention(&s.qkv, heads, &mut s.context);
                    b.out.run(&s.context, tokens, Act::Identity, true, &mut x);
                    b.norm2.run(&x, &mut s.normed);
                    b.fc1.run(&s.normed, tokens, act, false, &mut s.mid);
                    b.fc2.run(&s.mid, tokens, Act::Identity, true, &mut x);
                }
                Tensor::from_vec(x, (batch, seq, hidden), xs.device())
            }
        }
    }
}

fn causal_mask(seq: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (seq, seq), device)?.to_dtype(dtype)
}

/// Row-wise L2 normalisation of a (rows, dim) matrix.
pub(crate) fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norms)
}
