//! The `vlm` command: parses arguments and wires them to the library.

mod cli;
mod commands;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;

use cli::{Cli, Command, INTERRUPTED};
use commands::ExitStatus;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // The process exits right after dropping its model: a pack file it was writing is
    // finished by a detached process, so the exit does not wait for the disk.
    vlm::model::finish_pack_files_detached(true);
    if let Some(threads) = cli.command.threads() {
        // candle reads RAYON_NUM_THREADS for every matrix multiply; set before any other
        // thread exists, so nothing reads the environment concurrently.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    // A second Ctrl-C does not wait for the batch in hand. If no handler can be set (an
    // embedding program owns SIGINT), Ctrl-C keeps its default effect; output lines already
    // written stay whole either way.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(ExitStatus::Interrupted.code()));
        }
    });
    let result = match cli.command {
        Command::Classify(args) => commands::classify::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Fit(args) => commands::fit::run(&args),
        Command::Models => commands::models::run(),
        Command::Embed(args) => commands::embed::run(&args),
        Command::Search(args) => commands::search::run(&args),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Report(args) => commands::report::run(&args),
        Command::Caption(args) => commands::caption::caption(&args),
        Command::Ask(args) => commands::caption::ask(&args),
        Command::Dedup(args) => commands::dedup::run(&args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => commands::serve::run(&args),
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man => commands::docs::man(),
        Command::Doctor { json } => commands::doctor::run(json),
    };
    match result {
        Ok(status) => status.into(),
        Err(err) if is_broken_pipe(&err) => ExitStatus::Ok.into(),
        // As ripgrep does when nothing matched: not an error in the arguments, exit 1.
        Err(err) if is_nothing_found(&err) => {
            eprintln!("vlm: {}", describe(&err));
            ExitStatus::SomeFailed.into()
        }
        Err(err) => {
            eprintln!("vlm: error: {}", describe(&err));
            ExitStatus::Error.into()
        }
    }
}

/// Every layer of the encoders allocates fresh multi-megabyte activations. glibc serves
/// those with mmap and unmaps them on free, so each forward pass page-faults through every
/// activation again (about 8% of the image tower's time). Serving them from the heap and
/// not trimming it lets the next batch reuse the same pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// The error and its causes, outermost first. A library error that quotes its cause in its
/// message does not also hand it on as `source()`, so each cause appears once.
fn describe(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The inputs held no image (see `--allow-empty`).
fn is_nothing_found(err: &anyhow::Error) -> bool {
    use vlm::classify::ClassifyError;
    use vlm::inputs::InputError;
    let nothing = |e: &InputError| matches!(e, InputError::NoImages { .. });
    err.chain().any(|cause| {
        cause.downcast_ref::<InputError>().is_some_and(nothing)
            || matches!(cause.downcast_ref(), Some(ClassifyError::Input(e)) if nothing(e))
    })
}

/// A closed stdout (`vlm ... | head -1`) ends the run quietly, as other Unix tools do.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
