//! Embed a few prompts and print how similar each pair is.
//!
//! VLM_MODEL=clip-b16 cargo run --release --example embed_prompts -- "a dog" "a puppy" "a car"
//!
//! VLM_MODEL (as for the CLI) picks the checkpoint; the default is openai/clip-vit-base-patch32.

use candle_core::{Device, D};
use vlm::source::{self, HubOptions};
use vlm::Checkpoint;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = std::env::var("VLM_MODEL").unwrap_or_else(|_| source::DEFAULT_MODEL.to_string());
    if args.len() < 2 {
        anyhow::bail!("usage: embed_prompts PROMPT PROMPT...");
    }

    let files = source::resolve(&model, None, &HubOptions::from_env())?;
    let classifier = Checkpoint::load(&files, &Device::Cpu)?;
    let embedded = classifier.embed_prompts(&args)?.embeddings;

    // Cosine similarity of every pair: normalise the rows, then one matmul.
    let norms = embedded.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let unit = embedded.broadcast_div(&norms)?;
    let similarity: Vec<Vec<f32>> = unit.matmul(&unit.t()?)?.to_vec2()?;
    println!("embedding size {}", embedded.dim(1)?);
    for (i, row) in similarity.iter().enumerate() {
        for (j, s) in row.iter().enumerate().skip(i + 1) {
            println!("{s:>7.4}  {:?} ~ {:?}", args[i], args[j]);
        }
    }
    Ok(())
}
