//! `vlm eval`: zero-shot accuracy on a labelled folder, for one prompt spec or several
//! side by side.

use std::io::{self, Write};
use std::time::Instant;

use anyhow::{bail, Context};

use super::{
    load_model, open_cache, pipeline_options, progress_bar, report_encoder, report_failure,
    warn_truncated, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED,
};
use crate::cli::{EvalArgs, EvalFormat};
use vlm::dataset::{Dataset, LabelMap};
use vlm::embedder::{self, Embedded};
use vlm::evaluation::report::{self, Failure};
use vlm::evaluation::{self, PromptSpec, SpecResult};
use vlm::heatmap;
use vlm::labels::PromptSet;

pub fn run(args: &EvalArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    if args.filter.files_from.is_some() {
        bail!("vlm eval takes its images from DIR/<label>/ folders; --files-from does not apply");
    }
    let mapping = args
        .labels_file
        .as_deref()
        .map(LabelMap::read)
        .transpose()?;
    let dataset = Dataset::open(&args.dir, &args.filter.options(), mapping.as_ref())?;
    if let Some(page) = &args.report {
        super::report::check_eval_page(&args.dir, page)?;
    }
    let specs = if args.compare_templates.is_empty() {
        vec![PromptSpec::from_options(
            &args.prompts.template,
            args.prompts.templates.as_deref(),
        )?]
    } else {
        evaluation::parse_specs(&args.compare_templates)?
    };
    // Bad labels or templates should fail before any image is embedded.
    for spec in &specs {
        PromptSet::new(&dataset.labels, &spec.templates)?;
    }

    if args.verbose {
        for (path, reason) in &dataset.skipped {
            eprintln!("vlm: skipped {}: {reason}", path.display());
        }
    }
    let mut failed: Vec<Failure> = Vec::new();
    for err in &dataset.errors {
        eprintln!("vlm: {err}");
        failed.push(Failure {
            path: err
                .subject()
                .unwrap_or_else(|| args.dir.display().to_string()),
            error: err.to_string(),
        });
    }

    let model = load_model(&args.model)?;
    let classifier = &model.classifier;
    let cache = open_cache(&args.model, &model)?;
    let progress = progress_bar(dataset.images.len(), args.quiet, "images");
    let mut embedded: Vec<Embedded> = Vec::with_capacity(dataset.images.len());
    let summary = embedder::embed_inputs(
        classifier,
        cache.as_ref(),
        dataset.images.iter().map(|image| image.input.clone()),
        pipeline_options(&args.model),
        |batch| {
            for done in &batch {
                if let Err(err) = &done.embedding {
                    report_failure(&progress, &done.input.display, err);
                }
            }
            progress.inc(batch.len() as u64);
            embedded.extend(batch);
            Ok::<(), vlm::Error>(())
        },
    )?;
    progress.finish_and_clear();
    if let (Some(err), false) = (&summary.cache_error, args.quiet) {
        eprintln!("vlm: warning: {err}");
    }
    if summary.stats.cancelled {
        eprintln!("vlm: interrupted: no metrics were computed");
        return Ok(EXIT_INTERRUPTED);
    }

    // Results come back in input order, so the n-th result is the n-th image.
    let mut rows: Vec<&[f32]> = Vec::with_capacity(embedded.len());
    let mut truth = Vec::with_capacity(embedded.len());
    for (done, image) in embedded.iter().zip(&dataset.images) {
        match &done.embedding {
            Ok(embedding) => {
                rows.push(embedding);
                truth.push(image.label);
            }
            Err(err) => failed.push(Failure {
                path: done.input.display.clone(),
                error: err.to_string(),
            }),
        }
    }
    if rows.is_empty() {
        bail!(
            "no image under {} could be read, so there is nothing to evaluate (see the errors above)",
            args.dir.display()
        );
    }

    let mut results: Vec<SpecResult> = Vec::with_capacity(specs.len());
    for spec in &specs {
        let result = evaluation::evaluate(classifier, &dataset.labels, spec, &rows, &truth)?;
        if !args.quiet {
            warn_truncated(
                &result.prompts.prompts,
                &result.truncated,
                classifier.model().text_context(),
            );
        }
        results.push(result);
    }

    let text = if args.compare_templates.is_empty() {
        let result = &results[0];
        write_files(args, result)?;
        if let Some(path) = &args.report {
            let (max_mp, quiet) = (args.model.max_megapixels, args.quiet);
            super::report::write_eval_page(
                path, classifier, &dataset, &embedded, &failed, result, max_mp, quiet,
            )?;
        }
        match args.format {
            EvalFormat::Table => report::table(result, failed.len(), args.most_confused),
            EvalFormat::Json => report::json(result, &failed, args.most_confused)?,
        }
    } else {
        evaluation::sort_best_first(&mut results);
        match args.format {
            EvalFormat::Table => report::comparison_table(&results, failed.len()),
            EvalFormat::Json => report::comparison_json(&results, &failed)?,
        }
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;

    if !args.quiet {
        eprintln!(
            "vlm: evaluated {}, failed {}, skipped {} in {:.1} s",
            rows.len(),
            failed.len(),
            dataset.skipped.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if args.verbose {
        report_encoder(&summary.stats, cache.as_ref());
    }
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

/// Writes the confusion matrix CSV and the heat map, when asked for.
fn write_files(args: &EvalArgs, result: &SpecResult) -> anyhow::Result<()> {
    let names = report::class_names(result);
    let e = &result.evaluation;
    if let Some(path) = &args.confusion_csv {
        std::fs::write(path, report::confusion_csv(&names, &e.confusion)).with_context(|| {
            format!(
                "cannot write the confusion matrix to {}; choose another --confusion-csv",
                path.display()
            )
        })?;
    }
    if let Some(path) = &args.heatmap {
        let title = format!(
            "{} — top-1 {:.1}% on {} images",
            result.spec.describe(),
            e.top1 * 100.0,
            e.images()
        );
        std::fs::write(path, heatmap::render(&names, &e.confusion, &title)).with_context(|| {
            format!(
                "cannot write the heat map to {}; choose another --heatmap",
                path.display()
            )
        })?;
    }
    Ok(())
}
