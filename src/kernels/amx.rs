//! bf16 matrix products on Intel AMX tiles, accumulating in f32.
//!
//! AMX keeps eight tile registers of up to 16 rows x 64 bytes; `tdpbf16ps` multiplies a
//! 16 x 32 bf16 tile of the activations by a 32 x 16 bf16 tile of the weights (stored as
//! 16 rows of 16 column pairs, the "VNNI" layout) into a 16 x 16 f32 tile. The kernel
//! keeps a 32 x 32 output block in four tiles and streams the two operand tiles of each
//! 32-wide slice of `k` through the other four.
//!
//! The weights are packed once at load in that tile layout: panels of 32 output columns,
//! then slices of 32 along `k`, then the two 16-column tiles, each 16 rows of 64 bytes.
//! The activations are rounded to bf16 once per call, rows padded to a multiple of 32 and
//! `k` to a multiple of 32 with zeros, and laid out tile by tile (1 KiB each, contiguous). The finished block goes through the same fused
//! output pass as the f32 kernels.
//!
//! The tile instructions are written in `asm!`: Rust's AMX intrinsics are not stable. The
//! tile registers are not allocated by the compiler, so no other code touches them; each
//! task loads the tile configuration first and releases the tiles at the end.

use super::gemm::{plan, write_block, Block, Epilogue, OutPtr, Task};
use super::store::Store;

/// Output rows and columns per register block (2 x 2 tiles of 16 x 16).
const BLOCK: usize = 32;
/// `k` values per tile slice: 64 bytes of bf16.
const SLICE: usize = 32;
/// bf16 values in one packed 32-wide slice of a panel: two tiles of 16 x 32.
const SLICE_VALUES: usize = 2 * 16 * SLICE;

/// Whether this CPU and OS can run the AMX bf16 kernels.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Asked once: every product asserts its kernel, and CPUID traps to the hypervisor
        // in a VM.
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            // CPUID leaf 7: EDX bit 22 AMX-BF16.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that reports it (all modern ones).
            let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
            edx & (1 << 22) != 0 && tiles_permitted()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AMX tiles (and AVX-512, which the kernels around them use) and
/// Linux lets this process use them; asks for the tile state the first time (it is off
/// for a process until requested).
pub(crate) fn tiles_permitted() -> bool {
    static PERMITTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 24 AMX-TILE.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that reports it (all modern ones).
            let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
            if edx & (1 << 24) == 0 {
                return false;
            }
            if !std::arch::is_x86_feature_detected!("avx512f") {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with these arguments only changes this process's permitted
            // register state; it fails cleanly on kernels without AMX support.
            let status = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            status == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Rounds to the nearest bf16, ties to even (finite inputs; NaN stays NaN-or-infinite).
#[inline(always)]
pub(crate) fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// A weight matrix packed in AMX tile layout, in bf16.
#[derive(Debug)]
pub(crate) struct AmxMatrix {
    n: usize,
    k: usize,
    slices: usize,
    data: Store<u16>,
}

impl AmxMatrix {
    /// Packs `w`, `(n, k)` row-major f32, rounding each weight to bf16.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "weight holds {} values, not {n} x {k}",
            w.len()
        );
        let slices = k.div_ceil(SLICE);
        let panels = n.div_ceil(BLOCK);
        let mut data = vec![0u16; panels * slices * SLICE_VALUES];
        if slices > 0 {
            use rayon::prelude::*;
            data.par_chunks_exact_mut(slices * SLICE_VALUES)
                .enumerate()
                .for_each(|(p, panel)| {
                    for within in 0..BLOCK.min(n - p * BLOCK) {
                        let (tile, j) = (within / 16, within % 16);
                        let row = &w[(p * BLOCK + within) * k..][..k];
                        for (kk, &v) in row.iter().enumerate() {
                            let (c, in_slice) = (kk / SLICE, kk % SLICE);
                            let (pair, e) = (in_slice / 2, in_slice % 2);
                            panel[c * SLICE_VALUES + tile * 512 + pair * 32 + j * 2 + e] =
                                to_bf16(v);
                        }
                    }
                });
        }
        Self {
            n,
            k,
            slices,
            data: Store::Owned(data),
        }
    }

    /// Values packed earlier (read from a pack file); None when their number does not
    /// match an `(n, k)` matrix in this layout.
    pub fn from_store(n: usize, k: usize, data: Store<u16>) -> Option<Self> {
        let slices = k.div_ceil(SLICE);
        // Checked: see `PackedMatrix::from_store`.
        let len = n
            .div_ceil(BLOCK)
            .checked_mul(slices)?
            .checked_mul(SLICE_VALUES)?;
        (len == data.as_slice().len()).then_some(Self { n, k, slices, data })
    }

    /// The packed values.
    pub fn store(&self) -> &Store<u16> {
        &self.data
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// The instructions that multiply bf16 matrices; both read [`AmxMatrix`]'s layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// AMX tiles (`tdpbf16ps`): Xeon Sapphire Rapids and later.
    Amx,
    /// AVX512-BF16 dot products (`vdpbf16ps`) in vector registers: Xeon Cooper Lake,
    /// AMD Zen 4 and later, where AMX is absent.
    Avx512Bf16,
}

impl Bf16Kernel {
    /// The fastest bf16 kernel this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        [Bf16Kernel::Amx, Bf16Kernel::Avx512Bf16]
            .into_iter()
            .find(|k| k.supported())
    }

    /// Whether this CPU (and OS) runs `self`.
    pub fn supported(self) -> bool {
        match self {
            Bf16Kernel::Amx => available(),
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Bf16Kernel::Avx512Bf16 => false,
        }
    }

    /// How reports name the kernel.
    pub fn label(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "packed amx-bf16",
            Bf16Kernel::Avx512Bf16 => "packed avx512-bf16",
        }
    }

    /// The name `VLM_BF16_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
        }
    }
}

impl std::str::FromStr for Bf16Kernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "amx" => Ok(Bf16Kernel::Amx),
            "avx512bf16" => Ok(Bf16Kernel::Avx512Bf16),
            other => Err(format!(
                "unknown bf16 kernel {other:?}; use amx or avx512bf16"
            )),
        }
    }
}

/// `out[m, n] = epilogue(x[m, k] · wᵀ)` in bf16 with f32 accumulation, on `kernel`.
///
/// # Panics
/// If this CPU cannot run `kernel` (the model checks before it loads).
pub(crate) fn matmul(
    x: &[f32],
    m: usize,
    w: &AmxMatrix,
    ep: &Epilogue,
    out: &mut [f32],
    kernel: Bf16Kernel,
) {
    let (n, k) = (w.n, w.k);
    assert!(
        kernel.supported(),
        "{kernel:?} bf16 kernels called on a CPU without them"
    );
    assert_eq!(x.len(), m * k, "input is not {m} x {k}");
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    if let Some(bias) = ep.bias {
        assert_eq!(bias.len(), n, "bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    // Activations in bf16, rows padded to a block and k to a slice, zero-filled: for AMX
    // in tile order (each 16-row x 32-value tile 1 KiB in one piece, so a tile load reads
    // 16 consecutive lines rather than 16 rows a whole row apart), for AVX512-BF16 row-major.
    let kp = w.slices * SLICE;
    let mp = m.div_ceil(BLOCK) * BLOCK;
    let mut a = vec![0u16; mp * kp];
    if k > 0 {
        use rayon::prelude::*;
        let tiles = kernel == Bf16Kernel::Amx;
        a.par_chunks_mut(kp * BLOCK)
            .zip(x.par_chunks(k * BLOCK))
            .for_each(|(dst, src)| convert_rows(src, k, kp, tiles, dst));
    }
    let tasks = plan(m, n.div_ceil(BLOCK), BLOCK, rayon::current_num_threads());
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |task: &Task| {
        // SAFETY: the kernel runs on this CPU (asserted); tasks write disjoint blocks of `out`.
        unsafe {
            match kernel {
                Bf16Kernel::Amx => task_amx(&a, kp, w, ep, ptr, n, m, *task),
                Bf16Kernel::Avx512Bf16 => task_dpbf16(&a, kp, w, ep, ptr, n, m, *task),
            }
        }
    };
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
}

super::dispatch! {
    fn convert_rows(src: &[f32], k: usize, kp: usize, tiles: bool, dst: &mut [u16]) => convert_rows_impl
}

/// Rounds up to [`BLOCK`] rows of `k` values to bf16 rows of `kp`, row-major or in tile
/// order: row `i`, value `kk` at `((i / 16) * slices + kk / 32) * 512 + (i % 16) * 32 + kk % 32`.
#[inline(always)]
fn convert_rows_impl(src: &[f32], k: usize, kp: usize, tiles: bool, dst: &mut [u16]) {
    for (i, s) in src.chunks_exact(k).enumerate() {
        if tiles {
            let group = &mut dst[(i / 16) * 16 * kp..][..16 * kp];
            for (c, s) in s.chunks(SLICE).enumerate() {
                let d = &mut group[c * 512 + (i % 16) * SLICE..][..s.len()];
                for (d, &v) in d.iter_mut().zip(s) {
                    *d = to_bf16(v);
                }
            }
        } else {
            for (d, &v) in dst[i * kp..][..k].iter_mut().zip(s) {
                *d = to_bf16(v);
            }
        }
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
pub(crate) struct TileConfig(pub(crate) [u8; 64]);

impl TileConfig {
    pub(crate) fn new() -> Self {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 64; // bytes per row, little-endian u16
            cfg[48 + t] = 16; // rows
        }
        Self(cfg)
    }
}

/// # Safety
/// AMX must be available and permitted; `a` holds `mp x kp` bf16 with `mp` covering the
/// task's rows rounded up to a block; the task's block of `out` is its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn task_amx(
    a: &[u16],
    kp: usize,
    w: &AmxMatrix,
    ep: &Epilogue,
    out: OutPtr,
    ldo: usize,
    m: usize,
    task: Task,
) {
    use std::arch::asm;
    let cfg = TileConfig::new();
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    let mut tile = [0.0f32; BLOCK * BLOCK];
    let (r0, r1) = task.rows;
    for p in task.panels.0..task.panels.1 {
        let panel = w.data.as_slice().as_ptr().add(p * w.slices * SLICE_VALUES);
        let j0 = p * BLOCK;
        let cols = BLOCK.min(w.n - j0);
        for i0 in (r0..r1).step_by(BLOCK) {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            // Rows i0.. in tile order: the tiles of 16-row group i0 / 16, then the next.
            let a0 = a.as_ptr().add(i0 * kp);
            let a1 = a0.add(16 * kp);
            // At batch 1 the weights come from memory and each panel serves one or two
            // blocks: the task's first block fetches the next panel ahead of its turn.
            let next = (i0 == r0 && p + 1 < w.n.div_ceil(BLOCK))
                .then(|| panel.add(w.slices * SLICE_VALUES));
            for c in 0..w.slices {
                let b0 = panel.add(c * SLICE_VALUES);
                if let Some(next) = next {
                    let next = next.add(c * SLICE_VALUES);
                    // The slice's 2 KiB: 32 lines of 64 bytes (32 bf16 values each).
                    for line in 0..SLICE_VALUES / 32 {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            next.add(line * 32).cast(),
                        );
                    }
                }
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0.add(c * 512),
                    a1 = in(reg) a1.add(c * 512),
                    b0 = in(reg) b0,
                    b1 = in(reg) b0.add(512),
                    sa = in(reg) 64usize,
                    sb = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            let t = tile.as_mut_ptr();
            asm!(
                "tilestored [{t0} + {s}*1], tmm0",
                "tilestored [{t1} + {s}*1], tmm1",
                "tilestored [{t2} + {s}*1], tmm2",
                "tilestored [{t3} + {s}*1], tmm3",
                t0 = in(reg) t,
                t1 = in(reg) t.add(16),
                t2 = in(reg) t.add(16 * BLOCK),
                t3 = in(reg) t.add(16 * BLOCK + 16),
                s = in(reg) BLOCK * 4,
                options(nostack)
            );
            let rows = BLOCK.min(m - i0).min(r1 - i0);
            // SAFETY: rows i0..i0 + rows < m and columns j0..j0 + cols < n belong to this task.
            let block = Block { i0, j0, rows, cols };
            write_block(&tile, BLOCK, block, out, ldo, ep);
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// Rows per register block of the AVX512-BF16 kernel: 24 accumulators of 16 lanes, two
/// registers for the weights and one for the broadcast pair.
const DP_MR: usize = 12;

/// `R` rows of the AVX512-BF16 kernel: per pair of `k` values, one `vdpbf16ps` per 16
/// output columns adds `x[2q] w[2q] + x[2q+1] w[2q+1]` into each f32 lane. The weights
/// are read straight from the tile layout: for pair `q`, the 16 pairs of tile 0 of slice
/// `q / 16` at row `q % 16` are one 64-byte register, tile 1's the next 512 values on.
/// `a` holds the block's activation pairs interleaved by row (`a[q * DP_MR + r]`), so every
/// broadcast is one pointer plus a constant offset.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_dpbf16<const R: usize>(slices: usize, a: *const u32, b: *const u16, c: *mut f32) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for s in 0..slices {
        let bs = b.add(s * SLICE_VALUES);
        let a = a.add(s * 16 * DP_MR);
        for p in 0..16 {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bs.add(p * 32).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bs.add(512 + p * 32).cast()));
            let a = a.add(p * DP_MR);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(c.add(r * BLOCK), acc[0]);
        _mm512_storeu_ps(c.add(r * BLOCK + 16), acc[1]);
    }
}

/// # Safety
/// The CPU must support AVX512-BF16; `a` holds `mp x kp` bf16 with `mp` covering the
/// task's rows rounded up to a block; the task's block of `out` is its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn task_dpbf16(
    a: &[u16],
    kp: usize,
    w: &AmxMatrix,
    ep: &Epilogue,
    out: OutPtr,
    ldo: usize,
    m: usize,
    task: Task,
) {
    let mut tile = [0.0f32; DP_MR * BLOCK];
    let (r0, r1) = (task.rows.0, task.rows.1.min(m));
    // The task's rows as bf16 pairs, blocks of DP_MR rows interleaved (zero past r1), made
    // once and read for every panel.
    let pairs = kp / 2;
    let blocks = (r1 - r0).div_ceil(DP_MR);
    let mut packed = vec![0u32; blocks * pairs * DP_MR];
    for (blk, dst) in packed.chunks_exact_mut(pairs * DP_MR).enumerate() {
        for r in 0..DP_MR.min(r1 - r0 - blk * DP_MR) {
            let row = &a[(r0 + blk * DP_MR + r) * kp..][..kp];
            for (q, pair) in row.chunks_exact(2).enumerate() {
                dst[q * DP_MR + r] = u32::from(pair[0]) | (u32::from(pair[1]) << 16);
            }
        }
    }
    for p in task.panels.0..task.panels.1 {
        let panel = w.data.as_slice().as_ptr().add(p * w.slices * SLICE_VALUES);
        let j0 = p * BLOCK;
        let cols = BLOCK.min(w.n - j0);
        for (blk, ap) in packed.chunks_exact(pairs * DP_MR).enumerate() {
            let i0 = r0 + blk * DP_MR;
            let rows = DP_MR.min(r1 - i0);
            let (ap, c) = (ap.as_ptr(), tile.as_mut_ptr());
            match rows {
                12 => block_dpbf16::<12>(w.slices, ap, panel, c),
                11 => block_dpbf16::<11>(w.slices, ap, panel, c),
                10 => block_dpbf16::<10>(w.slices, ap, panel, c),
                9 => block_dpbf16::<9>(w.slices, ap, panel, c),
                8 => block_dpbf16::<8>(w.slices, ap, panel, c),
                7 => block_dpbf16::<7>(w.slices, ap, panel, c),
                6 => block_dpbf16::<6>(w.slices, ap, panel, c),
                5 => block_dpbf16::<5>(w.slices, ap, panel, c),
                4 => block_dpbf16::<4>(w.slices, ap, panel, c),
                3 => block_dpbf16::<3>(w.slices, ap, panel, c),
                2 => block_dpbf16::<2>(w.slices, ap, panel, c),
                _ => block_dpbf16::<1>(w.slices, ap, panel, c),
            }
            // SAFETY: rows i0..i0 + rows < m and columns j0..j0 + cols < n belong to this task.
            let block = Block { i0, j0, rows, cols };
            write_block(&tile, BLOCK, block, out, ldo, ep);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn task_dpbf16(
    _: &[u16],
    _: usize,
    _: &AmxMatrix,
    _: &Epilogue,
    _: OutPtr,
    _: usize,
    _: usize,
    _: Task,
) {
    unreachable!("AVX512-BF16 is x86-64 only; `supported` is false elsewhere")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn task_amx(
    _: &[u16],
    _: usize,
    _: &AmxMatrix,
    _: &Epilogue,
    _: OutPtr,
    _: usize,
    _: usize,
    _: Task,
) {
    unreachable!("AMX is x86-64 only; `available` is false elsewhere")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math::{activate, Act};

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

    fn bf16_value(v: f32) -> f64 {
        f32::from_bits((to_bf16(v) as u32) << 16) as f64
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.0.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        for v in values(1000, 3) {
            assert!((bf16_value(v) - v as f64).abs() <= (v.abs() as f64) / 256.0);
        }
    }

    /// The AMX product equals the f64 product of the bf16-rounded inputs up to f32
    /// accumulation error; shapes cover partial blocks, slices and single rows.
    #[test]
    fn amx_kernel_matches_the_rounded_reference_on_odd_shapes() {
        check(Bf16Kernel::Amx);
    }

    /// The same for the AVX512-BF16 kernel, forced here even where AMX is present.
    #[test]
    fn avx512_bf16_kernel_matches_the_rounded_reference_on_odd_shapes() {
        check(Bf16Kernel::Avx512Bf16);
    }

    fn check(kernel: Bf16Kernel) {
        if !kernel.supported() {
            eprintln!("skipped: no {kernel:?} on this CPU");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 33, 7),
            (2, 17, 40),
            (31, 31, 31),
            (33, 64, 64),
            (50, 96, 130),
            (70, 5, 300),
            (13, 40, 33),
            (25, 64, 768),
        ] {
            let x = values(m * k, (m * 131 + k) as u64);
            let w = values(n * k, (n * 17 + k) as u64);
            let bias = values(n, 11);
            let packed = AmxMatrix::pack(&w, n, k);
            let residual = values(m * n, 23);
            let mut out = residual.clone();
            let ep = Epilogue {
                bias: Some(&bias),
                act: Act::QuickGelu,
                accumulate: true,
            };
            matmul(&x, m, &packed, &ep, &mut out, kernel);
            let tol = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|kk| bf16_value(x[i * k + kk]) * bf16_value(w[j * k + kk]))
                        .sum();
                    let v = (dot + bias[j] as f64) as f32;
                    let want = residual[i * n + j] as f64 + activate(Act::QuickGelu, v) as f64;
                    let got = out[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{kernel:?} {m}x{n}x{k} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_stored_matrix_whose_dimensions_wrap_is_refused() {
        // One block of rows and a number of k-slices whose product with the values per
        // slice wraps around to one slice's worth: refused, never read past.
        let slices = usize::MAX / SLICE_VALUES + 1;
        let k = slices * SLICE;
        let wrapped = slices.wrapping_mul(SLICE_VALUES);
        assert!(wrapped <= SLICE_VALUES, "{wrapped}");
        let store = Store::Owned(vec![0u16; wrapped]);
        assert!(AmxMatrix::from_store(BLOCK, k, store).is_none());
        let store = Store::Owned(vec![0u16; 2 * SLICE_VALUES]);
        assert!(AmxMatrix::from_store(BLOCK, 2 * SLICE, store).is_some());
    }
}
