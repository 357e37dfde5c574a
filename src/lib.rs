//! `vlm`: CLIP-style zero-shot image classification.
//!
//! Data flows one way: a [`source`] resolves a checkpoint to local files, [`preprocess`]
//! turns image files into normalised pixel tensors, the [`model`] encoders embed pixels
//! and prompts into one space, and [`score`] ranks prompts against each image.

pub mod preprocess;
pub mod source;
