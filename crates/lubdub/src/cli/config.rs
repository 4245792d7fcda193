//! `lubdub config check [FILE] [FLAGS]` and `lubdub config example`:
//! checks a configuration as `lubdub server` would start with it (the same
//! layers, the same validation, the same files read, no port bound) and
//! prints the settings in effect as TOML; prints the example file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgMatches, Args, Subcommand};

use super::serve::ServerArgs;
use super::settings::layers::{self, Given};
use super::settings::render::render;

/// The example configuration file, every key with its meaning and default.
const EXAMPLE: &str = include_str!("../../../../deploy/lubdub.toml");

/// Subcommands of `lubdub config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file (and any flags of `lubdub server` laid
    /// over it, and the LUBDUB_* variables) as `lubdub server` would start
    /// with it, reading the auth file, token secret, admin token and TLS files it
    /// names, without binding a port; print the settings in effect as
    /// TOML. An error names the file, the line and the key; exit status 1.
    #[command(after_help = "Examples:\n  \
        lubdub config check /etc/lubdub/lubdub.toml\n  \
        lubdub config check /etc/lubdub/lubdub.toml --max-missed 7\n  \
        lubdub config check --max-missed 7      (flags and defaults alone)")]
    Check(Box<CheckArgs>),
    /// Print an example configuration file: every key, its meaning and its
    /// default (deploy/lubdub.toml in the repository).
    Example,
}

/// Flags of `lubdub config check`.
#[derive(Debug, Args)]
struct CheckArgs {
    /// The configuration file to check (the same as --config FILE).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `lubdub config`; `matches` are those of `lubdub config`.
///
/// # Errors
/// Whatever makes the configuration unusable, for printing.
pub fn run(args: ConfigArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check(args) => {
            let matches = matches
                .subcommand_matches("check")
                .context("the matches of `config check`")?;
            check(*args, matches)
        }
        ConfigCommand::Example => {
            print!("{EXAMPLE}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(args: CheckArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    // Warnings (secret files others may read) on stderr, as a start gives them.
    let _log_writer = super::init_logging("warn", super::LogFormat::Text);
    let file = args.file.or(args.server.config);
    let resolved = layers::load(file.as_deref(), &Given::from_matches(matches))?;
    lubdub::server::check(&resolved.server_config()?).context("lubdub server would not start")?;
    if let Some(path) = &resolved.settings.admin_token_file {
        lubdub::admin::AdminToken::from_file(path).context("lubdub server would not start")?;
    }
    resolved
        .settings
        .webhook_config()
        .context("lubdub server would not start")?;
    print!(
        "{}",
        render(&resolved).context("cannot print the settings")?
    );
    Ok(ExitCode::SUCCESS)
}
