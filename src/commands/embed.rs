//! `vlm embed`: write image or prompt embeddings to a file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::{
    find_inputs, load_model, warn_truncated, Model, Printer, Session, EXIT_INTERRUPTED, EXIT_OK,
    EXIT_SOME_FAILED,
};
use crate::cli::EmbedArgs;
use vlm::export::{self, Embeddings, ExportFormat, Metadata, RowKind};
use vlm::search::normalize;

pub fn run(args: &EmbedArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let printer = Printer::new(args.quiet, args.verbose);
    if let Some(to) = &args.to {
        return to_database(args, to, printer, started);
    }
    let output = args
        .output
        .as_deref()
        .context("give --output FILE or --to ADDRESS")?;
    let format = match args.format {
        Some(format) => format.into(),
        None => ExportFormat::from_path(output)?,
    };
    let texts = match (&args.text, &args.text_file) {
        (Some(list), _) => Some(export::prompts_from_list(list)?),
        (None, Some(path)) => Some(export::read_prompts(path)?),
        (None, None) => None,
    };
    if let Some(texts) = texts {
        return embed_texts(args, output, &printer, format, texts);
    }

    let found = find_inputs(&args.inputs, &args.filter, &printer)?;
    for input in &found.inputs {
        export::check_name(format, output, &input.display)?;
    }
    export::check_writable(output)?;
    let session = Session::open(&args.model, printer)?;
    let mut embeddings = Embeddings::new(
        session.classifier().config().projection_dim,
        metadata(&session.model, RowKind::Image, !args.no_normalize),
    );
    let mut failed = found.failed;
    let stats = session.embed(found.inputs, "images", |_, batch| {
        for done in batch {
            match done.embedding {
                Ok(mut row) => {
                    if !args.no_normalize {
                        normalize(&mut row);
                    }
                    embeddings.push(done.input.display, &row)?;
                }
                Err(_) => failed += 1,
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let written = export::write(output, format, &embeddings)?;
    let printer = &session.printer;
    if stats.cancelled {
        printer.error(format_args!(
            "interrupted: {} embeddings written to {}; the rest were not embedded",
            embeddings.len(),
            list(&written)
        ));
        return Ok(EXIT_INTERRUPTED);
    }
    printer.note(format_args!(
        "embedded {}, failed {}, skipped {} in {:.1} s; wrote {}",
        embeddings.len(),
        failed,
        found.skipped,
        started.elapsed().as_secs_f64(),
        list(&written)
    ));
    session.report(&stats);
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

/// `--to ADDRESS`: embeddings into a database table instead of a file.
fn to_database(
    args: &EmbedArgs,
    to: &str,
    printer: Printer,
    started: Instant,
) -> anyhow::Result<u8> {
    let address = super::database::address(to, args.table.as_deref())?;
    let found = find_inputs(&args.inputs, &args.filter, &printer)?;
    let session = Session::open(&args.model, printer)?;
    super::database::embed_to(&address, &session, found, !args.no_normalize, started)
}

fn embed_texts(
    args: &EmbedArgs,
    output: &Path,
    printer: &Printer,
    format: ExportFormat,
    texts: Vec<String>,
) -> anyhow::Result<u8> {
    for text in &texts {
        export::check_name(format, output, text)?;
    }
    export::check_writable(output)?;
    let model = load_model(&args.model)?;
    let classifier = &model.classifier;
    let prompts = classifier.embed_prompts(&texts)?;
    warn_truncated(
        printer,
        &texts,
        &prompts.truncated,
        classifier.model().text_context(),
    );
    let rows = prompts
        .embeddings
        .to_vec2::<f32>()
        .context("cannot read the text embeddings back from the device")?;
    let mut embeddings = Embeddings::new(
        classifier.config().projection_dim,
        metadata(&model, RowKind::Text, !args.no_normalize),
    );
    for (text, mut row) in texts.into_iter().zip(rows) {
        if !args.no_normalize {
            normalize(&mut row);
        }
        embeddings.push(text, &row)?;
    }
    let written = export::write(output, format, &embeddings)?;
    printer.note(format_args!(
        "embedded {} prompts; wrote {}",
        embeddings.len(),
        list(&written)
    ));
    Ok(EXIT_OK)
}

fn metadata(model: &Model, kind: RowKind, normalized: bool) -> Metadata {
    Metadata {
        kind: Some(kind),
        model: Some(model.files.id.clone()),
        revision: model.files.revision.clone(),
        normalized: Some(normalized),
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}
