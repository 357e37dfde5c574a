//! The integration tests, one binary (as ripgrep does): one link instead of one per file.

mod common;

mod batch;
mod caption;
mod caption_cli;
mod cli;
mod dedup;
mod doctor;
mod embed_search;
mod eval;
mod failure_paths;
mod families;
mod families_cli;
mod faults;
mod fewshot;
mod hostile;
mod hub;
mod inputs;
mod int8;
// The build script's NASM rule, tested without a build (its tests are in the file).
mod jpeg_downscale;
#[path = "../../build/jpeg_simd.rs"]
mod jpeg_simd;
mod milvus;
mod organize;
mod pack_cache;
mod parity;
mod partial_cache;
#[cfg(feature = "postgres")]
mod postgres;
mod probe;
mod properties;
mod report;
#[cfg(feature = "serve")]
mod serve;
mod stream;
mod xmp;
