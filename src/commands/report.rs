//! `vlm report`: a review page for a results file, or for images classified first (the
//! page is made as they are labelled, the results written beside it).

use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::{ReportSettings, ReportSource};
use crate::cli::ReportArgs;
use vlm::review::{self, PageOptions, ReviewSink};

pub fn run(args: &ReportArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let settings = ReportSettings::resolve(args)?;
    let printer = Printer::from(settings.verbosity);
    review::create_parent(&settings.output)?;
    let search_dirs = review::search_dirs(settings.source.files())?;
    let mut options = PageOptions::new(settings.output.clone(), search_dirs);
    options.self_contained = settings.self_contained;
    options.title = settings.title;
    options.max_pixels = review::max_pixels(settings.max_megapixels);
    let (summary, status) = match settings.source {
        ReportSource::Results(files) => (
            review::write_results_page(&files, &options)?,
            ExitStatus::Ok,
        ),
        ReportSource::Classify {
            settings: classify,
            results,
        } => {
            let name = results
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let mut page = ReviewSink::start(&options, &name.unwrap_or_default())?;
            let run = classify
                .classify
                .run(&classify.model, &mut page, &printer)?;
            if let Some(run) = &run {
                run.say_summary(started.elapsed().as_secs_f64(), &printer);
            }
            let Some(run) = run.filter(|run| !run.tally.cancelled) else {
                printer.error(format_args!(
                    "interrupted: no page was written; the results so far are in {}",
                    results.display()
                ));
                return Ok(ExitStatus::Interrupted);
            };
            (page.finish()?, ExitStatus::of(&run.tally))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    printer.note(summary.describe(&settings.output, settings.self_contained, seconds));
    Ok(status)
}
