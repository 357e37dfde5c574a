//! CPU compute kernels for the encoders: matrix products against weights packed once at
//! load, with fused epilogues, and the row-wise passes (layer norm, attention softmax).
//!
//! The instruction set is chosen at run time ([`Isa::detect`]): AVX-512F, else AVX2 with
//! FMA, else portable code, so one binary runs on any x86-64 (and elsewhere) and uses the
//! widest registers the CPU has. Every kernel is tested against a plain reference. int8
//! products have their own choice of kernel ([`Int8Kernel`]), as bf16 ones do.

mod amx;
mod attention;
mod gemm;
mod int8;
mod math;
mod norm;
mod store;

pub(crate) use amx::matmul as matmul_bf16;
pub(crate) use amx::AmxMatrix;
pub use amx::Bf16Kernel;
pub(crate) use attention::{attend, attention, Heads, KvView, Queries};
pub(crate) use gemm::{matmul, Epilogue, PackedMatrix};
pub(crate) use int8::matmul as matmul_int8;
pub use int8::Int8Kernel;
pub(crate) use int8::Int8Matrix;
pub(crate) use math::Act;
pub(crate) use norm::layer_norm;
pub(crate) use store::{Plain, Store};

/// The instruction set a kernel is compiled for; packed weights are laid out for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Isa {
    /// x86-64 with AVX-512F: 12 x 32 register blocks.
    Avx512,
    /// x86-64 with AVX2 and FMA: 6 x 16 register blocks.
    Avx2,
    /// Anything else: portable code the compiler vectorises for the build's baseline.
    Scalar,
}

impl Isa {
    /// The widest instruction set this CPU supports (detected once).
    pub fn detect() -> Self {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.supported())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Whether this CPU can run the kernels of `self`.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Scalar => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// How reports name the kernels of `self`.
    pub fn label(self) -> &'static str {
        match self {
            Isa::Avx512 => "packed avx512",
            Isa::Avx2 => "packed avx2",
            Isa::Scalar => "packed portable",
        }
    }

    /// Output columns per weight panel.
    pub(crate) fn nr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => gemm::AVX512_NR,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => gemm::AVX2_NR,
            _ => gemm::SCALAR_NR,
        }
    }

    /// Rows per register block.
    pub(crate) fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => gemm::AVX512_MR,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => gemm::AVX2_MR,
            _ => gemm::SCALAR_MR,
        }
    }
}

/// Defines `pub(crate) fn $name` that runs `$body` (an `#[inline(always)]` generic
/// function) compiled for the widest instruction set this CPU has, so the compiler's
/// vectoriser uses AVX-512 or AVX2 registers in plain loops.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $body($($arg),*) }
                match crate::kernels::Isa::detect() {
                    // SAFETY: the instruction set was detected on this CPU.
                    crate::kernels::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    crate::kernels::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    crate::kernels::Isa::Scalar => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatch;
