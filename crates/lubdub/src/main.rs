//! The `lubdub` binary: one subcommand per job (`lubdub --help` lists them).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            let said = lubdub::report::chain(error.as_ref());
            eprintln!("error: {said}");
            ExitCode::FAILURE
        }
    }
}
