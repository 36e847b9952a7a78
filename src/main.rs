//! The `edgescope` binary: command-line subcommands over the library (the desktop app arrives with `gui`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = edgescope::cli::Cli::parse();
    match edgescope::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
