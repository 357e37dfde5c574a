//! The `vlm` command: parses arguments and wires them to the library.

mod cli;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rayon::prelude::*;

use cli::{ClassifyArgs, Cli, Command, DeviceArg};
use vlm::device::{self, DeviceKind};
use vlm::labels::{self, Template};
use vlm::output::{ImageReport, LabelResult, Outcome, ReportWriter};
use vlm::source::{self, HubOptions};
use vlm::Classifier;

/// Every input was classified.
const EXIT_OK: u8 = 0;
/// The run finished, but at least one input failed.
const EXIT_SOME_FAILED: u8 = 1;
/// Nothing useful could be done: bad arguments, unusable model, unwritable output.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => classify(&args),
        Command::Models => models(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("vlm: error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A closed stdout (`vlm ... | head -1`) ends the run quietly, as other Unix tools do.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn classify(args: &ClassifyArgs) -> anyhow::Result<u8> {
    let labels = match (&args.labels, &args.labels_file) {
        (_, Some(path)) => labels::read_file(path)?,
        (Some(list), None) => labels::parse_list(list)?,
        (None, None) => return Err(labels::LabelError::None.into()),
    };
    let template = Template::new(&args.template)?;
    let prompts: Vec<String> = labels.iter().map(|label| template.apply(label)).collect();

    let files = source::resolve(
        &args.model,
        args.revision.as_deref(),
        &HubOptions::from_env(),
    )?;
    let device = device::select(match args.device {
        DeviceArg::Auto => DeviceKind::Auto,
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda,
        DeviceArg::Metal => DeviceKind::Metal,
    })?;
    let classifier = Classifier::load(&files, &device)?;

    let text = classifier.embed_prompts(&prompts)?;
    if !args.quiet {
        for (prompt, _) in prompts.iter().zip(&text.truncated).filter(|(_, &cut)| cut) {
            eprintln!(
                "vlm: warning: prompt {prompt:?} is longer than the model's {} tokens and was truncated",
                classifier.model().text_context()
            );
        }
    }

    let top_k = args
        .top_k
        .map_or(labels.len(), |k| usize::try_from(k).unwrap_or(usize::MAX));
    let batch_size = usize::try_from(args.batch_size).unwrap_or(1);
    let mut writer = ReportWriter::new(io::stdout().lock(), args.format.into());
    let mut failed = 0usize;
    for chunk in args.images.chunks(batch_size) {
        // Decoding and resizing dominate for camera-size photos; spread them over the cores.
        let pixels: Vec<_> = chunk
            .par_iter()
            .map(|path| classifier.load_pixels(path))
            .collect();
        let good: Vec<Vec<f32>> = pixels
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let mut ranked = if good.is_empty() {
            Vec::new()
        } else {
            let embeddings = classifier.embed_pixels(&good)?;
            classifier.rank(&embeddings, &text)?
        }
        .into_iter();
        for (path, pixels) in chunk.iter().zip(pixels) {
            let shown = path.display().to_string();
            let outcome = match pixels {
                Ok(_) => {
                    let scores = ranked
                        .next()
                        .context("internal error: fewer rankings than images")?;
                    Outcome::Ranked(
                        scores
                            .into_iter()
                            .take(top_k)
                            .map(|s| LabelResult {
                                label: labels[s.index].clone(),
                                prompt: prompts[s.index].clone(),
                                probability: s.probability,
                                similarity: s.similarity,
                            })
                            .collect(),
                    )
                }
                Err(err) => {
                    failed += 1;
                    eprintln!("vlm: {shown}: {err}");
                    Outcome::Failed(err.to_string())
                }
            };
            writer.write(&ImageReport {
                path: shown,
                outcome,
            })?;
        }
    }
    let _stdout = writer.finish()?;
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

fn models() -> anyhow::Result<u8> {
    let entries = source::registry::entries()?;
    let mut out = io::stdout().lock();
    let alias_width = entries
        .iter()
        .map(|e| e.alias.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let repo_width = entries
        .iter()
        .map(|e| e.repo.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<alias_width$}  {:<repo_width$}  {:>5}  {:>5}  LICENSE",
        "ALIAS", "REPO", "SIZE", "DIM"
    )?;
    for e in &entries {
        writeln!(
            out,
            "{:<alias_width$}  {:<repo_width$}  {:>5}  {:>5}  {}",
            e.alias, e.repo, e.image_size, e.embed_dim, e.license
        )?;
    }
    if io::stdout().is_terminal() {
        writeln!(
            out,
            "\nUse one with: vlm classify --model ALIAS IMAGE... --labels ..."
        )?;
    }
    Ok(EXIT_OK)
}
