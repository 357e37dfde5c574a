//! `vlm doctor`: wiring only; the report is `vlm::doctor`.

use std::io::{self, Write};

use super::ExitStatus;
use vlm::doctor::{self, DoctorOptions};

pub fn run(json: bool) -> anyhow::Result<ExitStatus> {
    let options = DoctorOptions {
        bf16_kernel: vlm::session::bf16_kernel()?,
        int8_kernel: vlm::session::int8_kernel()?,
    };
    let report = doctor::examine(&options);
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render())?;
    }
    out.flush()?;
    Ok(ExitStatus::Ok)
}
