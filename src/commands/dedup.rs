//! `vlm dedup`: near-duplicate groups by embedding similarity ([`vlm::dedup`]), among the
//! images given or the rows of a database table; writes the groups, optionally a review
//! page and group folders of links. Never moves or deletes a file.

use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::{DedupFrom, DedupSettings};
use crate::cli::DedupArgs;
use vlm::dedup::{self, Duplicates, Images};
use vlm::job::Tally;
use vlm::organize::Organizer;
use vlm::output;
use vlm::review;
use vlm::session::Session;
use vlm::store::ModelStamp;

pub fn run(args: &DedupArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let settings = DedupSettings::resolve(args)?;
    let printer = Printer::from(settings.verbosity);
    let (session, found, mut tally) = find(&settings, &printer)?;
    let Some(duplicates) = found else {
        printer.error("interrupted: no groups were written");
        return Ok(ExitStatus::Interrupted);
    };
    duplicates.say_search(&printer);
    output::write_document(settings.output.as_deref(), |out| {
        dedup::write_groups(out, settings.format, &duplicates.records())
    })?;
    if let Some(options) = &settings.page {
        review::create_parent(&options.output)?;
        let summary = review::write_duplicates_page(&duplicates, options)?;
        let seconds = started.elapsed().as_secs_f64();
        printer.note(summary.describe(&options.output, false, seconds));
    }
    if let Some(o) = &settings.organize {
        let mut organizer = Organizer::new(&o.dest, o.mode, o.dry_run)?;
        tally.failed += duplicates.organize(&mut organizer, &printer);
    }
    let seconds = started.elapsed().as_secs_f64();
    duplicates.say_summary(tally.failed, tally.skipped, seconds, &printer);
    session.say_stats(&tally, &printer);
    Ok(ExitStatus::of(&tally))
}

/// The groups among the images given (embedded by the job, exactly compared) or the rows
/// of a table (through its index); `None` when Ctrl-C stopped it.
fn find(
    settings: &DedupSettings,
    printer: &Printer,
) -> anyhow::Result<(Session, Option<Duplicates>, Tally)> {
    Ok(match &settings.source {
        DedupFrom::Inputs(inputs) => {
            let mut found = inputs.find(printer)?;
            let session = Session::open(&settings.model, printer)?;
            let mut images = Images::default();
            let inputs = std::mem::take(&mut found.inputs);
            let mut tally = session.job().run(inputs, &mut images, printer)?;
            tally.add_found(&found);
            let cancelled = tally.cancelled;
            let groups = (!cancelled).then(|| images.duplicates(settings.threshold));
            (session, groups.transpose()?, tally)
        }
        DedupFrom::Database(address) => {
            // The model only names the table's rows: a table of another one is refused.
            let session = Session::open(&settings.model, printer)?;
            let stamp = ModelStamp::of(&session.files, &session.checkpoint);
            let cancel = settings.model.pipeline.cancel;
            let found = dedup::in_store(address, stamp, settings.threshold, cancel, printer)?;
            (session, found, Tally::default())
        }
    })
}
