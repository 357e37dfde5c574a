//! `vlm serve`: wiring only; the server is `vlm::serve`.

use std::sync::Arc;

use super::{ExitStatus, Printer};
use crate::cli::settings::ServeSettings;
use crate::cli::ServeArgs;
use vlm::serve::{self, Loaded, Server};

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitStatus> {
    let settings = ServeSettings::resolve(args)?;
    let printer = Printer::from(settings.verbosity);
    // Bound before the model loads, so that a port in use is said at once.
    let server = Server::bind(settings.server)?;
    let model = Loaded::open(&settings.model, &printer)?;
    printer.note(format_args!(
        "serving {} ({}) on http://{} (SIGTERM or Ctrl-C stops it)",
        model.id(),
        model.task().name(),
        server.local_addr()
    ));
    let served = server.run(model, serve::termination(), Arc::new(printer.clone()))?;
    printer.note(format_args!(
        "stopped after answering {} requests",
        served.requests
    ));
    Ok(ExitStatus::Ok)
}
