//! `vlm fit`: train a linear probe on labelled folders and write it for `classify --probe`
//! ([`vlm::probe`]).

use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::FitSettings;
use crate::cli::FitArgs;
use vlm::dataset::Dataset;
use vlm::probe::{self, ModelIdentity, Trained};
use vlm::session::Session;

pub fn run(args: &FitArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let s = FitSettings::resolve(args)?;
    let printer = Printer::from(s.verbosity);
    let dataset = Dataset::open_mapped(&s.dir, &s.options, s.labels_file.as_deref())?;
    probe::check_dataset(&dataset, &printer);
    let session = Session::open(&s.model, &printer)?;
    let identity = ModelIdentity::of(&session.files, &session.checkpoint)?;
    let mut rows = dataset.embed(&session.job(), &printer)?;
    if rows.tally.cancelled {
        printer.error("interrupted: no probe was written");
        return Ok(ExitStatus::Interrupted);
    }
    let trained = probe::train_on(
        &session.checkpoint,
        identity,
        &dataset,
        &rows,
        s.holdout,
        s.seed,
        &s.training,
    )?;
    trained.probe.save(&s.out)?;
    print_training(&s, &dataset.labels, &trained);
    rows.tally.failed += dataset.errors.len();
    printer.note(format_args!(
        "trained on {} images, held out {}, failed {} in {:.1} s",
        trained.train,
        trained.held,
        rows.tally.failed,
        started.elapsed().as_secs_f64()
    ));
    session.say_stats(&rows.tally, &printer);
    Ok(ExitStatus::of(&rows.tally))
}

/// The probe file, the epochs, and train, held-out and zero-shot accuracy, on stdout.
fn print_training(s: &FitSettings, labels: &[String], trained: &Trained) {
    let report = &trained.report;
    println!(
        "wrote {}: {} labels; {} epochs, kept epoch {}",
        s.out.display(),
        labels.len(),
        report.epochs,
        report.best_epoch
    );
    let line = |name: &str, accuracy: f64, total: usize, what: &str| {
        let right = (accuracy * total as f64).round() as usize;
        let name = format!("{name} accuracy:");
        println!(
            "{name:<19}{:>6.1}% ({right} of {total} {what})",
            accuracy * 100.0
        );
    };
    line("train", report.train_accuracy, trained.train, "images");
    let Some(accuracy) = report.held_out_accuracy else {
        println!("held-out accuracy: none (no images held out)");
        return;
    };
    line("held-out", accuracy, trained.held, "held-out images");
    if let Some(zero_shot) = trained.zero_shot {
        let what = format!(
            "held-out images, prompt \"{}\"",
            vlm::labels::DEFAULT_TEMPLATE
        );
        line("zero-shot", zero_shot, trained.held, &what);
    }
}
