//! `vlm bench`: throughput of this build on this machine ([`vlm::bench`]), for
//! BENCHMARKS.md and for users choosing a model, batch size or device.

use std::io::{self, Write};
use std::time::Instant;

use super::ExitStatus;
use crate::cli::settings::BenchSettings;
use crate::cli::BenchArgs;
use vlm::session::Session;

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitStatus> {
    let settings = BenchSettings::resolve(args)?;
    let started = Instant::now();
    let session = Session::load(&settings.model)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut stdout = io::stdout().lock();
    let mut say = |line: String| -> io::Result<()> {
        if settings.json {
            Ok(())
        } else {
            writeln!(stdout, "{line}")
        }
    };
    let report = vlm::bench::run(&session, load_seconds, &settings.bench, &mut say)?;
    if settings.json {
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
    }
    Ok(ExitStatus::Ok)
}
