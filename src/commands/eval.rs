//! `vlm eval`: zero-shot accuracy on a labelled folder, for one prompt spec or several
//! side by side.

use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

use super::{warn_truncated, Printer, Session, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED};
use crate::cli::{EvalArgs, EvalFormat, ModelArgs};
use vlm::dataset::{Dataset, LabelMap};
use vlm::embedder::Embedded;
use vlm::evaluation::heatmap;
use vlm::evaluation::summary::{self, Failure};
use vlm::evaluation::{self, SpecResult};
use vlm::labels::PromptSet;
use vlm::labels::PromptSpec;

pub fn run(args: &EvalArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let printer = Printer::new(args.quiet, args.verbose);
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
        if !args.models.is_empty() {
            bail!("--report makes the page of one model's evaluation; leave out --models, or run vlm eval --report once per model");
        }
        super::report::check_eval_page(&args.dir, page)?;
    }
    let specs = prompt_specs(args, &dataset.labels)?;
    let failed = dataset_failures(&printer, &dataset, &args.dir);

    if !args.models.is_empty() {
        return compare_models(args, &dataset, &specs[0], failed);
    }
    let Some(run) = evaluate_model(args, &args.model, printer, &dataset, &specs, failed)? else {
        return Ok(EXIT_INTERRUPTED);
    };
    let ModelRun {
        session,
        stats,
        mut results,
        failed,
        evaluated,
        ..
    } = run;
    let printer = &session.printer;
    let text = render(args, &mut results, &failed)?;
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;

    printer.note(format_args!(
        "evaluated {}, failed {}, skipped {} in {:.1} s",
        evaluated,
        failed.len(),
        dataset.skipped.len(),
        started.elapsed().as_secs_f64()
    ));
    session.report(&stats);
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

/// One checkpoint's evaluation of the dataset.
struct ModelRun {
    session: Session,
    stats: vlm::pipeline::PipelineStats,
    results: Vec<SpecResult>,
    failed: Vec<Failure>,
    evaluated: usize,
    /// Images embedded per second (decoding included; cached images count too).
    images_per_second: f64,
}

/// Embeds the dataset's images with the checkpoint of `model_args` and scores every spec;
/// `None` when interrupted.
fn evaluate_model(
    args: &EvalArgs,
    model_args: &ModelArgs,
    printer: Printer,
    dataset: &Dataset,
    specs: &[PromptSpec],
    mut failed: Vec<Failure>,
) -> anyhow::Result<Option<ModelRun>> {
    let session = Session::open(model_args, printer)?;
    let embedding_started = Instant::now();
    let mut embedded: Vec<Embedded> = Vec::with_capacity(dataset.images.len());
    let inputs = dataset.images.iter().map(|i| i.input.clone()).collect();
    let stats = session.embed(inputs, "images", |_, batch| {
        embedded.extend(batch);
        Ok::<(), vlm::Error>(())
    })?;
    let seconds = embedding_started.elapsed().as_secs_f64();
    let printer = &session.printer;
    if stats.cancelled {
        printer.error("interrupted: no metrics were computed");
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
    let classifier = session.classifier();
    let mut results: Vec<SpecResult> = Vec::with_capacity(specs.len());
    for spec in specs {
        let result = evaluation::evaluate(classifier, &dataset.labels, spec, &rows, &truth)?;
        let context = classifier.model().text_context();
        warn_truncated(printer, &result.prompts.prompts, &result.truncated, context);
        results.push(result);
    }
    if let (Some(page), [result]) = (&args.report, results.as_slice()) {
        let max_mp = model_args.max_megapixels;
        super::report::write_eval_page(
            page, classifier, dataset, &embedded, &failed, result, max_mp, printer,
        )?;
    }
    let evaluated = rows.len();
    Ok(Some(ModelRun {
        images_per_second: if seconds > 0.0 {
            embedded.len() as f64 / seconds
        } else {
            0.0
        },
        session,
        stats,
        results,
        failed,
        evaluated,
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
        let printer = Printer::new(args.quiet, args.verbose);
        printer.note(format_args!("evaluating {name}"));
        let run = evaluate_model(
            args,
            &model_args,
            printer,
            dataset,
            std::slice::from_ref(spec),
            failed.clone(),
        )
        .with_context(|| format!("while evaluating --models {name}"))?;
        let Some(mut run) = run else {
            return Ok(EXIT_INTERRUPTED);
        };
        any_failed |= !run.failed.is_empty();
        let classifier = run.session.classifier();
        let weights_bytes =
            std::fs::metadata(&run.session.model.files.weights).map_or(0, |m| m.len());
        rows.push(summary::ModelRow {
            model: name.to_string(),
            family: classifier.family().name(),
            scoring: classifier.scoring().name(),
            evaluation: run.results.remove(0).evaluation,
            images_per_second: run.images_per_second,
            weights_bytes,
            failed: run.failed.len(),
        });
    }
    if rows.is_empty() {
        bail!("--models names no model; give a comma-separated list such as clip-b32,siglip-b16");
    }
    summary::sort_models_best_first(&mut rows);
    let text = match args.format {
        EvalFormat::Table => summary::models_table(&rows),
        EvalFormat::Json => summary::models_json(&rows)?,
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

/// The prompt specs to measure, checked against the labels before any image is embedded.
fn prompt_specs(args: &EvalArgs, labels: &[String]) -> anyhow::Result<Vec<PromptSpec>> {
    let specs = if args.compare_templates.is_empty() {
        vec![PromptSpec::from_options(
            &args.prompts.template,
            args.prompts.templates.as_deref(),
        )?]
    } else {
        evaluation::parse_specs(&args.compare_templates)?
    };
    for spec in &specs {
        PromptSet::new(labels, &spec.templates)?;
    }
    Ok(specs)
}

/// Reports what the folder walk skipped (with `--verbose`) and could not read.
fn dataset_failures(printer: &Printer, dataset: &Dataset, dir: &Path) -> Vec<Failure> {
    for (path, reason) in &dataset.skipped {
        printer.detail(format_args!("skipped {}: {reason}", path.display()));
    }
    dataset
        .errors
        .iter()
        .map(|err| {
            printer.error(err);
            Failure {
                path: err.subject().unwrap_or_else(|| dir.display().to_string()),
                error: err.to_string(),
            }
        })
        .collect()
}

/// The report for one spec (and its files), or the comparison of several, best first.
fn render(
    args: &EvalArgs,
    results: &mut [SpecResult],
    failed: &[Failure],
) -> anyhow::Result<String> {
    Ok(if args.compare_templates.is_empty() {
        let result = &results[0];
        write_files(args, result)?;
        match args.format {
            EvalFormat::Table => summary::table(result, failed.len(), args.most_confused),
            EvalFormat::Json => summary::json(result, failed, args.most_confused)?,
        }
    } else {
        evaluation::sort_best_first(results);
        match args.format {
            EvalFormat::Table => summary::comparison_table(results, failed.len()),
            EvalFormat::Json => summary::comparison_json(results, failed)?,
        }
    })
}

/// Writes the confusion matrix CSV and the heat map, when asked for.
fn write_files(args: &EvalArgs, result: &SpecResult) -> anyhow::Result<()> {
    let names = summary::class_names(result);
    let e = &result.evaluation;
    if let Some(path) = &args.confusion_csv {
        std::fs::write(path, summary::confusion_csv(&names, &e.confusion)).with_context(|| {
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
