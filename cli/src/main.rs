//! The `store` command: a thin layer over the `store` engine that parses arguments, renders
//! results for people (`--json` for scripts) and maps outcomes to exit codes.

mod args;
mod commands;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// Exit status: snapshot committed, but some source files could not be read.
pub const EXIT_PARTIAL: u8 = 3;
/// Exit status: error, nothing committed.
pub const EXIT_ERROR: u8 = 1;

fn main() -> ExitCode {
    let matches = args::Cli::command().get_matches();
    let cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match commands::run(cli, &matches) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A reader of our stdout went away (`store ls | head`): not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io =
            c.downcast_ref::<std::io::Error>().or_else(|| match c.downcast_ref::<store::Error>() {
                Some(store::Error::Io { cause, .. }) => Some(cause),
                _ => None,
            });
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
