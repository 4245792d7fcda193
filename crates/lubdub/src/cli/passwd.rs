//! `lubdub passwd`: adds or replaces a name's line in an auth file. The
//! secret is generated (and printed once) or read from stdin; only its
//! argon2id hash is stored.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lubdub::auth::{file, password, private_file};
use lubdub::core::protocol::handshake::validate_name;

/// Flags of `lubdub passwd`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
    (umask 077 && lubdub passwd --file /etc/lubdub/auth --name alice > alice.secret)\n\n\
    umask 077 keeps the printed secret's file private to you. The auth file is created if \
    missing (its directory must exist) and always written with mode 0600; an existing one \
    keeps its owner and group. Give the server the \
    file with `lubdub server --auth-file FILE`; give the client its secret with \
    `lubdub client --credential-file alice.secret` (or LUBDUB_CREDENTIAL).")]
pub struct PasswdArgs {
    /// Auth file to edit (created if missing, mode 0600; its directory must exist).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Name whose line to add or replace.
    #[arg(long)]
    name: String,
    /// Read the secret from the first line of stdin instead of generating
    /// one (at least 16 bytes). By default a random 192-bit secret is
    /// generated and printed once on stdout.
    #[arg(long)]
    secret_stdin: bool,
}

pub fn run(args: PasswdArgs) -> anyhow::Result<ExitCode> {
    validate_name(&args.name).context("invalid --name")?;
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", args.file.display()))
        }
    };
    // A broken file is reported before a secret is made for it.
    file::AuthFile::parse(&text).map_err(|error| match error {
        file::AuthFileError::Line { line, error, .. } => {
            anyhow::anyhow!("{}, line {line}: {error}", args.file.display())
        }
        other => other.into(),
    })?;
    let (secret, generated) = if args.secret_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the secret from stdin")?;
        // Clients trim their credential files the same way.
        (line.trim().to_owned(), false)
    } else {
        (password::generate_secret(), true)
    };
    password::check_chosen_secret(secret.as_bytes())?;
    let hash = password::hash(secret.as_bytes(), password::default_params())?;
    let edited = file::set_entry(&text, &args.name, &hash)?;
    private_file::replace(&args.file, &edited)
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    if generated {
        println!("{secret}");
        eprintln!(
            "secret for {} printed above, once: only its hash is stored in {}",
            args.name,
            args.file.display()
        );
    } else {
        eprintln!(
            "stored the hash of {}'s secret in {}",
            args.name,
            args.file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
