//! `vlm classify`: rank labels for each image, write the results, optionally sort the files
//! and store embeddings and labels ([`vlm::classify`] runs it).

use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::ClassifySettings;
use crate::cli::ClassifyArgs;

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let settings = ClassifySettings::resolve(args)?;
    let printer = Printer::from(settings.verbosity);
    let Some(run) = settings.classify.run(&settings.model, (), &printer)? else {
        return Ok(ExitStatus::Interrupted);
    };
    run.say_summary(started.elapsed().as_secs_f64(), &printer);
    Ok(ExitStatus::of(&run.tally))
}
