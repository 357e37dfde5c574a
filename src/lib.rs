//! `vlm`: CLIP-style zero-shot image classification.
//!
//! Data flows one way: a [`source`] resolves a checkpoint to local files, [`preprocess`]
//! turns image files into normalised pixel tensors, the [`model`] encoders embed pixels
//! and prompts into one space, and [`score`] ranks prompts against each image.

pub mod cache;
pub mod classify;
pub mod config;
pub mod error;
pub mod inputs;
pub mod labels;
pub mod model;
pub mod preprocess;
pub mod score;
pub mod source;
pub mod tokenize;

pub use classify::{Classifier, PromptEmbeddings};
pub use error::{Error, Result};
pub mod device;
pub mod organize;
pub mod output;
pub mod pipeline;
