//! `vlm embed`: image or prompt embeddings to a file ([`vlm::export`]), or image embeddings
//! into a database table ([`vlm::store`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::{EmbedSettings, EmbedTo, EmbedWhat};
use crate::cli::EmbedArgs;
use vlm::export::{self, ExportFormat};
use vlm::inputs::InputSpec;
use vlm::session::{ModelSettings, Session};
use vlm::store::{self, Address, ModelStamp};

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let EmbedSettings {
        what,
        to,
        normalized,
        model,
        verbosity,
    } = EmbedSettings::resolve(args)?;
    let printer = Printer::from(verbosity);
    match (what, to) {
        (EmbedWhat::Images(inputs), EmbedTo::File { path, format }) => images_to_file(
            &inputs, &path, format, normalized, &model, &printer, started,
        ),
        (EmbedWhat::Images(inputs), EmbedTo::Database(address)) => {
            images_to_database(&inputs, &address, normalized, &model, &printer, started)
        }
        (EmbedWhat::Texts(texts), EmbedTo::File { path, format }) => {
            export::check_names(format, &path, texts.iter().map(String::as_str))?;
            export::check_writable(&path)?;
            let session = Session::load(&model)?;
            let embeddings = export::embed_texts(
                &session.checkpoint,
                &session.files,
                texts,
                normalized,
                &printer,
            )?;
            let written = export::write(&path, format, &embeddings)?;
            let (count, files) = (embeddings.len(), list(&written));
            printer.note(format_args!("embedded {count} prompts; wrote {files}"));
            Ok(ExitStatus::Ok)
        }
        (EmbedWhat::Texts(_), EmbedTo::Database(_)) => {
            anyhow::bail!("--to stores image embeddings; embed prompts to a file with --output")
        }
    }
}

/// Image embeddings into an `.npy`, `.safetensors` or `.jsonl` file.
fn images_to_file(
    inputs: &InputSpec,
    path: &Path,
    format: ExportFormat,
    normalized: bool,
    model: &ModelSettings,
    printer: &Printer,
    started: Instant,
) -> anyhow::Result<ExitStatus> {
    let mut found = inputs.find(printer)?;
    export::check_names(format, path, found.names())?;
    export::check_writable(path)?;
    let session = Session::open(model, printer)?;
    let (embeddings, mut tally) = export::embed_images(
        &session.job(),
        &session.files,
        std::mem::take(&mut found.inputs),
        normalized,
        printer,
    )?;
    let written = list(&export::write(path, format, &embeddings)?);
    tally.add_found(&found);
    if tally.cancelled {
        let count = embeddings.len();
        printer.error(format_args!(
            "interrupted: {count} embeddings written to {written}; the rest were not embedded"
        ));
        return Ok(ExitStatus::Interrupted);
    }
    printer.note(format_args!(
        "embedded {}, failed {}, skipped {} in {:.1} s; wrote {written}",
        embeddings.len(),
        tally.failed,
        tally.skipped,
        started.elapsed().as_secs_f64(),
    ));
    session.say_stats(&tally, printer);
    Ok(ExitStatus::of(&tally))
}

/// `--to ADDRESS`: image embeddings into a database table, new or changed files only.
fn images_to_database(
    inputs: &InputSpec,
    address: &Address,
    normalized: bool,
    model: &ModelSettings,
    printer: &Printer,
    started: Instant,
) -> anyhow::Result<ExitStatus> {
    let mut found = inputs.find(printer)?;
    let session = Session::open(model, printer)?;
    // Connecting checks the table's dimension and model before anything is written.
    let mut db =
        store::open_for_writing(address, ModelStamp::of(&session.files, &session.checkpoint))?;
    let run = store::embed_to(
        session.job(),
        db.as_mut(),
        std::mem::take(&mut found.inputs),
        normalized,
        printer,
    )?;
    let (stored, unchanged, shown) = (run.stored, run.tally.unchanged, db.shown());
    let mut tally = run.tally;
    tally.add_found(&found);
    let embedded = run.inputs - unchanged;
    printer.detail(format_args!(
        "{unchanged} inputs unchanged in {shown}; embedding {embedded}"
    ));
    if tally.cancelled {
        printer.error(format_args!(
            "interrupted: {stored} embeddings stored in {shown}; run the same command again to store the rest"
        ));
        return Ok(ExitStatus::Interrupted);
    }
    printer.note(format_args!(
        "stored {stored} embeddings ({unchanged} unchanged), failed {}, skipped {} in {:.1} s; in {shown}",
        tally.failed,
        tally.skipped,
        started.elapsed().as_secs_f64(),
    ));
    session.say_stats(&tally, printer);
    Ok(ExitStatus::of(&tally))
}

/// The files written: "a.npy and a.paths.txt".
fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}
