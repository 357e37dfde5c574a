//! Arguments of `vlm serve`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use super::{ModelArgs, Verbosity};

/// Keep a model loaded behind a local HTTP API: OpenAI-style POST /v1/embeddings (texts,
/// or images with "modality": "image"), POST /v1/classify, GET /health, /v1/models and
/// /metrics; with a BLIP checkpoint, POST /v1/caption or POST /v1/ask instead.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; 127.0.0.1 answers this machine only. Give 0.0.0.0 (or an
    /// address of this machine) to let others in, and then an --api-key-file.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1",
        help_heading = "Server"
    )]
    pub host: IpAddr,

    /// Port to listen on (0: any free port; the address is printed at start).
    #[arg(short, long, default_value_t = 8080, help_heading = "Server")]
    pub port: u16,

    /// Require the key on this file's first line as "Authorization: Bearer KEY" on every
    /// endpoint but /health. The key is compared in constant time and never logged.
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    pub api_key_file: Option<PathBuf>,

    /// The most images encoded together (the --batch-size of the other commands).
    #[arg(long, value_name = "N", default_value_t = 32, conflicts_with = "batch_size",
          value_parser = clap::value_parser!(u64).range(1..=4096), help_heading = "Server")]
    pub max_batch: u64,

    /// How long an image waits for others to share its encoder call; images that arrive
    /// while the encoder is busy are batched whatever this is.
    #[arg(long, value_name = "MS", default_value_t = 5, help_heading = "Server")]
    pub max_wait_ms: u64,

    /// The most images accepted and not yet answered; beyond it requests are answered
    /// 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), help_heading = "Server")]
    pub queue: u64,

    /// Largest request body, and largest image fetched from a URL, in MiB (413 beyond it).
    #[arg(long, value_name = "MIB", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=4096), help_heading = "Server")]
    pub max_request_mib: u64,

    /// Answer 503 to a request not done in this many seconds.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 60.0,
        help_heading = "Server"
    )]
    pub timeout_s: f64,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub verbosity: Verbosity,
}
