//! Classify one image with the library API.
//!
//! cargo run --release --example classify_image -- IMAGE "dog,cat" [MODEL]
//!
//! MODEL is a local checkpoint directory, an alias from `vlm models` or a hub repo id
//! (default openai/clip-vit-base-patch32).

use std::path::Path;

use candle_core::Device;
use vlm::labels::{self, Template};
use vlm::source::{self, HubOptions};
use vlm::Checkpoint;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, label_list, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: classify_image IMAGE LABELS [MODEL]");
    };
    let model = rest.first().map_or(source::DEFAULT_MODEL, String::as_str);

    let files = source::resolve(model, None, &HubOptions::from_env())?;
    let classifier = Checkpoint::load(&files, &Device::Cpu)?;

    let labels = labels::parse_list(label_list)?;
    let template = Template::default();
    let prompts: Vec<String> = labels.iter().map(|l| template.apply(l)).collect();
    let text = classifier.embed_prompts(&prompts)?;

    let pixels = classifier.load_pixels(Path::new(image))?;
    let embedding = classifier.embed_pixels(&[pixels])?;
    for score in &classifier.rank(&embedding, &text)?[0] {
        println!("{:>8.4}  {}", score.probability, labels[score.index]);
    }
    Ok(())
}
