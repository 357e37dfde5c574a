//! `vlm eval`: zero-shot accuracy on a labelled folder, for one prompt spec or several side
//! by side, or for several checkpoints ([`vlm::evaluation`]).

use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::EvalSettings;
use crate::cli::EvalArgs;
use vlm::dataset::Dataset;
use vlm::evaluation::summary::{self, Failure};
use vlm::evaluation::{self, ModelRun};
use vlm::review;
use vlm::session::Session;

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let s = EvalSettings::resolve(args)?;
    let printer = Printer::from(s.verbosity);
    let dataset = Dataset::open_mapped(&s.dir, &s.options, s.labels_file.as_deref())?;
    if let Some(page) = &s.report {
        review::check_eval_page(&s.dir, page)?;
    }
    evaluation::check_specs(&s.specs, &dataset.labels)?;
    let failed = evaluation::walk_failures(&dataset, &s.dir, &printer);
    if !s.models.is_empty() {
        return compare_models(&s, &dataset, &failed, &printer);
    }
    let session = Session::open(&s.model, &printer)?;
    let run = evaluation::evaluate_model(&session, &dataset, &s.dir, &s.specs, failed, &printer)?;
    let Some(mut run) = run else {
        return Ok(ExitStatus::Interrupted);
    };
    if let Some(page) = &s.report {
        write_page(page, &s, &session, &dataset, &run, &printer)?;
    }
    if !s.compare_templates {
        let (csv, heatmap) = (s.confusion_csv.as_deref(), s.heatmap.as_deref());
        summary::write_files(&run.results[0], csv, heatmap)?;
    }
    let (compare, style, pairs) = (s.compare_templates, s.style, s.most_confused);
    print(&summary::render(
        &mut run.results,
        &run.failed,
        compare,
        style,
        pairs,
    )?)?;
    let tally = &run.rows.tally;
    printer.note(format_args!(
        "evaluated {}, failed {}, skipped {} in {:.1} s",
        tally.done,
        tally.failed,
        tally.skipped,
        started.elapsed().as_secs_f64()
    ));
    session.say_stats(tally, &printer);
    Ok(ExitStatus::of(tally))
}

/// `--report`: the page of the evaluation of one spec.
fn write_page(
    page: &Path,
    s: &EvalSettings,
    session: &Session,
    dataset: &Dataset,
    run: &ModelRun,
    printer: &Printer,
) -> anyhow::Result<()> {
    let [result] = run.results.as_slice() else {
        return Ok(());
    };
    let started = Instant::now();
    let (checkpoint, rows, max_megapixels) =
        (&session.checkpoint, &run.rows, s.model.max_megapixels);
    let written = review::write_evaluation_page(
        page,
        checkpoint,
        dataset,
        rows,
        &run.failed,
        result,
        max_megapixels,
    )?;
    printer.note(written.describe(page, false, started.elapsed().as_secs_f64()));
    Ok(())
}

/// `--models`: every checkpoint on the same images and prompts, one table, best first.
fn compare_models(
    s: &EvalSettings,
    dataset: &Dataset,
    failed: &[Failure],
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let spec = &s.specs[0];
    let compared = evaluation::compare_models(&s.models, dataset, &s.dir, spec, failed, printer)?;
    let Some(mut rows) = compared else {
        return Ok(ExitStatus::Interrupted);
    };
    print(&summary::render_models(&mut rows, s.style)?)?;
    Ok(if rows.iter().any(|row| row.failed > 0) {
        ExitStatus::SomeFailed
    } else {
        ExitStatus::Ok
    })
}

/// The results on standard output.
fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
