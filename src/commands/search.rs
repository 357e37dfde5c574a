//! `vlm search`: rank images by cosine similarity to a text query or to an image
//! ([`vlm::search`]), among the inputs or in a database table ([`vlm::store`]).

use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::{SearchIn, SearchSettings};
use crate::cli::SearchArgs;
use vlm::output;
use vlm::search::{self, Match, Query};
use vlm::session::Session;
use vlm::store::{self, Address, ModelStamp};

pub fn run(args: &SearchArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let settings = SearchSettings::resolve(args)?;
    let printer = Printer::from(settings.verbosity);
    let query = settings.query.find()?;
    let inputs = match &settings.target {
        SearchIn::Database(address) => {
            return in_table(&settings, address, &query, &printer, started)
        }
        SearchIn::Inputs(inputs) => inputs,
    };
    let mut found = inputs.find(&printer)?;
    query.leave_out_of(&mut found.inputs, &printer);
    let session = Session::open(&settings.model, &printer)?;
    let job = session.job();
    let embedding = query.embed(&session.checkpoint, &job, &printer)?;
    let (results, mut tally) = search::rank_inputs(
        &job,
        std::mem::take(&mut found.inputs),
        &embedding,
        settings.top,
        &printer,
    )?;
    write(&settings, &results)?;
    tally.add_found(&found);
    let searched = tally.done;
    if tally.cancelled {
        printer.error(format_args!(
            "interrupted: the results rank only the {searched} images embedded before Ctrl-C"
        ));
        return Ok(ExitStatus::Interrupted);
    }
    printer.note(format_args!(
        "searched {searched} images, failed {}, skipped {} in {:.1} s",
        tally.failed,
        tally.skipped,
        started.elapsed().as_secs_f64()
    ));
    session.say_stats(&tally, &printer);
    Ok(ExitStatus::of(&tally))
}

/// `--in ADDRESS`: the rows of a database table, ranked through its index.
fn in_table(
    settings: &SearchSettings,
    address: &Address,
    query: &Query,
    printer: &Printer,
    started: Instant,
) -> anyhow::Result<ExitStatus> {
    let session = Session::open(&settings.model, printer)?;
    let embedding = query.embed(&session.checkpoint, &session.job(), printer)?;
    let stamp = ModelStamp::of(&session.files, &session.checkpoint);
    let hits = store::search_in(
        address,
        stamp,
        &embedding,
        settings.top,
        query.own_row().as_deref(),
    )?;
    let results = search::matches(hits.into_iter().map(|hit| (hit.path, hit.similarity)));
    write(settings, &results)?;
    printer.note(format_args!(
        "{} matches from {} in {:.1} s",
        results.len(),
        address.shown,
        started.elapsed().as_secs_f64()
    ));
    Ok(ExitStatus::Ok)
}

/// The ranked matches to `--output` or standard output.
fn write(settings: &SearchSettings, results: &[Match]) -> anyhow::Result<()> {
    output::write_document(settings.output.as_deref(), |out| {
        search::write_results(out, settings.format, results).map(drop)
    })?;
    Ok(())
}
