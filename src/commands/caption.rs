//! `vlm caption` and `vlm ask`: captions or answers for each image ([`vlm::caption`] runs
//! them).

use std::time::Instant;

use super::{ExitStatus, Printer};
use crate::cli::settings::DescribeSettings;
use crate::cli::{AskArgs, CaptionArgs};

pub fn caption(args: &CaptionArgs) -> anyhow::Result<ExitStatus> {
    describe(DescribeSettings::caption(args)?, Instant::now())
}

pub fn ask(args: &AskArgs) -> anyhow::Result<ExitStatus> {
    describe(DescribeSettings::ask(args)?, Instant::now())
}

fn describe(settings: DescribeSettings, started: Instant) -> anyhow::Result<ExitStatus> {
    let printer = Printer::from(settings.verbosity);
    let run = settings.describe.run(&settings.model, &printer)?;
    run.say_summary(started.elapsed().as_secs_f64(), &printer);
    Ok(ExitStatus::of(&run.tally))
}
