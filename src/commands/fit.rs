//! `vlm fit`: train a linear probe on labelled folders and write it for `classify --probe`.

use std::time::Instant;

use anyhow::bail;

use super::{Printer, Session, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED};
use crate::cli::FitArgs;
use vlm::dataset::{Dataset, LabelMap};
use vlm::labels::{PromptSet, Template, Templates};
use vlm::probe::{ModelIdentity, Probe, Sample, TrainOptions, TrainReport};
use vlm::Checkpoint;

pub fn run(args: &FitArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let printer = Printer::new(args.quiet, args.verbose);
    let options = train_options(args)?;
    let mapping = args
        .labels_file
        .as_deref()
        .map(LabelMap::read)
        .transpose()?;
    let dataset = Dataset::open(&args.dir, &args.filter.options(), mapping.as_ref())?;
    let mut failed = dataset.errors.len();
    report_dataset(&printer, &dataset);

    let session = Session::open(&args.model, printer)?;
    let classifier = session.classifier();
    let identity = ModelIdentity::of(&session.model.files, classifier)?;
    // One slot per image, in order, so a failed image never shifts the labels after it.
    let mut embeddings: Vec<Option<Vec<f32>>> = Vec::with_capacity(dataset.images.len());
    let inputs = dataset.images.iter().map(|i| i.input.clone()).collect();
    let stats = session.embed(inputs, "images", |_, batch| {
        for done in batch {
            failed += usize::from(done.embedding.is_err());
            embeddings.push(done.embedding.ok());
        }
        Ok::<(), vlm::Error>(())
    })?;
    let printer = &session.printer;
    if stats.cancelled {
        printer.error("interrupted: no probe was written");
        return Ok(EXIT_INTERRUPTED);
    }
    if embeddings.len() != dataset.images.len() {
        bail!(
            "internal error: {} embedding results for {} images; please report this",
            embeddings.len(),
            dataset.images.len()
        );
    }
    // Split the images that were read, as if the unreadable ones were not there, so a broken
    // file changes neither the labels nor the split of the others. `split_among` holds out
    // at least one image of every label with two or more; 0 means none.
    let readable = (0..dataset.images.len()).filter(|&i| embeddings[i].is_some());
    let (train, held) = if args.holdout > 0.0 {
        dataset.split_among(readable, args.holdout, args.seed)
    } else {
        (readable.collect(), Vec::new())
    };
    let samples = |indices: &[usize]| -> Vec<Sample> {
        indices
            .iter()
            .filter_map(|&i| {
                Some(Sample {
                    embedding: embeddings[i].as_deref()?,
                    label: dataset.images[i].label,
                })
            })
            .collect()
    };
    let (train, held) = (samples(&train), samples(&held));
    let (mut probe, report) =
        Probe::train(dataset.labels.clone(), identity, &train, &held, &options)?;
    probe.note("seed", args.seed);
    probe.note("holdout", args.holdout);
    probe.save(&args.out)?;
    print_report(args, classifier, &dataset.labels, &report, &train, &held)?;
    printer.note(format_args!(
        "trained on {} images, held out {}, failed {} in {:.1} s",
        train.len(),
        held.len(),
        failed,
        started.elapsed().as_secs_f64()
    ));
    session.report(&stats);
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

/// The training settings, checked before anything is loaded.
fn train_options(args: &FitArgs) -> anyhow::Result<TrainOptions> {
    if !(0.0..1.0).contains(&args.holdout) {
        bail!(
            "--holdout must be at least 0 and less than 1, got {}",
            args.holdout
        );
    }
    let options = TrainOptions {
        l2: args.l2,
        learning_rate: args.learning_rate,
        max_epochs: args.epochs,
        patience: args.patience,
    };
    options.check()?;
    Ok(options)
}

/// Reports the folder walk's errors and skips, and labels without images.
fn report_dataset(printer: &Printer, dataset: &Dataset) {
    for err in &dataset.errors {
        printer.error(err);
    }
    for (path, reason) in &dataset.skipped {
        printer.detail(format_args!("skipped {}: {reason}", path.display()));
    }
    for (label, _) in dataset
        .labels
        .iter()
        .zip(dataset.class_counts())
        .filter(|(_, n)| *n == 0)
    {
        printer.warn(format_args!(
            "no images of {label:?}: the probe will never choose it"
        ));
    }
}

/// The probe file, the epochs, and train, held-out and zero-shot accuracy, on stdout.
fn print_report(
    args: &FitArgs,
    classifier: &Checkpoint,
    labels: &[String],
    report: &TrainReport,
    train: &[Sample],
    held: &[Sample],
) -> anyhow::Result<()> {
    println!(
        "wrote {}: {} labels; {} epochs, kept epoch {}",
        args.out.display(),
        labels.len(),
        report.epochs,
        report.best_epoch
    );
    println!(
        "{}",
        accuracy_line("train", report.train_accuracy, train.len(), "images")
    );
    let Some(accuracy) = report.held_out_accuracy else {
        println!("held-out accuracy: none (no images held out)");
        return Ok(());
    };
    println!(
        "{}",
        accuracy_line("held-out", accuracy, held.len(), "held-out images")
    );
    if let Some(zero_shot) = zero_shot_accuracy(classifier, labels, held)? {
        let what = format!(
            "held-out images, prompt \"{}\"",
            vlm::labels::DEFAULT_TEMPLATE
        );
        println!(
            "{}",
            accuracy_line("zero-shot", zero_shot, held.len(), &what)
        );
    }
    Ok(())
}

/// "held-out accuracy:   87.5% (7 of 8 held-out images)".
fn accuracy_line(name: &str, accuracy: f64, total: usize, what: &str) -> String {
    let right = (accuracy * total as f64).round() as usize;
    format!(
        "{:<19}{:>6.1}% ({right} of {total} {what})",
        format!("{name} accuracy:"),
        accuracy * 100.0
    )
}

/// How well the labels as prompts do on the same images, for comparison; `None` when the
/// label names cannot be prompts (e.g. an empty synonym in "a|").
fn zero_shot_accuracy(
    classifier: &Checkpoint,
    labels: &[String],
    samples: &[Sample],
) -> anyhow::Result<Option<f64>> {
    let Ok(prompts) = PromptSet::new(labels, &Templates::single(Template::default())) else {
        return Ok(None);
    };
    if samples.is_empty() {
        return Ok(None);
    }
    let text = classifier.embed_classes(&prompts)?;
    let rows: Vec<&[f32]> = samples.iter().map(|s| s.embedding).collect();
    let ranked = classifier.rank_rows(&rows, &text)?;
    let right = ranked
        .iter()
        .zip(samples)
        .filter(|(scores, s)| scores.first().map(|top| top.index) == Some(s.label))
        .count();
    Ok(Some(right as f64 / samples.len() as f64))
}
