//! `out = act(x · wᵀ + bias)` (optionally added into `out`) with `w` packed once.
//!
//! The weight of a linear layer, `(n, k)` row-major as PyTorch stores it, is packed at
//! load into panels of `nr` output columns: panel `p` holds, for each `kk < k`, the `nr`
//! weights `w[p*nr + j][kk]` side by side (zero past `n`). The microkernel streams one
//! panel while it keeps an `mr x nr` block of the output in registers, so a call never
//! re-packs the weight (candle's gemm re-packs it on every call). The activations are read
//! in place: each of the block's `mr` rows is its own stream, broadcast one value at a
//! time, so nothing is copied per call (packing them per task cost a third of the time at
//! batch 1, where every task re-packed the same 50 rows).
//!
//! Work is split into tasks of (a run of `mr`-row blocks, a run of panels) over rayon; the
//! bias, activation and residual add are applied while the finished block is written out.

use super::math::{activate, Act};
use super::store::Store;
use super::Isa;

/// A weight matrix packed for one instruction set's microkernel.
#[derive(Debug)]
pub(crate) struct PackedMatrix {
    n: usize,
    k: usize,
    nr: usize,
    isa: Isa,
    data: Store<f32>,
}

impl PackedMatrix {
    /// Packs `w`, `(n, k)` row-major, for the microkernel of `isa`.
    pub fn pack(w: &[f32], n: usize, k: usize, isa: Isa) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "weight holds {} values, not {n} x {k}",
            w.len()
        );
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let mut data = vec![0.0f32; panels * k * nr];
        if k > 0 {
            use rayon::prelude::*;
            data.par_chunks_exact_mut(k * nr)
                .enumerate()
                .for_each(|(p, panel)| {
                    // Row blocks of the panel, so reads and writes both stay in cache.
                    for k0 in (0..k).step_by(64) {
                        let k1 = (k0 + 64).min(k);
                        for j in 0..nr.min(n - p * nr) {
                            let row = &w[(p * nr + j) * k..][k0..k1];
                            for (kk, &v) in (k0..k1).zip(row) {
                                panel[kk * nr + j] = v;
                            }
                        }
                    }
                });
        }
        Self {
            n,
            k,
            nr,
            isa,
            data: Store::Owned(data),
        }
    }

    /// Packs on this thread (for small matrices built inside a parallel task) the `(n, k)`
    /// matrix whose row `j` is `row(j)` (`k` values) when `by_rows`, or whose column `j`
    /// is element `j` of the `k` slices `row(kk)` (`n` values each: the transpose of a
    /// row-major `(k, n)` matrix) otherwise.
    pub fn pack_serial<'a>(
        n: usize,
        k: usize,
        isa: Isa,
        by_rows: bool,
        row: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let nr = isa.nr();
        let mut data = vec![0.0f32; n.div_ceil(nr) * k * nr];
        for (p, panel) in data.chunks_exact_mut((k * nr).max(1)).enumerate() {
            let cols = nr.min(n - p * nr);
            if by_rows {
                for j in 0..cols {
                    for (kk, &v) in row(p * nr + j)[..k].iter().enumerate() {
                        panel[kk * nr + j] = v;
                    }
                }
            } else {
                for kk in 0..k {
                    panel[kk * nr..][..cols].copy_from_slice(&row(kk)[p * nr..][..cols]);
                }
            }
        }
        Self {
            n,
            k,
            nr,
            isa,
            data: Store::Owned(data),
        }
    }

    /// Values packed earlier for `isa` (read from a pack file); None when their number
    /// does not match an `(n, k)` matrix packed for `isa`.
    pub fn from_store(n: usize, k: usize, isa: Isa, data: Store<f32>) -> Option<Self> {
        let nr = isa.nr();
        // Checked: the dimensions come from a file, and a product that wraps around could
        // match a short store that the kernels then read past.
        let len = n.div_ceil(nr).checked_mul(k)?.checked_mul(nr)?;
        (isa.supported() && len == data.as_slice().len()).then_some(Self {
            n,
            k,
            nr,
            isa,
            data,
        })
    }

    /// The packed values.
    pub fn store(&self) -> &Store<f32> {
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

    fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data.as_slice()[p * self.k * self.nr..][..self.k * self.nr]
    }
}

/// What the output pass does with each finished value `v = (x · wᵀ)[i][j]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// Added to column `j` first.
    pub bias: Option<&'a [f32]>,
    /// Then applied.
    pub act: Act,
    /// Then: `out += v` (a residual add into `out`) rather than `out = v`.
    pub accumulate: bool,
}

/// A raw output pointer shared by tasks that write disjoint blocks of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every task writes a block of rows x panels no other task touches.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One task: rows `rows.0..rows.1`, panels `panels.0..panels.1`.
#[derive(Clone, Copy)]
pub(crate) struct Task {
    pub(crate) rows: (usize, usize),
    pub(crate) panels: (usize, usize),
}

/// `out[m, n] = epilogue(x[m, k] · wᵀ)`. `x` is row-major `(m, k)`, `out` row-major `(m, n)`.
pub(crate) fn matmul(x: &[f32], m: usize, w: &PackedMatrix, ep: &Epilogue, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert!(
        w.isa.supported(),
        "{:?} panels multiplied on a CPU without {:?}",
        w.isa,
        w.isa
    );
    assert_eq!(x.len(), m * k, "input is not {m} x {k}");
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    if let Some(bias) = ep.bias {
        assert_eq!(bias.len(), n, "bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    let tasks = plan(m, w.panels(), w.isa.mr(), rayon::current_num_threads());
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |task: &Task| {
        // SAFETY: tasks cover disjoint output blocks inside `out` (checked above), and
        // the packed matrix was built for `w.isa`, which this CPU supports (asserted).
        unsafe { run_task(x, k, w, ep, ptr, n, *task) }
    };
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
}

/// [`matmul`] on the calling thread alone, for small products inside a parallel task.
pub(crate) fn matmul_serial(x: &[f32], m: usize, w: &PackedMatrix, ep: &Epilogue, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "input is not {m} x {k}");
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    if m == 0 || n == 0 {
        return;
    }
    let task = Task {
        rows: (0, m),
        panels: (0, w.panels()),
    };
    // SAFETY: one task covers `out` (checked above); the packed matrix was built for
    // `w.isa`, detected on this CPU.
    unsafe { run_task(x, k, w, ep, OutPtr(out.as_mut_ptr()), n, task) }
}

/// Splits the output into tasks: enough for every thread to have a few, each as large as
/// possible so the packed rows and the weight panel stay in the core's caches.
pub(crate) fn plan(m: usize, panels: usize, mr: usize, threads: usize) -> Vec<Task> {
    let blocks = m.div_ceil(mr);
    let want = if threads <= 1 { 1 } else { 4 * threads };
    let mut rows_per = blocks.min(8);
    let mut panels_per = panels.min(4);
    let count = |r: usize, p: usize| blocks.div_ceil(r) * panels.div_ceil(p);
    while count(rows_per, panels_per) < want && panels_per > 1 {
        panels_per -= 1;
    }
    while count(rows_per, panels_per) < want && rows_per > 1 {
        rows_per -= 1;
    }
    let mut tasks = Vec::with_capacity(count(rows_per, panels_per));
    for b in (0..blocks).step_by(rows_per) {
        for p in (0..panels).step_by(panels_per) {
            tasks.push(Task {
                rows: (b * mr, ((b + rows_per) * mr).min(m)),
                panels: (p, (p + panels_per).min(panels)),
            });
        }
    }
    tasks
}

/// # Safety
/// `w.isa` must be supported by this CPU; `out` must point to `m x ldo` floats of which
/// this task alone writes its block.
#[allow(clippy::too_many_arguments)]
unsafe fn run_task(
    x: &[f32],
    k: usize,
    w: &PackedMatrix,
    ep: &Epilogue,
    out: OutPtr,
    ldo: usize,
    task: Task,
) {
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::task_avx512(x, k, w, ep, out, ldo, task),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::task_avx2(x, k, w, ep, out, ldo, task),
        Isa::Scalar => {
            task_generic::<SCALAR_MR, SCALAR_NR>(x, k, w, ep, out, ldo, task, scalar_kernel)
        }
    }
}

pub(crate) const SCALAR_MR: usize = 4;
pub(crate) const SCALAR_NR: usize = 16;

/// The task loop shared by every instruction set, generic over the microkernel so that
/// each instantiation is compiled inside its own `#[target_feature]` function.
///
/// `kernel(rows, k, a, b, next, c)` computes `rows <= MR` rows of an `MR x NR` block into
/// `c`, reading row `r` of the activations at `a + r * k` (row-major `x`, not packed), and
/// asks the caches for the panel at `next` (unless null) as it goes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn task_generic<const MR: usize, const NR: usize>(
    x: &[f32],
    k: usize,
    w: &PackedMatrix,
    ep: &Epilogue,
    out: OutPtr,
    ldo: usize,
    task: Task,
    kernel: impl Fn(usize, usize, *const f32, *const f32, *const f32, &mut [f32; 384]),
) {
    debug_assert!(MR * NR <= 384 && w.nr == NR);
    let (r0, r1) = task.rows;
    let mut tile = [0.0f32; 384];
    for p in task.panels.0..task.panels.1 {
        let panel = w.panel(p);
        let j0 = p * NR;
        let cols = NR.min(w.n - j0);
        for i0 in (r0..r1).step_by(MR) {
            let rows = MR.min(r1 - i0);
            // At batch 1 every panel comes from memory and serves a few blocks only: the
            // first block fetches the next panel ahead of its turn.
            let next = if i0 == r0 && p + 1 < w.panels() {
                w.panel(p + 1).as_ptr()
            } else {
                std::ptr::null()
            };
            kernel(
                rows,
                k,
                x[i0 * k..].as_ptr(),
                panel.as_ptr(),
                next,
                &mut tile,
            );
            // SAFETY: rows i0..i0 + rows < m and columns j0..j0 + cols < n belong to this task.
            let block = Block { i0, j0, rows, cols };
            write_block(&tile, NR, block, out, ldo, ep);
        }
    }
}

/// Where a finished block goes: rows `i0..i0 + rows`, columns `j0..j0 + cols` of the output.
#[derive(Clone, Copy)]
pub(crate) struct Block {
    pub i0: usize,
    pub j0: usize,
    pub rows: usize,
    pub cols: usize,
}

/// The fused output pass of a finished block held in `tile` (row `r` at `r * ld`), into
/// `out` (rows `ldo` apart).
///
/// # Safety
/// The block must lie inside `out` and belong to the calling task alone.
#[inline(always)]
pub(crate) unsafe fn write_block(
    tile: &[f32],
    ld: usize,
    block: Block,
    out: OutPtr,
    ldo: usize,
    ep: &Epilogue,
) {
    let Block { i0, j0, rows, cols } = block;
    let bias = ep.bias.map(|b| &b[j0..j0 + cols]);
    for r in 0..rows {
        let src = &tile[r * ld..][..cols];
        // SAFETY: the caller owns this block of `out`.
        let dst = std::slice::from_raw_parts_mut(out.0.add((i0 + r) * ldo + j0), cols);
        write_out(src, dst, bias, ep.act, ep.accumulate);
    }
}

/// The fused output pass of one row of a finished block.
#[inline(always)]
fn write_out(src: &[f32], dst: &mut [f32], bias: Option<&[f32]>, act: Act, accumulate: bool) {
    macro_rules! pass {
        ($act:expr) => {
            match (bias, accumulate) {
                (Some(b), false) => {
                    for ((d, &s), &b) in dst.iter_mut().zip(src).zip(b) {
                        *d = activate($act, s + b);
                    }
                }
                (Some(b), true) => {
                    for ((d, &s), &b) in dst.iter_mut().zip(src).zip(b) {
                        *d += activate($act, s + b);
                    }
                }
                (None, false) => {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = activate($act, s);
                    }
                }
                (None, true) => {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d += activate($act, s);
                    }
                }
            }
        };
    }
    // One loop per activation, so each is vectorised without a branch inside.
    match act {
        Act::Identity => pass!(Act::Identity),
        Act::QuickGelu => pass!(Act::QuickGelu),
        Act::GeluErf => pass!(Act::GeluErf),
        Act::GeluTanh => pass!(Act::GeluTanh),
        Act::Relu => pass!(Act::Relu),
    }
}

/// The portable microkernel: plain arrays the compiler vectorises for the baseline target.
#[inline(always)]
fn scalar_kernel(
    rows: usize,
    k: usize,
    a: *const f32,
    b: *const f32,
    _next: *const f32,
    c: &mut [f32; 384],
) {
    let mut acc = [[0.0f32; SCALAR_NR]; SCALAR_MR];
    for kk in 0..k {
        // SAFETY: the panel holds k * NR values.
        let b = unsafe { &*(b.add(kk * SCALAR_NR) as *const [f32; SCALAR_NR]) };
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            // SAFETY: rows r < rows of x hold k values each from `a`.
            let a = unsafe { *a.add(r * k + kk) };
            for j in 0..SCALAR_NR {
                acc[j] += a * b[j];
            }
        }
    }
    for r in 0..rows {
        c[r * SCALAR_NR..][..SCALAR_NR].copy_from_slice(&acc[r]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{task_generic, Epilogue, OutPtr, PackedMatrix, Task};

    /// Rows and columns of the AVX-512 register block: 24 accumulators of 16 lanes.
    pub const AVX512_MR: usize = 12;
    pub const AVX512_NR: usize = 32;
    /// AVX2: 12 accumulators of 8 lanes, leaving registers for the panel and a broadcast.
    pub const AVX2_MR: usize = 6;
    pub const AVX2_NR: usize = 16;

    /// `R` rows of a 12 x 32 block; `R` is a constant so the accumulators stay in registers.
    #[inline(always)]
    unsafe fn block512<const R: usize, const PREFETCH: bool>(
        k: usize,
        a: *const f32,
        b: *const f32,
        next: *const f32,
        c: *mut f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for kk in 0..k {
            if PREFETCH {
                // The same row of the next panel: two cache lines per step.
                _mm_prefetch::<_MM_HINT_T0>(next.add(kk * AVX512_NR).cast());
                _mm_prefetch::<_MM_HINT_T0>(next.add(kk * AVX512_NR + 16).cast());
            }
            let b0 = _mm512_loadu_ps(b.add(kk * AVX512_NR));
            let b1 = _mm512_loadu_ps(b.add(kk * AVX512_NR + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * k + kk));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * AVX512_NR), acc[0]);
            _mm512_storeu_ps(c.add(r * AVX512_NR + 16), acc[1]);
        }
    }

    #[inline(always)]
    unsafe fn block256<const R: usize>(k: usize, a: *const f32, b: *const f32, c: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for kk in 0..k {
            let b0 = _mm256_loadu_ps(b.add(kk * AVX2_NR));
            let b1 = _mm256_loadu_ps(b.add(kk * AVX2_NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * k + kk));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(r * AVX2_NR), acc[0]);
            _mm256_storeu_ps(c.add(r * AVX2_NR + 8), acc[1]);
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F; see `run_task`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn task_avx512(
        x: &[f32],
        k: usize,
        w: &PackedMatrix,
        ep: &Epilogue,
        out: OutPtr,
        ldo: usize,
        task: Task,
    ) {
        task_generic::<AVX512_MR, AVX512_NR>(
            x,
            k,
            w,
            ep,
            out,
            ldo,
            task,
            |rows, k, a, b, next, c| {
                let c = c.as_mut_ptr();
                macro_rules! by_rows {
                    ($pf:literal) => {
                        match rows {
                            12 => block512::<12, $pf>(k, a, b, next, c),
                            11 => block512::<11, $pf>(k, a, b, next, c),
                            10 => block512::<10, $pf>(k, a, b, next, c),
                            9 => block512::<9, $pf>(k, a, b, next, c),
                            8 => block512::<8, $pf>(k, a, b, next, c),
                            7 => block512::<7, $pf>(k, a, b, next, c),
                            6 => block512::<6, $pf>(k, a, b, next, c),
                            5 => block512::<5, $pf>(k, a, b, next, c),
                            4 => block512::<4, $pf>(k, a, b, next, c),
                            3 => block512::<3, $pf>(k, a, b, next, c),
                            2 => block512::<2, $pf>(k, a, b, next, c),
                            _ => block512::<1, $pf>(k, a, b, next, c),
                        }
                    };
                }
                if next.is_null() {
                    by_rows!(false)
                } else {
                    by_rows!(true)
                }
            },
        )
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; see `run_task`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn task_avx2(
        x: &[f32],
        k: usize,
        w: &PackedMatrix,
        ep: &Epilogue,
        out: OutPtr,
        ldo: usize,
        task: Task,
    ) {
        task_generic::<AVX2_MR, AVX2_NR>(x, k, w, ep, out, ldo, task, |rows, k, a, b, _, c| {
            let c = c.as_mut_ptr();
            match rows {
                6 => block256::<6>(k, a, b, c),
                5 => block256::<5>(k, a, b, c),
                4 => block256::<4>(k, a, b, c),
                3 => block256::<3>(k, a, b, c),
                2 => block256::<2>(k, a, b, c),
                _ => block256::<1>(k, a, b, c),
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{AVX2_MR, AVX2_NR, AVX512_MR, AVX512_NR};

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The plain triple loop in f64.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum();
            }
        }
        out
    }

    /// Shapes that are not multiples of any tile, single rows and columns, and the CLIP
    /// shapes' remainders.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 33, 7),
        (1, 768, 64),
        (2, 17, 3),
        (5, 31, 1),
        (13, 33, 65),
        (12, 32, 16),
        (25, 47, 19),
        (50, 96, 40),
        (7, 5, 300),
        (61, 130, 9),
    ];

    fn check(isa: Isa) {
        for &(m, n, k) in SHAPES {
            let x = values(m * k, (m * 1000 + n * 10 + k) as u64);
            let w = values(n * k, (n * 7 + k) as u64);
            let bias = values(n, 99);
            let packed = PackedMatrix::pack(&w, n, k, isa);
            let want = reference(&x, &w, m, n, k);
            // Sums of k products of values in [-1, 1] in f32: error grows with sqrt(k).
            let tol = 2e-6 * (k as f64).sqrt().max(1.0) * 4.0;

            let mut out = vec![f32::NAN; m * n];
            let plain = Epilogue {
                bias: None,
                act: Act::Identity,
                accumulate: false,
            };
            matmul(&x, m, &packed, &plain, &mut out);
            for (i, (&g, &r)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - r).abs() <= tol,
                    "{isa:?} {m}x{n}x{k} [{i}]: {g} vs {r}"
                );
            }

            let residual = values(m * n, 5);
            let mut out = residual.clone();
            let fused = Epilogue {
                bias: Some(&bias),
                act: Act::GeluErf,
                accumulate: true,
            };
            matmul(&x, m, &packed, &fused, &mut out);
            for i in 0..m * n {
                let v = (want[i] + bias[i % n] as f64) as f32;
                let expect = residual[i] as f64 + activate(Act::GeluErf, v) as f64;
                assert!(
                    (out[i] as f64 - expect).abs() <= tol * 2.0,
                    "{isa:?} fused {m}x{n}x{k}"
                );
            }
        }
    }

    #[test]
    fn scalar_kernel_matches_the_reference_product_on_odd_shapes() {
        check(Isa::Scalar);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_the_reference_product_on_odd_shapes() {
        if Isa::Avx2.supported() {
            check(Isa::Avx2);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernel_matches_the_reference_product_on_odd_shapes() {
        if Isa::Avx512.supported() {
            check(Isa::Avx512);
        }
    }

    #[test]
    fn tasks_cover_every_block_once() {
        for &(m, panels, mr, threads) in &[
            (50, 24, 12, 2),
            (1, 1, 12, 8),
            (1600, 96, 12, 2),
            (7, 3, 6, 1),
        ] {
            let tasks = plan(m, panels, mr, threads);
            let mut seen = vec![0u8; m * panels];
            for t in &tasks {
                for i in t.rows.0..t.rows.1 {
                    for p in t.panels.0..t.panels.1 {
                        seen[i * panels + p] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{m} {panels} {mr} {threads}");
        }
    }

    #[test]
    fn a_stored_matrix_whose_dimensions_wrap_is_refused() {
        // As a forged pack file could declare it: one panel and a `k` whose product with
        // the panel width wraps around to a store of a few values.
        let isa = Isa::detect();
        let nr = isa.nr();
        let k = usize::MAX / nr + 1;
        let wrapped = k.wrapping_mul(nr);
        assert!(wrapped < nr, "{wrapped}");
        let store = Store::Owned(vec![0.0; wrapped]);
        assert!(PackedMatrix::from_store(nr, k, isa, store).is_none());
        // The store of the matrix it claims to be is taken.
        let store = Store::Owned(vec![0.0; nr * 3]);
        assert!(PackedMatrix::from_store(nr, 3, isa, store).is_some());
    }
}
