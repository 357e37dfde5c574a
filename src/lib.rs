//! `vlm`: CLIP-style zero-shot image classification.
//!
//! Data flows one way: [`inputs`] finds the images, a [`source`] resolves a checkpoint to
//! local files, [`preprocess`] turns image files into normalised pixels, the [`model`]
//! encoders embed pixels and prompts into one space, [`score`] ranks prompts against each
//! image, and [`output`] writes the results. [`pipeline`] runs that flow over many files
//! with decoding on worker threads; [`embedder`] runs it for every command that needs image
//! embeddings, [`cache`] keeps them between runs, and [`organize`] sorts files into label
//! folders. [`Checkpoint`] ties a checkpoint together; its [`family`] (CLIP, SigLIP,
//! MetaCLIP 2, open_clip) decides pooling, tokenizer padding, preprocessing defaults and
//! scoring.
//!
//! [`evaluation`] measures zero-shot accuracy on labelled folders ([`dataset`]), with the
//! numbers from [`evaluation::metrics`] and a confusion heat map from [`evaluation::heatmap`]. [`export`] writes
//! embeddings for other tools and [`search`] ranks images by similarity to a query.
//! [`fewshot`] sharpens prompts with a few example images and [`probe`] trains a linear
//! head on embeddings instead. [`review`] writes a review page of results for a browser.
//! [`xmp`] writes labels into the XMP sidecars photo tools read, and [`dedup`] groups
//! near-duplicate images by the similarity of their embeddings.
//! [`store`] keeps embeddings and labels in PostgreSQL with pgvector (cargo feature
//! `postgres`, on by default) or Milvus (cargo feature `milvus`).

pub mod bench;
pub mod cache;
pub mod checkpoint;
pub mod dataset;
pub mod decide;
pub mod dedup;
pub mod device;
pub mod embedder;
pub mod error;
pub mod evaluation;
pub mod export;
pub mod family;
pub mod fewshot;
pub mod inputs;
pub(crate) mod kernels;
pub mod labels;
pub mod model;
pub mod organize;
pub mod output;
pub mod pipeline;
pub mod preprocess;
pub mod probe;
pub mod review;
pub mod score;
pub mod search;
pub mod source;
pub mod store;
pub mod tokenize;
pub mod xmp;

pub use checkpoint::{Checkpoint, PromptEmbeddings};
pub use error::{Error, Result};
