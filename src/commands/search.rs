//! `vlm search`: rank images by cosine similarity to a text query or to an image.

use std::io::{self, Write};
use std::time::Instant;

use anyhow::{bail, Context};

use super::{
    find_inputs, load_model, open_cache, output_format, pipeline_options, progress_bar,
    report_encoder, report_failure, warn_truncated, write_failed, Model, EXIT_INTERRUPTED, EXIT_OK,
    EXIT_SOME_FAILED,
};
use crate::cli::SearchArgs;
use vlm::cache::EmbeddingCache;
use vlm::embedder;
use vlm::inputs::{self, Event, Input, InputOptions, Source};
use vlm::output::Format;
use vlm::search::{self, cosine, Hit, Match, TopN};

pub fn run(args: &SearchArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let format = output_format(args.format.map(Format::from), args.output.as_deref())?;
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

    let found = find_inputs(&paths, &args.filter, args.verbose)?;
    let mut failed = found.failed;
    let mut todo = found.inputs;
    let query_input = args.image.as_deref().map(query_image).transpose()?;
    if let Some(Input {
        source: Source::File(path),
        ..
    }) = &query_input
    {
        let left_out = search::exclude_file(&mut todo, path);
        if left_out > 0 && args.verbose {
            eprintln!(
                "vlm: left the query image {} out of the results",
                path.display()
            );
        }
    }

    let model = load_model(&args.model)?;
    let cache = open_cache(&args.model, &model)?;
    let query = match (&text, query_input) {
        (Some(text), _) => text_query(&model, text, args.quiet)?,
        (None, Some(input)) => image_query(&model, cache.as_ref(), input, args)?,
        (None, None) => bail!("give a text query or --image IMAGE"),
    };

    let names: Vec<String> = todo.iter().map(|input| input.display.clone()).collect();
    let top_n = usize::try_from(args.top).unwrap_or(usize::MAX);
    let mut top = TopN::new(top_n);
    let mut index = 0;
    let mut searched = 0;
    let progress = progress_bar(todo.len(), args.quiet, "images");
    let summary = embedder::embed_inputs(
        &model.classifier,
        cache.as_ref(),
        todo.into_iter(),
        pipeline_options(&args.model),
        |batch| {
            for done in batch {
                match &done.embedding {
                    Ok(row) => {
                        searched += 1;
                        top.push(Hit {
                            index,
                            similarity: cosine(&query, row),
                        });
                    }
                    Err(err) => {
                        failed += 1;
                        report_failure(&progress, &done.input.display, err);
                    }
                }
                index += 1;
                progress.inc(1);
            }
            Ok::<(), anyhow::Error>(())
        },
    )?;
    progress.finish_and_clear();
    if let (Some(err), false) = (&summary.cache_error, args.quiet) {
        eprintln!("vlm: warning: {err}");
    }

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
    let out_name = args.output.as_ref().map_or_else(
        || "standard output".to_string(),
        |p| p.display().to_string(),
    );
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map(io::BufWriter::new)
                .with_context(|| format!("cannot open {} for writing", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    search::write_results(out, format, &results).with_context(|| write_failed(&out_name))?;

    let stats = summary.stats;
    if stats.cancelled {
        eprintln!(
            "vlm: interrupted: the results rank only the {searched} images embedded before Ctrl-C"
        );
        return Ok(EXIT_INTERRUPTED);
    }
    if !args.quiet {
        eprintln!(
            "vlm: searched {searched} images, failed {failed}, skipped {} in {:.1} s",
            found.skipped,
            started.elapsed().as_secs_f64()
        );
    }
    if args.verbose {
        report_encoder(&stats, cache.as_ref());
    }
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
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

fn text_query(model: &Model, text: &str, quiet: bool) -> anyhow::Result<Vec<f32>> {
    let prompts = [text.to_string()];
    let embedded = model.classifier.embed_prompts(&prompts)?;
    if !quiet {
        warn_truncated(
            &prompts,
            &embedded.truncated,
            model.classifier.model().text_context(),
        );
    }
    embedded
        .embeddings
        .to_vec2::<f32>()
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .context("internal error: the text encoder returned no embedding; please report it")
}

fn image_query(
    model: &Model,
    cache: Option<&EmbeddingCache>,
    input: Input,
    args: &SearchArgs,
) -> anyhow::Result<Vec<f32>> {
    let display = input.display.clone();
    let (mut done, _) = embedder::embed_all(
        &model.classifier,
        cache,
        vec![input],
        pipeline_options(&args.model),
    )?;
    let embedded = done
        .pop()
        .context("internal error: the query image was not embedded; please report it")?;
    embedded
        .embedding
        .with_context(|| format!("cannot use the query image {display}"))
}
