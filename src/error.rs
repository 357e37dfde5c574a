//! The library's error type: one variant per stage, each naming the file and the cause.

use std::path::PathBuf;

/// Anything that can go wrong between a model spec and a ranked label list.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
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
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Eval(#[from] crate::evaluation::EvalError),
    #[error(transparent)]
    Organize(#[from] crate::organize::OrganizeError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    FewShot(#[from] crate::fewshot::FewShotError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
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
    #[error("scoring failed: {0}")]
    Score(#[source] candle_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
