//! int8 matrix products: weights quantised once per output channel, activations per row
//! at every call, products summed in int32, the result dequantised in the output pass
//! together with the bias, activation and residual add.
//!
//! Weights: `w[j][kk] ≈ sw[j] · qw[j][kk]`, `qw` signed and symmetric in
//! `[-wmax, wmax]` with `sw[j] = max |w[j]| / wmax`. Activations: `x[i][kk] ≈ sa[i] ·
//! (qa[i][kk] - za[i])`, `qa` unsigned in `[0, amax]`, the row's range widened to hold 0 so
//! that `za` is an exact integer. Then
//! `(x · wᵀ)[i][j] ≈ sa[i] · sw[j] · (Σ qa·qw - za[i] · Σ qw[j])`: one int32 product and a
//! correction by the weight's column sum, known at packing.
//!
//! Every x86 int8 instruction multiplies unsigned bytes by signed bytes (`vpmaddubsw`,
//! `vpdpbusd`, `tdpbusd`), hence u8 activations with a zero point and s8 weights. The
//! kernels, chosen at run time ([`Int8Kernel::detect`]):
//!
//! - **AMX** (`tdpbusd`): 32 x 32 output blocks in four tiles, like the bf16 kernel.
//! - **AVX512-VNNI** (`vpdpbusd` on 512-bit registers): 12 x 32 blocks, reading the AMX
//!   layout of the weights (as the AVX512-BF16 kernel does).
//! - **AVX-VNNI** (`vpdpbusd` on 256-bit registers): 6 x 16 blocks.
//! - **AVX2** (`vpmaddubsw` + `vpmaddwd`): `vpmaddubsw` adds two u8 x s8 products into an
//!   int16 *with saturation*: 255 · 127 · 2 does not fit. This kernel keeps both operands to
//!   7 bits (activations in `[0, 127]`, weights in `[-63, 63]`): then even four products fit
//!   (4 · 127 · 63 = 32004 < 32767), so the two `vpmaddubsw` of 8 consecutive `k` are added
//!   in int16 before one `vpmaddwd` widens them to int32, three multiply-port instructions
//!   per 64 products instead of four per 64 with 8-bit activations (whose pairs already
//!   need widening each step). The accuracy this costs is measured in BENCHMARKS.md.
//! - **portable**: plain integer loops, for other CPUs and as the tests' second opinion.
//!
//! Each kernel is exact in integers (no saturation can occur for its ranges), so all of
//! them agree with the integer reference bit for bit before the f32 output pass.

use super::gemm::{plan, write_block, Block, Epilogue, OutPtr, Task};
use super::store::Store;

/// Rounds to the nearest integer, ties to even, for `|v| < 2^22`: adding and taking away
/// 1.5 · 2^23 leaves no fraction bits. Plain adds, so it vectorises on any x86-64 (where
/// `round_ties_even` is a libm call without SSE4.1).
#[inline(always)]
fn round(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// How the packed weights are laid out; kernels sharing a layout read the same pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Layout {
    /// Panels of 16 output columns; `k` in groups of 4 (padded to a multiple of 8): group
    /// `g` of a panel is 64 bytes, the 4 weights `w[j][4g..4g + 4]` of each column `j`.
    Vnni16,
    /// The AMX tile layout: panels of 32 columns, slices of 64 along `k`, each slice two
    /// tiles of 16 rows x 64 bytes; row `r` of tile `t` holds group `r` of the slice for
    /// columns `16t..16t + 16`, 4 bytes each.
    Tiles32,
}

impl Layout {
    /// Output columns per panel.
    fn nr(self) -> usize {
        match self {
            Layout::Vnni16 => 16,
            Layout::Tiles32 => 32,
        }
    }

    /// `k` padded to what the layout's kernels step by.
    fn kp(self, k: usize) -> usize {
        match self {
            Layout::Vnni16 => k.div_ceil(8) * 8,
            Layout::Tiles32 => k.div_ceil(64) * 64,
        }
    }

    /// Offset of weight `(j, kk)` inside its panel (`j < nr`).
    #[inline(always)]
    fn offset(self, j: usize, kk: usize) -> usize {
        match self {
            Layout::Vnni16 => (kk / 4) * 64 + j * 4 + kk % 4,
            Layout::Tiles32 => {
                let (slice, within) = (kk / 64, kk % 64);
                slice * 2048 + (j / 16) * 1024 + (within / 4) * 64 + (j % 16) * 4 + kk % 4
            }
        }
    }
}

/// The instructions that multiply int8 matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// AMX tiles (`tdpbusd`): Xeon Sapphire Rapids and later.
    Amx,
    /// AVX512-VNNI (`vpdpbusd`, 512-bit): Xeon Cascade Lake and later, AMD Zen 4 and later.
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd`, 256-bit): Intel Alder Lake and later client CPUs, Sierra Forest.
    AvxVnni,
    /// AVX2 (`vpmaddubsw`, `vpmaddwd`) on 7-bit operands: any x86-64 CPU since 2013-2015.
    Avx2,
    /// Plain integer code for any CPU.
    Portable,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 5] = [
        Int8Kernel::Amx,
        Int8Kernel::Avx512Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx2,
        Int8Kernel::Portable,
    ];

    /// The fastest kernel this CPU runs (the portable one at worst).
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.supported())
            .unwrap_or(Int8Kernel::Portable)
    }

    /// Whether this CPU (and OS) runs `self`.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Int8Kernel::Amx => amx_int8_available(),
                Int8Kernel::Avx512Vnni => has!("avx512f") && has!("avx512vnni"),
                Int8Kernel::AvxVnni => has!("avx2") && has!("avxvnni"),
                Int8Kernel::Avx2 => has!("avx2"),
                Int8Kernel::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Int8Kernel::Portable
        }
    }

    /// How reports name the kernel.
    pub fn label(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "packed amx-int8",
            Int8Kernel::Avx512Vnni => "packed avx512-vnni int8",
            Int8Kernel::AvxVnni => "packed avx-vnni int8",
            Int8Kernel::Avx2 => "packed avx2 int8 (7-bit)",
            Int8Kernel::Portable => "packed portable int8",
        }
    }

    /// The name `VLM_INT8_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx",
            Int8Kernel::Avx512Vnni => "avx512vnni",
            Int8Kernel::AvxVnni => "avxvnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }

    pub(crate) fn layout(self) -> Layout {
        match self {
            Int8Kernel::Amx | Int8Kernel::Avx512Vnni => Layout::Tiles32,
            Int8Kernel::AvxVnni | Int8Kernel::Avx2 | Int8Kernel::Portable => Layout::Vnni16,
        }
    }

    /// The largest weight magnitude: 7 bits for AVX2 (see the module notes), else 8.
    pub(crate) fn weight_max(self) -> i32 {
        match self {
            Int8Kernel::Avx2 => 63,
            _ => 127,
        }
    }

    /// The largest quantised activation.
    pub(crate) fn act_max(self) -> i32 {
        match self {
            Int8Kernel::Avx2 => 127,
            _ => 255,
        }
    }

    /// Output rows per register block.
    fn mr(self) -> usize {
        match self {
            Int8Kernel::Amx => 32,
            Int8Kernel::Avx512Vnni => 12,
            Int8Kernel::AvxVnni => 6,
            Int8Kernel::Avx2 => AVX2_MR,
            Int8Kernel::Portable => 4,
        }
    }

    /// What a pack file records about the packed values: layout and weight range.
    pub(crate) fn pack_layout(self) -> String {
        format!(
            "int8 {:?} nr {} w{}",
            self.layout(),
            self.layout().nr(),
            self.weight_max()
        )
    }
}

impl std::str::FromStr for Int8Kernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown int8 kernel {s:?}; use amx, avx512vnni, avxvnni, avx2 or portable")
            })
    }
}

/// Whether this CPU and OS can run AMX-INT8; asks Linux for the tile state the first time.
fn amx_int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Asked once: every product asserts its kernel, and CPUID traps to the hypervisor
        // in a VM.
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            // CPUID leaf 7: EDX bit 25 AMX-INT8 (bit 24, AMX-TILE, is checked with the tile
            // state).
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that reports it (all modern ones).
            let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
            edx & (1 << 25) != 0 && super::amx::tiles_permitted()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight matrix quantised per output channel and packed for one layout.
#[derive(Debug)]
pub(crate) struct Int8Matrix {
    n: usize,
    k: usize,
    kernel_layout: Layout,
    weight_max: i32,
    data: Store<i8>,
    /// Per column: the scale `sw[j]`.
    scale: Vec<f32>,
    /// Per column: `Σ_kk qw[j][kk]`, the zero-point correction.
    colsum: Vec<i32>,
}

impl Int8Matrix {
    /// Quantises and packs `w`, `(n, k)` row-major f32, for `kernel`.
    pub fn pack(w: &[f32], n: usize, k: usize, kernel: Int8Kernel) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "weight holds {} values, not {n} x {k}",
            w.len()
        );
        let layout = kernel.layout();
        let wmax = kernel.weight_max();
        let (nr, kp) = (layout.nr(), layout.kp(k));
        let panels = n.div_ceil(nr);
        let mut scale = vec![0.0f32; n];
        let mut colsum = vec![0i32; n];
        let mut data = vec![0i8; panels * nr * kp];
        if k > 0 {
            use rayon::prelude::*;
            data.par_chunks_exact_mut(nr * kp)
                .zip(scale.par_chunks_mut(nr).zip(colsum.par_chunks_mut(nr)))
                .enumerate()
                .for_each(|(p, (panel, (scale, colsum)))| {
                    for (j, (s, sum)) in scale.iter_mut().zip(colsum.iter_mut()).enumerate() {
                        let row = &w[(p * nr + j) * k..][..k];
                        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        *s = if max > 0.0 { max / wmax as f32 } else { 1.0 };
                        let inv = 1.0 / *s;
                        for (kk, &v) in row.iter().enumerate() {
                            let q = (round(v * inv) as i32).clamp(-wmax, wmax);
                            panel[layout.offset(j, kk)] = q as i8;
                            *sum += q;
                        }
                    }
                });
        }
        Self {
            n,
            k,
            kernel_layout: layout,
            weight_max: wmax,
            data: Store::Owned(data),
            scale,
            colsum,
        }
    }

    /// Values packed earlier for `kernel` (read from a pack file), with the per-column
    /// scales and column sums (`aux`: `n` scales, then `n` sums stored as f32, exact below
    /// 2^24); None when the sizes do not match an `(n, k)` matrix in `kernel`'s layout.
    pub fn from_store(
        n: usize,
        k: usize,
        kernel: Int8Kernel,
        data: Store<i8>,
        aux: &[f32],
    ) -> Option<Self> {
        let layout = kernel.layout();
        let (nr, kp) = (layout.nr(), layout.kp(k));
        let len = n.div_ceil(nr).checked_mul(nr)?.checked_mul(kp)?;
        if data.as_slice().len() != len || aux.len() != n.checked_mul(2)? {
            return None;
        }
        let (scale, sums) = aux.split_at(n);
        let wmax = kernel.weight_max();
        let limit = (wmax as f32) * k as f32;
        if sums.iter().any(|s| s.fract() != 0.0 || s.abs() > limit)
            || scale.iter().any(|s| !s.is_finite())
        {
            return None;
        }
        Some(Self {
            n,
            k,
            kernel_layout: layout,
            weight_max: wmax,
            data,
            scale: scale.to_vec(),
            colsum: sums.iter().map(|&s| s as i32).collect(),
        })
    }

    /// The packed values.
    pub fn store(&self) -> &Store<i8> {
        &self.data
    }

    /// The per-column scales then column sums, as [`Self::from_store`] reads them.
    pub fn aux(&self) -> Vec<f32> {
        let mut aux = self.scale.clone();
        aux.extend(self.colsum.iter().map(|&s| s as f32));
        aux
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    fn nr(&self) -> usize {
        self.kernel_layout.nr()
    }

    fn kp(&self) -> usize {
        self.kernel_layout.kp(self.k)
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.nr())
    }

    fn panel(&self, p: usize) -> *const i8 {
        let len = self.nr() * self.kp();
        self.data.as_slice()[p * len..][..len].as_ptr()
    }
}

/// Activations quantised per row.
pub(crate) struct QuantRows {
    /// Row-major rows of `kp` bytes (zero past `k`), or in AMX tile order.
    data: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

/// Quantises the `m` rows of `x` (`k` wide) to `[0, amax]`, rows `kp` apart (row-major), or
/// in AMX tile order with rows padded to a multiple of 32.
pub(crate) fn quantize_rows(
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    amax: i32,
    tiles: bool,
) -> QuantRows {
    let mp = if tiles { m.div_ceil(32) * 32 } else { m };
    let mut q = QuantRows {
        data: vec![0u8; mp * kp],
        scale: vec![1.0; mp],
        zero: vec![0; mp],
    };
    if k == 0 {
        return q;
    }
    use rayon::prelude::*;
    // 16 rows per task: a multiple of the tile height, so a task's rows are one contiguous
    // stretch in either order.
    const ROWS: usize = 16;
    q.data
        .par_chunks_mut(ROWS * kp)
        .zip(
            q.scale
                .par_chunks_mut(ROWS)
                .zip(q.zero.par_chunks_mut(ROWS)),
        )
        .enumerate()
        .for_each(|(c, (dst, (scale, zero)))| {
            let rows = ROWS.min(m.saturating_sub(c * ROWS));
            if rows == 0 {
                return;
            }
            let src = &x[c * ROWS * k..][..rows * k];
            let mut params = [(1.0f32, 0i32); ROWS];
            quantize_chunk(src, k, kp, amax, tiles, dst, &mut params[..rows]);
            for (r, &(s, z)) in params[..rows].iter().enumerate() {
                scale[r] = s;
                zero[r] = z;
            }
        });
    q
}

super::dispatch! {
    fn quantize_chunk(src: &[f32], k: usize, kp: usize, amax: i32, tiles: bool, dst: &mut [u8], params: &mut [(f32, i32)]) => quantize_chunk_impl
}

/// Up to 16 rows: row `r` of `src` into `dst` (row-major, `kp` apart, or 16-row tile order
/// with 64-byte pieces), its scale and zero point into `params[r]`.
#[inline(always)]
fn quantize_chunk_impl(
    src: &[f32],
    k: usize,
    kp: usize,
    amax: i32,
    tiles: bool,
    dst: &mut [u8],
    params: &mut [(f32, i32)],
) {
    let mut row_buf = vec![0u8; if tiles { kp } else { 0 }];
    for (r, row) in src.chunks_exact(k).enumerate() {
        let mut lo = [0.0f32; 8];
        let mut hi = [0.0f32; 8];
        let chunks = row.chunks_exact(8);
        for &v in chunks.remainder() {
            lo[0] = if v < lo[0] { v } else { lo[0] };
            hi[0] = if v > hi[0] { v } else { hi[0] };
        }
        for c in chunks {
            for i in 0..8 {
                lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
                hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
            }
        }
        // The range always holds 0 (the lanes start there), so the zero point is exact.
        let min = lo.iter().fold(0.0f32, |a, &b| a.min(b));
        let max = hi.iter().fold(0.0f32, |a, &b| a.max(b));
        let range = max - min;
        let (scale, zero) = if range > 0.0 && range.is_finite() {
            let s = range / amax as f32;
            (s, (round(-min / s) as i32).clamp(0, amax))
        } else {
            (1.0, 0)
        };
        params[r] = (scale, zero);
        let inv = 1.0 / scale;
        let (zf, top) = (zero as f32, amax as f32);
        let out: &mut [u8] = if tiles {
            &mut row_buf
        } else {
            &mut dst[r * kp..][..kp]
        };
        for (d, &v) in out.iter_mut().zip(row) {
            // `max` first: it maps NaN to 0, so the value is a finite integer in range.
            let q = round(v * inv + zf).max(0.0).min(top);
            // SAFETY: `q` is finite and within [0, 255] (see above).
            *d = unsafe { q.to_int_unchecked::<i32>() } as u8;
        }
        if tiles {
            for (s, piece) in row_buf.chunks_exact(64).enumerate() {
                dst[s * 1024 + r * 64..][..64].copy_from_slice(piece);
            }
        }
    }
}

/// `out[m, n] = epilogue(x[m, k] · wᵀ)` with `w` quantised, on `kernel`.
///
/// # Panics
/// If this CPU cannot run `kernel` or `w` was packed for another layout or range.
pub(crate) fn matmul(
    x: &[f32],
    m: usize,
    w: &Int8Matrix,
    ep: &Epilogue,
    out: &mut [f32],
    kernel: Int8Kernel,
) {
    let (n, k) = (w.n, w.k);
    assert!(
        kernel.supported(),
        "{kernel:?} int8 kernels called on a CPU without them"
    );
    assert!(
        w.kernel_layout == kernel.layout() && w.weight_max == kernel.weight_max(),
        "weights packed for another int8 kernel"
    );
    assert_eq!(x.len(), m * k, "input is not {m} x {k}");
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    if let Some(bias) = ep.bias {
        assert_eq!(bias.len(), n, "bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    let kp = w.kp();
    let q = quantize_rows(x, m, k, kp, kernel.act_max(), kernel == Int8Kernel::Amx);
    let tasks = plan(m, w.panels(), kernel.mr(), rayon::current_num_threads());
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |task: &Task| {
        // SAFETY: the kernel runs on this CPU and `w` is in its layout (asserted); tasks
        // write disjoint blocks of `out`; `q` holds `m` rows of `kp` (AMX: padded to 32).
        unsafe { run_task(&q, kp, m, w, ep, ptr, n, *task, kernel) }
    };
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
}

/// # Safety
/// See [`matmul`].
#[allow(clippy::too_many_arguments)]
unsafe fn run_task(
    q: &QuantRows,
    kp: usize,
    m: usize,
    w: &Int8Matrix,
    ep: &Epilogue,
    out: OutPtr,
    ldo: usize,
    task: Task,
    kernel: Int8Kernel,
) {
    let ctx = Ctx {
        q,
        kp,
        m,
        w,
        ep,
        out,
        ldo,
    };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Amx => x86::task_amx(&ctx, task),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => x86::task_avx512vnni(&ctx, task),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::AvxVnni => x86::task_avxvnni(&ctx, task),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => x86::task_avx2(&ctx, task),
        Int8Kernel::Portable => task_portable(&ctx, task),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{kernel:?} is x86-64 only; `supported` is false elsewhere"),
    }
}

/// What every task of one product reads.
struct Ctx<'a> {
    q: &'a QuantRows,
    kp: usize,
    m: usize,
    w: &'a Int8Matrix,
    ep: &'a Epilogue<'a>,
    out: OutPtr,
    ldo: usize,
}

/// The largest register block in int32 values (AMX: 32 x 32).
const TILE: usize = 32 * 32;

/// Dequantises a finished block of int32 sums (row `r` at `acc[r * ld..]`) and writes it
/// through the fused output pass.
///
/// # Safety
/// The block must lie inside the output and belong to the calling task alone.
#[inline(always)]
unsafe fn finish(ctx: &Ctx, acc: &[i32], ld: usize, block: Block, tile: &mut [f32]) {
    let Block { i0, j0, rows, cols } = block;
    let scale = &ctx.w.scale[j0..j0 + cols];
    let colsum = &ctx.w.colsum[j0..j0 + cols];
    for r in 0..rows {
        let (sa, za) = (ctx.q.scale[i0 + r], ctx.q.zero[i0 + r]);
        let src = &acc[r * ld..][..cols];
        let dst = &mut tile[r * ld..][..cols];
        for (((d, &a), &s), &c) in dst.iter_mut().zip(src).zip(scale).zip(colsum) {
            // Exact in int32: |a| <= 255 * 127 * k and |za * c| <= 255 * 127 * k.
            *d = (a - za * c) as f32 * (sa * s);
        }
    }
    write_block(tile, ld, block, ctx.out, ctx.ldo, ctx.ep);
}

/// The portable kernel on [`Layout::Vnni16`].
///
/// # Safety
/// See [`matmul`].
unsafe fn task_portable(ctx: &Ctx, task: Task) {
    const MR: usize = 4;
    let (w, kp) = (ctx.w, ctx.kp);
    let mut acc = [0i32; MR * 16];
    let mut tile = [0.0f32; MR * 16];
    let (r0, r1) = task.rows;
    for p in task.panels.0..task.panels.1 {
        let panel = std::slice::from_raw_parts(w.panel(p), 16 * kp);
        let j0 = p * 16;
        let cols = 16.min(w.n - j0);
        for i0 in (r0..r1).step_by(MR) {
            let rows = MR.min(r1 - i0);
            acc.fill(0);
            for r in 0..rows {
                let a = &ctx.q.data[(i0 + r) * kp..][..kp];
                let c = &mut acc[r * 16..][..16];
                for (a4, w64) in a.chunks_exact(4).zip(panel.chunks_exact(64)) {
                    for (j, c) in c.iter_mut().enumerate() {
                        let w4 = &w64[j * 4..][..4];
                        for e in 0..4 {
                            *c += a4[e] as i32 * w4[e] as i32;
                        }
                    }
                }
            }
            let block = Block { i0, j0, rows, cols };
            finish(ctx, &acc, 16, block, &mut tile);
        }
    }
}

/// Rows per register block of the AVX2 kernel.
const AVX2_MR: usize = 4;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{finish, Ctx, AVX2_MR, TILE};
    use crate::kernels::gemm::{Block, Task};

    /// The task loop over `mr x nr` blocks shared by the vector kernels; `kernel(rows, a,
    /// panel, next, acc, ldc)` sums `rows` rows (at `a`, `kp` apart) against one panel into
    /// `acc` (row `r` at `r * ldc`), asking the caches for the panel at `next` (unless
    /// null) as it goes. The sums of the whole task are dequantised and written in one
    /// output pass at the end: an int8 block is done in about a thousand cycles, so a pass
    /// per block would cost a fifth of the time.
    #[inline(always)]
    unsafe fn task_loop(
        ctx: &Ctx,
        task: Task,
        mr: usize,
        nr: usize,
        kernel: impl Fn(usize, *const u8, *const i8, *const i8, *mut i32, usize),
    ) {
        let w = ctx.w;
        let (r0, r1) = task.rows;
        let (p0, p1) = task.panels;
        let ldc = (p1 - p0) * nr;
        let mut acc = vec![0i32; (r1 - r0) * ldc];
        for p in p0..p1 {
            let panel = w.panel(p);
            for i0 in (r0..r1).step_by(mr) {
                let rows = mr.min(r1 - i0);
                // At batch 1 the weights come from memory and each panel serves a few
                // blocks: the task's first block fetches the next panel ahead of its turn.
                let next = if i0 == r0 && p + 1 < w.panels() {
                    w.panel(p + 1)
                } else {
                    std::ptr::null()
                };
                let a = ctx.q.data.as_ptr().add(i0 * ctx.kp);
                let c = acc.as_mut_ptr().add((i0 - r0) * ldc + (p - p0) * nr);
                kernel(rows, a, panel, next, c, ldc);
            }
        }
        let j0 = p0 * nr;
        let block = Block {
            i0: r0,
            j0,
            rows: r1 - r0,
            cols: ldc.min(w.n - j0),
        };
        let mut tile = vec![0.0f32; acc.len()];
        finish(ctx, &acc, ldc, block, &mut tile);
    }

    /// `R` rows x 16 columns on AVX2, 8 `k` per step: two `vpmaddubsw` (7-bit operands, so
    /// their int16 sum of four products cannot saturate), one `vpaddw`, one `vpmaddwd`
    /// against ones to widen, one `vpaddd`.
    #[inline(always)]
    unsafe fn block_avx2<const R: usize, const PREFETCH: bool>(
        kp: usize,
        a: *const u8,
        b: *const i8,
        next: *const i8,
        c: *mut i32,
        ldc: usize,
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for s in 0..kp / 8 {
            let bs = b.add(s * 128);
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(next.add(s * 128).cast());
                _mm_prefetch::<_MM_HINT_T0>(next.add(s * 128 + 64).cast());
            }
            let w0 = _mm256_loadu_si256(bs.cast());
            let w1 = _mm256_loadu_si256(bs.add(32).cast());
            let w2 = _mm256_loadu_si256(bs.add(64).cast());
            let w3 = _mm256_loadu_si256(bs.add(96).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = a.add(r * kp + s * 8);
                let a0 = _mm256_set1_epi32(ar.cast::<i32>().read_unaligned());
                let a1 = _mm256_set1_epi32(ar.add(4).cast::<i32>().read_unaligned());
                let lo =
                    _mm256_add_epi16(_mm256_maddubs_epi16(a0, w0), _mm256_maddubs_epi16(a1, w2));
                let hi =
                    _mm256_add_epi16(_mm256_maddubs_epi16(a0, w1), _mm256_maddubs_epi16(a1, w3));
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(lo, ones));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(hi, ones));
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_si256(c.add(r * ldc).cast(), acc[0]);
            _mm256_storeu_si256(c.add(r * ldc + 8).cast(), acc[1]);
        }
    }

    /// # Safety
    /// The CPU must support AVX2; see `matmul`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn task_avx2(ctx: &Ctx, task: Task) {
        let kp = ctx.kp;
        task_loop(ctx, task, AVX2_MR, 16, |rows, a, b, next, c, ldc| {
            macro_rules! by_rows {
                ($pf:literal) => {
                    match rows {
                        4 => block_avx2::<4, $pf>(kp, a, b, next, c, ldc),
                        3 => block_avx2::<3, $pf>(kp, a, b, next, c, ldc),
                        2 => block_avx2::<2, $pf>(kp, a, b, next, c, ldc),
                        _ => block_avx2::<1, $pf>(kp, a, b, next, c, ldc),
                    }
                };
            }
            if next.is_null() {
                by_rows!(false)
            } else {
                by_rows!(true)
            }
        })
    }

    /// `R` rows x 16 columns with AVX-VNNI: one `vpdpbusd` per 4 `k` and 8 columns.
    #[inline(always)]
    unsafe fn block_avxvnni<const R: usize>(
        kp: usize,
        a: *const u8,
        b: *const i8,
        c: *mut i32,
        ldc: usize,
    ) {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for g in 0..kp / 4 {
            let w0 = _mm256_loadu_si256(b.add(g * 64).cast());
            let w1 = _mm256_loadu_si256(b.add(g * 64 + 32).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(a.add(r * kp + g * 4).cast::<i32>().read_unaligned());
                acc[0] = _mm256_dpbusd_avx_epi32(acc[0], av, w0);
                acc[1] = _mm256_dpbusd_avx_epi32(acc[1], av, w1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_si256(c.add(r * ldc).cast(), acc[0]);
            _mm256_storeu_si256(c.add(r * ldc + 8).cast(), acc[1]);
        }
    }

    /// # Safety
    /// The CPU must support AVX-VNNI; see `matmul`.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub unsafe fn task_avxvnni(ctx: &Ctx, task: Task) {
        let kp = ctx.kp;
        task_loop(ctx, task, 6, 16, |rows, a, b, _, c, ldc| match rows {
            6 => block_avxvnni::<6>(kp, a, b, c, ldc),
            5 => block_avxvnni::<5>(kp, a, b, c, ldc),
            4 => block_avxvnni::<4>(kp, a, b, c, ldc),
            3 => block_avxvnni::<3>(kp, a, b, c, ldc),
            2 => block_avxvnni::<2>(kp, a, b, c, ldc),
            _ => block_avxvnni::<1>(kp, a, b, c, ldc),
        })
    }

    /// `R` rows x 32 columns with AVX512-VNNI, reading the AMX tile layout: group `g` of
    /// slice `s` is row `g` of the slice's two tiles, 64 bytes each, 1 KiB apart.
    #[inline(always)]
    unsafe fn block_avx512vnni<const R: usize, const PREFETCH: bool>(
        kp: usize,
        a: *const u8,
        b: *const i8,
        next: *const i8,
        c: *mut i32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        for s in 0..kp / 64 {
            let bs = b.add(s * 2048);
            for g in 0..16 {
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(next.add(s * 2048 + g * 64).cast());
                    _mm_prefetch::<_MM_HINT_T0>(next.add(s * 2048 + 1024 + g * 64).cast());
                }
                let w0 = _mm512_loadu_si512(bs.add(g * 64).cast());
                let w1 = _mm512_loadu_si512(bs.add(1024 + g * 64).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(
                        a.add(r * kp + s * 64 + g * 4)
                            .cast::<i32>()
                            .read_unaligned(),
                    );
                    acc[0] = _mm512_dpbusd_epi32(acc[0], av, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], av, w1);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_si512(c.add(r * ldc).cast(), acc[0]);
            _mm512_storeu_si512(c.add(r * ldc + 16).cast(), acc[1]);
        }
    }

    /// # Safety
    /// The CPU must support AVX512-VNNI; see `matmul`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn task_avx512vnni(ctx: &Ctx, task: Task) {
        let kp = ctx.kp;
        task_loop(ctx, task, 12, 32, |rows, a, b, next, c, ldc| {
            macro_rules! by_rows {
                ($pf:literal) => {
                    match rows {
                        12 => block_avx512vnni::<12, $pf>(kp, a, b, next, c, ldc),
                        11 => block_avx512vnni::<11, $pf>(kp, a, b, next, c, ldc),
                        10 => block_avx512vnni::<10, $pf>(kp, a, b, next, c, ldc),
                        9 => block_avx512vnni::<9, $pf>(kp, a, b, next, c, ldc),
                        8 => block_avx512vnni::<8, $pf>(kp, a, b, next, c, ldc),
                        7 => block_avx512vnni::<7, $pf>(kp, a, b, next, c, ldc),
                        6 => block_avx512vnni::<6, $pf>(kp, a, b, next, c, ldc),
                        5 => block_avx512vnni::<5, $pf>(kp, a, b, next, c, ldc),
                        4 => block_avx512vnni::<4, $pf>(kp, a, b, next, c, ldc),
                        3 => block_avx512vnni::<3, $pf>(kp, a, b, next, c, ldc),
                        2 => block_avx512vnni::<2, $pf>(kp, a, b, next, c, ldc),
                        _ => block_avx512vnni::<1, $pf>(kp, a, b, next, c, ldc),
                    }
                };
            }
            if next.is_null() {
                by_rows!(false)
            } else {
                by_rows!(true)
            }
        })
    }

    /// AMX: 32 x 32 blocks in four int32 tiles; per 64-wide slice of `k`, two activation
    /// tiles (16 rows x 64 bytes, in tile order) and the slice's two weight tiles.
    ///
    /// # Safety
    /// AMX-INT8 must be available and permitted; see `matmul`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn task_amx(ctx: &Ctx, task: Task) {
        use std::arch::asm;
        let cfg = crate::kernels::amx::TileConfig::new();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        let w = ctx.w;
        let kp = ctx.kp;
        let slices = kp / 64;
        let mut acc = [0i32; TILE];
        let mut tile = [0.0f32; TILE];
        let (r0, r1) = task.rows;
        for p in task.panels.0..task.panels.1 {
            let panel = w.panel(p);
            let j0 = p * 32;
            let cols = 32.min(w.n - j0);
            for i0 in (r0..r1).step_by(32) {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                let a0 = ctx.q.data.as_ptr().add(i0 * kp);
                let a1 = a0.add(16 * kp);
                let next = (i0 == r0 && p + 1 < w.panels()).then(|| w.panel(p + 1));
                for s in 0..slices {
                    let b0 = panel.add(s * 2048);
                    if let Some(next) = next {
                        for line in 0..32 {
                            _mm_prefetch::<_MM_HINT_T0>(next.add(s * 2048 + line * 64).cast());
                        }
                    }
                    asm!(
                        "tileloadd tmm4, [{a0} + {st}*1]",
                        "tileloadd tmm5, [{a1} + {st}*1]",
                        "tileloadd tmm6, [{b0} + {st}*1]",
                        "tileloadd tmm7, [{b1} + {st}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        "tdpbusd tmm2, tmm5, tmm6",
                        "tdpbusd tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(s * 1024),
                        a1 = in(reg) a1.add(s * 1024),
                        b0 = in(reg) b0,
                        b1 = in(reg) b0.add(1024),
                        st = in(reg) 64usize,
                        options(nostack, readonly)
                    );
                }
                let t = acc.as_mut_ptr();
                asm!(
                    "tilestored [{t0} + {s}*1], tmm0",
                    "tilestored [{t1} + {s}*1], tmm1",
                    "tilestored [{t2} + {s}*1], tmm2",
                    "tilestored [{t3} + {s}*1], tmm3",
                    t0 = in(reg) t,
                    t1 = in(reg) t.add(16),
                    t2 = in(reg) t.add(16 * 32),
                    t3 = in(reg) t.add(16 * 32 + 16),
                    s = in(reg) 128usize,
                    options(nostack)
                );
                let rows = 32.min(ctx.m - i0).min(r1 - i0);
                let block = Block { i0, j0, rows, cols };
                finish(ctx, &acc, 32, block, &mut tile);
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math::{activate, Act};

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 33, 7),
        (2, 17, 40),
        (5, 31, 3),
        (13, 33, 65),
        (31, 31, 31),
        (33, 64, 64),
        (50, 96, 130),
        (7, 5, 300),
        (70, 48, 129),
        (25, 40, 768),
    ];

    /// The exact integer product of the quantised operands, dequantised in f64: what every
    /// kernel must reproduce up to the f32 output pass.
    fn integer_reference(
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
        kernel: Int8Kernel,
    ) -> Vec<f64> {
        let q = quantize_rows(x, m, k, k, kernel.act_max(), false);
        let mut out = integer_dots(x, w, (m, n, k), kernel)
            .into_iter()
            .map(|d| d as f64)
            .collect::<Vec<_>>();
        for j in 0..n {
            let (sw, _) = quantize_weight_row(&w[j * k..][..k], kernel.weight_max());
            for i in 0..m {
                out[i * n + j] *= q.scale[i] as f64 * sw as f64;
            }
        }
        out
    }

    /// One weight row quantised on its own (not through the packing): scale and values.
    fn quantize_weight_row(row: &[f32], wmax: i32) -> (f32, Vec<i64>) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let sw = if max > 0.0 { max / wmax as f32 } else { 1.0 };
        let qw = row
            .iter()
            .map(|&v| (round(v * (1.0 / sw)) as i64).clamp(-wmax as i64, wmax as i64))
            .collect();
        (sw, qw)
    }

    fn check(kernel: Int8Kernel) {
        if !kernel.supported() {
            eprintln!(
                "skipped: the {} int8 kernel does not run on this CPU",
                kernel.name()
            );
            return;
        }
        for &(m, n, k) in SHAPES {
            let x = values(m * k, (m * 131 + k) as u64);
            let w = values(n * k, (n * 17 + k) as u64);
            let bias = values(n, 11);
            let residual = values(m * n, 23);
            let packed = Int8Matrix::pack(&w, n, k, kernel);
            let want = integer_reference(&x, &w, m, n, k, kernel);

            let mut out = vec![f32::NAN; m * n];
            let plain = Epilogue {
                bias: None,
                act: Act::Identity,
                accumulate: false,
            };
            matmul(&x, m, &packed, &plain, &mut out, kernel);
            for (i, (&g, &r)) in out.iter().zip(&want).enumerate() {
                // Only the f32 rounding of the dequantisation differs.
                let tol = 1e-5 * (1.0 + r.abs()) * 4.0;
                assert!(
                    (g as f64 - r).abs() <= tol,
                    "{kernel:?} {m}x{n}x{k} [{i}]: {g} vs {r}"
                );
            }

            let mut out = residual.clone();
            let ep = Epilogue {
                bias: Some(&bias),
                act: Act::QuickGelu,
                accumulate: true,
            };
            matmul(&x, m, &packed, &ep, &mut out, kernel);
            for i in 0..m * n {
                let v = (want[i] + bias[i % n] as f64) as f32;
                let expect = residual[i] as f64 + activate(Act::QuickGelu, v) as f64;
                assert!(
                    (out[i] as f64 - expect).abs() <= 1e-4,
                    "{kernel:?} fused {m}x{n}x{k} [{i}]: {} vs {expect}",
                    out[i]
                );
            }
        }
    }

    #[test]
    fn portable_int8_kernel_matches_the_integer_reference_on_odd_shapes() {
        check(Int8Kernel::Portable);
    }

    #[test]
    fn avx2_int8_kernel_matches_the_integer_reference_on_odd_shapes() {
        check(Int8Kernel::Avx2);
    }

    #[test]
    fn avx_vnni_int8_kernel_matches_the_integer_reference_on_odd_shapes() {
        check(Int8Kernel::AvxVnni);
    }

    #[test]
    fn avx512_vnni_int8_kernel_matches_the_integer_reference_on_odd_shapes() {
        check(Int8Kernel::Avx512Vnni);
    }

    #[test]
    fn amx_int8_kernel_matches_the_integer_reference_on_odd_shapes() {
        check(Int8Kernel::Amx);
    }

    /// Intel's `DPBD` step of `vpdpbusd` and `tdpbusd` (SDM vol. 2, and the intrinsics
    /// guide's `_tile_dpbusd`): `c` plus four products of an unsigned byte of `a` and the
    /// signed byte of `b` at the same place, in int32 without saturation.
    fn dpbd(c: i32, a: &[u8], b: &[i8]) -> i32 {
        c + (0..4).map(|e| a[e] as i32 * b[e] as i32).sum::<i32>()
    }

    /// `Σ (qa - za) qw` per output, from the row-major activations and independently
    /// quantised weights: what every kernel's sums minus `za · colsum` must equal.
    fn integer_dots(
        x: &[f32],
        w: &[f32],
        (m, n, k): (usize, usize, usize),
        kernel: Int8Kernel,
    ) -> Vec<i64> {
        let q = quantize_rows(x, m, k, k, kernel.act_max(), false);
        let mut out = vec![0i64; m * n];
        for j in 0..n {
            let (_, qw) = quantize_weight_row(&w[j * k..][..k], kernel.weight_max());
            for i in 0..m {
                out[i * n + j] = (0..k)
                    .map(|kk| (q.data[i * k + kk] as i64 - q.zero[i] as i64) * qw[kk])
                    .sum();
            }
        }
        out
    }

    /// The AMX, AVX512-VNNI and AVX-VNNI kernels only run on CPUs some test machines lack.
    /// This replays, in software with Intel's documented semantics, the bytes each of them
    /// reads (the addresses and strides of `task_amx`'s `tileloadd`/`tilestored` in the tile
    /// shape `TileConfig` sets, and the loads of `block_avx512vnni` and `block_avxvnni`) over
    /// what `Int8Matrix::pack` and `quantize_rows` write, on every CPU: a change to the
    /// packing, `Layout::offset` or the activations' tile order that the kernels do not
    /// follow fails here, not on a Xeon.
    #[test]
    fn the_vnni_and_amx_reads_of_the_packed_operands_give_the_integer_product() {
        // The tile shape `ldtilecfg` loads: palette 1, tiles 0-7 the same shape.
        let cfg = crate::kernels::amx::TileConfig::new().0;
        assert_eq!(cfg[0], 1, "palette");
        assert!(
            cfg[1..16].iter().all(|&b| b == 0),
            "start_row and reserved bytes"
        );
        let colsb = |t: usize| u16::from_le_bytes([cfg[16 + 2 * t], cfg[17 + 2 * t]]) as usize;
        let rows = |t: usize| cfg[48 + t] as usize;
        // tdpbusd tmm0-3 (dst), tmm4-5 (activations, u8), tmm6-7 (weights, s8): the SDM's
        // #UD checks, and the 16 x 64-byte shape the addresses below assume.
        for (dst, a, b) in [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)] {
            assert_eq!(colsb(a) / 4, rows(b));
            assert_eq!(colsb(b), colsb(dst));
            assert_eq!(rows(a), rows(dst));
            for t in [dst, a, b] {
                assert_eq!((rows(t), colsb(t)), (16, 64), "tmm{t}");
            }
        }
        let (tr, tc) = (rows(0), colsb(4));
        for &(m, n, k) in SHAPES {
            let x = values(m * k, (m * 131 + k) as u64);
            let w = values(n * k, (n * 17 + k) as u64);

            // AMX and AVX512-VNNI: one pack, activations in tile order for AMX only.
            let kernel = Int8Kernel::Amx;
            let want = integer_dots(&x, &w, (m, n, k), kernel);
            let packed = Int8Matrix::pack(&w, n, k, kernel);
            let kp = packed.kp();
            let tiles = quantize_rows(&x, m, k, kp, kernel.act_max(), true);
            let plain = quantize_rows(&x, m, k, kp, kernel.act_max(), false);
            let data = packed.data.as_slice();
            for p in 0..packed.panels() {
                let panel = &data[p * 32 * kp..][..32 * kp];
                let cols = 32.min(n - p * 32);
                for i0 in (0..m).step_by(32) {
                    // tilezero tmm0-3, then per slice: a0/a1 = i0 · kp (+ 16 · kp) + s · 1024,
                    // b0 = s · 2048, b1 = b0 + 1024, all with stride 64; tilestored of tmm0-3
                    // at acc + 0, 16, 16 · 32, 16 · 32 + 16 with stride 128 bytes.
                    let mut acc = [0i32; TILE];
                    for s in 0..kp / 64 {
                        for (ta, tb, dst) in [(0, 0, 0), (0, 1, 16), (1, 0, 512), (1, 1, 528)] {
                            let a = &tiles.data[i0 * kp + ta * 16 * kp + s * 1024..];
                            let b = &panel[s * 2048 + tb * 1024..];
                            for row in 0..tr {
                                for kg in 0..tc / 4 {
                                    for col in 0..tc / 4 {
                                        let c = &mut acc[dst + row * 32 + col];
                                        *c = dpbd(
                                            *c,
                                            &a[row * 64 + kg * 4..],
                                            &b[kg * 64 + col * 4..],
                                        );
                                    }
                                }
                            }
                        }
                    }
                    // block_avx512vnni over the same panel, rows row-major `kp` apart.
                    let mut vnni = [0i32; TILE];
                    for r in 0..32.min(m - i0) {
                        let a = &plain.data[(i0 + r) * kp..];
                        for s in 0..kp / 64 {
                            for g in 0..16 {
                                let av = &a[s * 64 + g * 4..];
                                for (half, wv) in [0, 1024].into_iter().enumerate() {
                                    let wv = &panel[s * 2048 + wv + g * 64..];
                                    for lane in 0..16 {
                                        let c = &mut vnni[r * 32 + half * 16 + lane];
                                        *c = dpbd(*c, av, &wv[lane * 4..]);
                                    }
                                }
                            }
                        }
                    }
                    for r in 0..32.min(m - i0) {
                        let i = i0 + r;
                        for j in 0..cols {
                            let fix = |v: i32| {
                                v as i64 - tiles.zero[i] as i64 * packed.colsum[p * 32 + j] as i64
                            };
                            let want = want[i * n + p * 32 + j];
                            assert_eq!(
                                fix(acc[r * 32 + j]),
                                want,
                                "amx {m}x{n}x{k} [{i}, {}]",
                                p * 32 + j
                            );
                            assert_eq!(
                                fix(vnni[r * 32 + j]),
                                want,
                                "avx512-vnni {m}x{n}x{k} [{i}, {}]",
                                p * 32 + j
                            );
                        }
                    }
                }
            }

            // block_avxvnni: per group of 4 `k`, columns 0-7 at b + 64g, 8-15 at b + 64g + 32.
            let kernel = Int8Kernel::AvxVnni;
            let want = integer_dots(&x, &w, (m, n, k), kernel);
            let packed = Int8Matrix::pack(&w, n, k, kernel);
            let kp = packed.kp();
            let q = quantize_rows(&x, m, k, kp, kernel.act_max(), false);
            for p in 0..packed.panels() {
                let panel = &packed.data.as_slice()[p * 16 * kp..][..16 * kp];
                for i in 0..m {
                    let a = &q.data[i * kp..][..kp];
                    for j in 0..16.min(n - p * 16) {
                        let (half, lane) = (j / 8, j % 8);
                        let sum = (0..kp / 4).fold(0, |c, g| {
                            dpbd(c, &a[g * 4..], &panel[g * 64 + half * 32 + lane * 4..])
                        });
                        let got = sum as i64 - q.zero[i] as i64 * packed.colsum[p * 16 + j] as i64;
                        assert_eq!(
                            got,
                            want[i * n + p * 16 + j],
                            "avx-vnni {m}x{n}x{k} [{i}, {}]",
                            p * 16 + j
                        );
                    }
                }
            }
        }
    }
}
