//! The `store` command: a thin layer over the `store` engine that parses arguments, renders
//! results for people (`--json` for scripts) and maps outcomes to exit codes.

mod args;
mod commands;
mod metrics;
mod output;
mod password;
mod profile;
mod progress;
mod signals;

use std::process::ExitCode;

use clap::FromArgMatches;

/// Exit status: snapshot committed, but some source files could not be read; restore done, but
/// some entries could not be made.
pub const EXIT_PARTIAL: u8 = 3;
/// Exit status: error, nothing committed.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: there is no repository at that location.
pub const EXIT_NO_REPOSITORY: u8 = 10;
/// Exit status: the repository is locked by another process.
pub const EXIT_LOCKED: u8 = 11;
/// No key of the repository opens with the password given (restic's code).
const EXIT_WRONG_PASSWORD: u8 = 12;

fn main() -> ExitCode {
    let matches = commands::command().get_matches();
    let cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let started = std::time::Instant::now();
    if let Some(path) = &cli.log_file {
        let command = matches.subcommand_name().unwrap_or("store");
        if let Err(e) = output::open_log(path, command) {
            eprintln!("store: error: cannot open the log file {}: {e}", path.display());
            return ExitCode::from(EXIT_ERROR);
        }
        let args: Vec<String> =
            std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
        output::log(&format!("started: {}", args.join(" ")));
    }
    let code = match commands::run(cli, &matches) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            if code == signals::exit_code()
                && engine_error(&e, |s| matches!(s, store::Error::Interrupted))
            {
                crate::output::stderr!("store: interrupted: {e:#}");
            } else {
                crate::output::stderr!("store: error: {e:#}");
            }
            ExitCode::from(code)
        }
    };
    let status = (0u8..=255).find(|c| ExitCode::from(*c) == code).unwrap_or(EXIT_ERROR);
    match metrics::finish(status, started.elapsed()) {
        Ok(Some(path)) => output::log(&format!("metrics written to {}", path.display())),
        Ok(None) => {}
        Err(e) => crate::output::stderr!("store: error: cannot write the metrics file: {e}"),
    }
    output::log(&format!("finished: exit {status} after {:.1} s", started.elapsed().as_secs_f64()));
    code
}

/// Whether an engine error in `e`'s chain satisfies `test`.
fn engine_error(e: &anyhow::Error, test: impl Fn(&store::Error) -> bool) -> bool {
    e.chain().any(|c| c.downcast_ref::<store::Error>().is_some_and(&test))
}

/// The documented exit status of a failed command (README "Exit codes").
fn exit_code(e: &anyhow::Error) -> u8 {
    if engine_error(e, |s| matches!(s, store::Error::Interrupted)) {
        signals::exit_code()
    } else if engine_error(e, |s| {
        matches!(s, store::Error::NotARepository { .. } | store::Error::ConfigMissing { .. })
    }) {
        EXIT_NO_REPOSITORY
    } else if engine_error(e, |s| matches!(s, store::Error::Locked { .. })) {
        EXIT_LOCKED
    } else if engine_error(e, |s| matches!(s, store::Error::WrongPassword { .. })) {
        EXIT_WRONG_PASSWORD
    } else {
        EXIT_ERROR
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
