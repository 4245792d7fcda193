//! `lubdub completions SHELL` and `lubdub man [SUBCOMMAND]`: shell
//! completion scripts (clap_complete) and roff man pages (clap_mangen),
//! generated from the same clap definition as `--help`, so they never
//! drift from the flags. Both print to stdout, for packagers and users to
//! put where their shell or `man` looks.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Flags of `lubdub completions`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    lubdub completions bash > /etc/bash_completion.d/lubdub\n  \
    lubdub completions zsh > \"${fpath[1]}/_lubdub\"\n  \
    lubdub completions fish > ~/.config/fish/completions/lubdub.fish")]
pub struct CompletionsArgs {
    /// Shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Flags of `lubdub man`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    lubdub man | man -l -\n  \
    lubdub man server > /usr/local/share/man/man1/lubdub-server.1\n  \
    for page in '' server config client sessions bench simulate token passwd completions man; do\n    \
    lubdub man $page > /usr/local/share/man/man1/lubdub${page:+-$page}.1\n  \
    done")]
pub struct ManArgs {
    /// Print the page of this subcommand, lubdub-SUBCOMMAND(1), with all
    /// its flags; without it, lubdub(1), which lists the subcommands.
    subcommand: Option<String>,
}

/// Prints the completion script for `args.shell`.
///
/// # Errors
/// When stdout cannot be written.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "lubdub", &mut script);
    print(&script)
}

/// Prints lubdub(1), or lubdub-SUBCOMMAND(1).
///
/// # Errors
/// An unknown subcommand (the message lists the known ones), or stdout
/// that cannot be written.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command().disable_help_subcommand(true);
    // Building names every subcommand `lubdub-NAME` in its own page.
    command.build();
    let page = match &args.subcommand {
        None => command,
        Some(name) => command
            .get_subcommands()
            .find(|subcommand| subcommand.get_name() == name && !subcommand.is_hide_set())
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = command
                    .get_subcommands()
                    .filter(|subcommand| !subcommand.is_hide_set())
                    .map(clap::Command::get_name)
                    .collect();
                anyhow::anyhow!(
                    "lubdub has no subcommand {name:?}; man pages exist for: {}",
                    known.join(", ")
                )
            })?,
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        // The footer; subcommands carry no version of their own.
        .source(concat!("lubdub ", env!("CARGO_PKG_VERSION")))
        .render(&mut roff)
        .context("cannot render the man page")?;
    print(&roff)
}

fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
