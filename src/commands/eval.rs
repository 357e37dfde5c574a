//! `vlm eval`: zero-shot accuracy on a labelled folder, for one prompt spec or several
//! side by side.

use std::io::{self, Write};
use std::time::Instant;

use anyhow::{bail, Context};

use super::{
    load_model, open_cache, pipeline_options, progress_bar, report_encoder, report_failure,
    warn_truncated, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED,
};
use crate::cli::{EvalArgs, EvalFormat, ModelArgs};
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
    let dataset = Dataset::from_dir(&args.dir, &args.filter.options(), mapping.as_ref())?;
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

    if !args.models.is_empty() {
        return compare_models(args, &dataset, &specs[0], failed);
    }
    let run = evaluate_model(args, &args.model, &dataset, &specs, failed)?;
    let Some(ModelRun {
        mut results,
        failed,
        evaluated,
        summary,
        cache,
        ..
    }) = run
    else {
        return Ok(EXIT_INTERRUPTED);
    };

    let text = if args.compare_templates.is_empty() {
        let result = &results[0];
        write_files(args, result)?;
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
            evaluated,
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

/// One checkpoint's evaluation; `None` when interrupted.
struct ModelRun {
    results: Vec<SpecResult>,
    failed: Vec<Failure>,
    evaluated: usize,
    summary: embedder::EmbedSummary,
    cache: Option<vlm::cache::EmbeddingCache>,
    /// Images embedded per second (decoding included; cached images count too).
    images_per_second: f64,
    weights_bytes: u64,
    family: vlm::family::Family,
}

/// Embeds the dataset's images with the checkpoint of `model_args` and scores every spec.
fn evaluate_model(
    args: &EvalArgs,
    model_args: &ModelArgs,
    dataset: &Dataset,
    specs: &[PromptSpec],
    mut failed: Vec<Failure>,
) -> anyhow::Result<Option<ModelRun>> {
    let model = load_model(model_args)?;
    let classifier = &model.classifier;
    let cache = open_cache(&args.model, &model)?;
    let progress = progress_bar(dataset.images.len(), args.quiet, "images");
    let embedding_started = Instant::now();
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
    let seconds = embedding_started.elapsed().as_secs_f64();
    if let (Some(err), false) = (&summary.cache_error, args.quiet) {
        eprintln!("vlm: warning: {err}");
    }
    if summary.stats.cancelled {
        eprintln!("vlm: interrupted: no metrics were computed");
        return Ok(None);
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
    for spec in specs {
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

    let weights_bytes = std::fs::metadata(&model.files.weights).map_or(0, |m| m.len());
    Ok(Some(ModelRun {
        results,
        failed,
        evaluated: rows.len(),
        images_per_second: if seconds > 0.0 {
            embedded.len() as f64 / seconds
        } else {
            0.0
        },
        weights_bytes,
        family: classifier.family(),
        summary,
        cache,
    }))
}

/// `--models`: every checkpoint on the same folder and prompts, one row each, best first.
fn compare_models(
    args: &EvalArgs,
    dataset: &Dataset,
    spec: &PromptSpec,
    failed: Vec<Failure>,
) -> anyhow::Result<u8> {
    let mut rows = Vec::with_capacity(args.models.len());
    let mut any_failed = false;
    for name in args
        .models
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
    {
        let model_args = ModelArgs {
            spec: name.to_string(),
            ..args.model.clone()
        };
        if !args.quiet {
            eprintln!("vlm: evaluating {name}");
        }
        let run = evaluate_model(
            args,
            &model_args,
            dataset,
            std::slice::from_ref(spec),
            failed.clone(),
        )
        .with_context(|| format!("while evaluating --models {name}"))?;
        let Some(mut run) = run else {
            return Ok(EXIT_INTERRUPTED);
        };
        any_failed |= !run.failed.is_empty();
        let result = run.results.remove(0);
        rows.push(report::ModelRow {
            model: name.to_string(),
            family: run.family.name(),
            scoring: run.family.scoring().name(),
            evaluation: result.evaluation,
            images_per_second: run.images_per_second,
            weights_bytes: run.weights_bytes,
            failed: run.failed.len(),
        });
    }
    if rows.is_empty() {
        bail!("--models names no model; give a comma-separated list such as clip-b32,siglip-b16");
    }
    report::sort_models_best_first(&mut rows);
    let text = match args.format {
        EvalFormat::Table => report::models_table(&rows),
        EvalFormat::Json => report::models_json(&rows)?,
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(if any_failed {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
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
