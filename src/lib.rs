//! `vlm`: CLIP-style zero-shot image classification.
//!
//! Data flows one way: [`inputs`] finds the images, a [`source`] resolves a checkpoint to
//! local files, [`preprocess`] turns image files into normalised pixels, the [`model`]
//! encoders embed pixels and prompts into one space, [`score`] ranks prompts against each
//! image, [`decide`] chooses the labels, and [`output`] writes the results. [`Checkpoint`]
//! ties a checkpoint together; its [`family`] (CLIP, SigLIP, MetaCLIP 2, open_clip) decides
//! pooling, tokenizer padding, preprocessing defaults and scoring, and
//! [`model::family`] reads each family's files.
//!
//! Every command runs the same [`job`]: each input is read once and keyed by its content,
//! a cached embedding is reused or the image decoded on worker threads ([`pipeline`]) and
//! encoded in batches, and the results go to sinks in input order, with progress through
//! [`progress`]. A [`session`] is a loaded model with its [`cache`]; [`classify`] is the
//! classify run, whose results also go to [`organize`] (label folders), [`store`]
//! (PostgreSQL with pgvector, cargo feature `postgres`, on by default, or Milvus, feature
//! `milvus`) and [`review`] (a review page for a browser).
//!
//! [`evaluation`] measures zero-shot accuracy on labelled folders ([`dataset`]), with the
//! numbers from [`evaluation::metrics`] and a confusion heat map from
//! [`evaluation::heatmap`]. [`export`] writes embeddings for other tools and [`search`]
//! ranks images by similarity to a query. [`fewshot`] sharpens prompts with a few example
//! images and [`probe`] trains a linear head on embeddings instead. [`bench`] measures
//! throughput. [`fields`] reads JSON config files. [`build_info`] says what this build is
//! (commit, features, JPEG SIMD) and [`doctor`] reports what vlm sees on the machine.
//! [`xmp`] writes labels into the XMP sidecars photo tools read, and [`dedup`] groups
//! near-duplicate images by the similarity of their embeddings.
//! `serve` (cargo feature `serve`, on by default) keeps a model loaded behind an HTTP API.

pub mod bench;
pub mod build_info;
pub mod cache;
pub mod caption;
pub mod checkpoint;
pub mod classify;
pub mod dataset;
pub mod decide;
pub mod dedup;
pub mod device;
pub mod doctor;
pub mod error;
pub mod evaluation;
pub mod export;
pub mod family;
pub mod fewshot;
pub mod fields;
pub mod inputs;
pub mod job;
pub(crate) mod kernels;
pub mod labels;
pub mod model;
pub mod organize;
pub mod output;
pub mod pipeline;
pub mod preprocess;
pub mod probe;
pub mod progress;
pub mod review;
pub mod score;
pub mod search;
#[cfg(feature = "serve")]
pub mod serve;
pub mod session;
pub mod source;
pub mod store;
pub mod tokenize;
pub mod xmp;

pub use checkpoint::{Checkpoint, PromptEmbeddings};
pub use error::{Error, Result};
