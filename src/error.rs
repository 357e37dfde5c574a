//! The core error type: one variant per stage below the features, each naming the file and
//! the cause. Features built on top (evaluation, few-shot, probes, organising, export,
//! datasets, the cache) have errors of their own that wrap this one, never the reverse.

use std::path::PathBuf;

/// Anything that can go wrong between a model spec and a ranked label list.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Config(#[from] crate::model::config::ConfigError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Tokenize(#[from] crate::tokenize::TokenizeError),
    #[error(transparent)]
    Preprocess(#[from] crate::preprocess::PreprocessError),
    #[error(transparent)]
    Labels(#[from] crate::labels::LabelError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error(transparent)]
    Input(#[from] crate::inputs::InputError),
    #[error(
        "{}: preprocessing produces {height}x{width} pixels but the model takes {size}x{size}; \
         fix crop_size / size in this file to match config.json's vision_config.image_size",
        path.display()
    )]
    InputSize {
        path: PathBuf,
        height: u32,
        width: u32,
        size: usize,
    },
    #[error("internal error: {0}; please report it")]
    Internal(&'static str),
    /// A tensor operation outside the encoders failed (joining prompt embeddings, scoring,
    /// the benchmark's matrix multiply).
    #[error("tensor operation failed: {0}")]
    Tensor(candle_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
