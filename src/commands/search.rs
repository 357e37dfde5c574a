//! `vlm search`: rank images by cosine similarity to a text query or to an image.

use std::time::Instant;

use anyhow::{bail, Context};

use super::{
    find_inputs, output_format, warn_truncated, write_failed, Printer, Session, EXIT_INTERRUPTED,
    EXIT_OK, EXIT_SOME_FAILED,
};
use crate::cli::SearchArgs;
use vlm::embedder;
use vlm::inputs::{self, Event, Input, InputOptions, Source};
use vlm::output::Format;
use vlm::search::{self, CosineQuery, Hit, Match, TopN};

pub fn run(args: &SearchArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let printer = Printer::new(args.quiet, args.verbose);
    let format = output_format(args.format.map(Format::from), args.output.as_deref())?;
    if let Some(address) = &args.in_database {
        return in_database(args, address, printer, format, started);
    }
    let (text, paths) = query_and_paths(args)?;
    let found = find_inputs(&paths, &args.filter, &printer)?;
    let mut failed = found.failed;
    let mut todo = found.inputs;
    let query_input = args.image.as_deref().map(query_image).transpose()?;
    if let Some(Input {
        source: Source::File(path),
        ..
    }) = &query_input
    {
        if search::exclude_file(&mut todo, path) > 0 {
            printer.detail(format_args!(
                "left the query image {} out of the results",
                path.display()
            ));
        }
    }
    let session = Session::open(&args.model, printer)?;
    let query = match (&text, query_input) {
        (Some(text), _) => text_query(&session, text)?,
        (None, Some(input)) => image_query(&session, input)?,
        (None, None) => bail!("give a text query or --image IMAGE"),
    };
    let query = CosineQuery::new(&query);
    let names: Vec<String> = todo.iter().map(|input| input.display.clone()).collect();
    let mut top = TopN::new(usize::try_from(args.top).unwrap_or(usize::MAX));
    let mut index = 0;
    let mut searched = 0;
    let stats = session.embed(todo, "images", |_, batch| {
        for done in batch {
            match &done.embedding {
                Ok(row) => {
                    searched += 1;
                    let similarity = query.similarity(row);
                    top.push(Hit { index, similarity });
                }
                Err(_) => failed += 1,
            }
            index += 1;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let results: Vec<Match> = top
        .into_sorted()
        .into_iter()
        .enumerate()
        .map(|(rank, hit)| Match {
            rank: rank + 1,
            path: names[hit.index].clone(),
            similarity: hit.similarity,
        })
        .collect();
    write_matches(args, format, &results)?;
    let printer = &session.printer;
    if stats.cancelled {
        printer.error(format_args!(
            "interrupted: the results rank only the {searched} images embedded before Ctrl-C"
        ));
        return Ok(EXIT_INTERRUPTED);
    }
    printer.note(format_args!(
        "searched {searched} images, failed {failed}, skipped {} in {:.1} s",
        found.skipped,
        started.elapsed().as_secs_f64()
    ));
    session.report(&stats);
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

/// `--in ADDRESS`: ranks the rows of a database table through its index.
fn in_database(
    args: &SearchArgs,
    address: &str,
    printer: Printer,
    format: Format,
    started: Instant,
) -> anyhow::Result<u8> {
    let address = super::database::address(address, args.table.as_deref())?;
    if !args.inputs.is_empty() || args.filter.files_from.is_some() {
        bail!("--in searches the table; leave out the INPUTs (vlm embed INPUTS --to ADDRESS adds them)");
    }
    let text = match (&args.image, &args.query) {
        (Some(_), Some(_)) => bail!(
            "--in searches the table; give either a text query or --image IMAGE, and no INPUTs"
        ),
        (None, Some(text)) if text.trim().is_empty() => {
            bail!("the query is empty; give the text to search for, or --image IMAGE")
        }
        (None, Some(text)) => Some(text.clone()),
        (Some(_), None) => None,
        (None, None) => bail!("give a text query or --image IMAGE"),
    };
    let query_input = args.image.as_deref().map(query_image).transpose()?;
    let session = Session::open(&args.model, printer)?;
    let exclude = query_input.as_ref().map(|input| input.display.clone());
    let query = match (&text, query_input) {
        (Some(text), _) => text_query(&session, text)?,
        (None, Some(input)) => image_query(&session, input)?,
        (None, None) => bail!("give a text query or --image IMAGE"),
    };
    let n = usize::try_from(args.top).unwrap_or(usize::MAX);
    let hits = super::database::search_in(&address, &session, &query, n, exclude.as_deref())?;
    let results: Vec<Match> = hits
        .into_iter()
        .enumerate()
        .map(|(rank, hit)| Match {
            rank: rank + 1,
            path: hit.path,
            similarity: hit.similarity,
        })
        .collect();
    write_matches(args, format, &results)?;
    session.printer.note(format_args!(
        "{} matches from {} in {:.1} s",
        results.len(),
        address.shown,
        started.elapsed().as_secs_f64()
    ));
    Ok(EXIT_OK)
}

/// The text query (none with `--image`) and the paths to search.
fn query_and_paths(args: &SearchArgs) -> anyhow::Result<(Option<String>, Vec<String>)> {
    // With --image the first positional argument is an input, not a text query.
    let (text, paths) = match &args.image {
        Some(_) => (
            None,
            args.query
                .iter()
                .chain(&args.inputs)
                .cloned()
                .collect::<Vec<_>>(),
        ),
        None => (args.query.clone(), args.inputs.clone()),
    };
    if let Some(text) = &text {
        if text.trim().is_empty() {
            bail!("the query is empty; give the text to search for, or --image IMAGE");
        }
    }
    if paths.is_empty() && args.filter.files_from.is_none() {
        bail!("no images to search: give files, directories or globs after the query, or --files-from");
    }
    Ok((text, paths))
}

/// Writes the ranked matches to `--output` or stdout.
fn write_matches(args: &SearchArgs, format: Format, results: &[Match]) -> anyhow::Result<()> {
    let (out, out_name) = super::output_writer(args.output.as_deref())?;
    search::write_results(out, format, results).with_context(|| write_failed(&out_name))?;
    Ok(())
}

/// The --image argument as one input, found the way inputs are.
fn query_image(arg: &str) -> anyhow::Result<Input> {
    let mut found = None;
    for event in inputs::discover(&[arg.to_string()], None, &InputOptions::default())? {
        match event {
            Event::Input(input) if found.is_none() => found = Some(input),
            Event::Input(_) => bail!("--image {arg} names more than one image; give one file"),
            Event::Skipped { path, reason } => {
                bail!("cannot use --image {}: {reason}", path.display())
            }
            Event::Error(err) => bail!("cannot use --image: {err}"),
        }
    }
    found.with_context(|| format!("--image {arg} names no image"))
}

fn text_query(session: &Session, text: &str) -> anyhow::Result<Vec<f32>> {
    let prompts = [text.to_string()];
    let classifier = session.classifier();
    let embedded = classifier.embed_prompts(&prompts)?;
    warn_truncated(
        &session.printer,
        &prompts,
        &embedded.truncated,
        classifier.model().text_context(),
    );
    embedded
        .embeddings
        .to_vec2::<f32>()
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .context("internal error: the text encoder returned no embedding; please report it")
}

fn image_query(session: &Session, input: Input) -> anyhow::Result<Vec<f32>> {
    let display = input.display.clone();
    // Not through `Session::embed`: a failure here is the run's error, not a file's.
    let (mut done, _) = embedder::embed_all(
        session.classifier(),
        session.cache.as_ref(),
        vec![input],
        session.options(),
    )?;
    done.pop()
        .context("internal error: the query image was not embedded; please report it")?
        .embedding
        .with_context(|| format!("cannot use the query image {display}"))
}
