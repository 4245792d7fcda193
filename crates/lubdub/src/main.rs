//! The `lubdub` binary: parses the command line, runs one subcommand (`cli`).

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // The matches are kept: `lubdub server` tells flags given from defaults by them.
    let matches = cli::Cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match cli::run(args, &matches) {
        Ok(code) => code,
        Err(error) => {
            let said = lubdub::report::chain(error.as_ref());
            eprintln!("error: {said}");
            ExitCode::FAILURE
        }
    }
}
