//! `lubdub token`: mints a token for a name from a secret file, or creates
//! a new secret file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use lubdub::auth::grants::Grants;
use lubdub::auth::token::{parse_ttl, TokenSecret};

/// Flags of `lubdub token`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    install -d -m 0700 /etc/lubdub\n  \
    lubdub token --new-secret /etc/lubdub/token.secret\n  \
    (umask 077 && lubdub token --secret-file /etc/lubdub/token.secret --name alice --ttl 30d > alice.token)\n  \
    lubdub token --secret-file /etc/lubdub/token.secret --name bob --join '#lobby,#match:*' --watch '#lobby' > bob.token\n\n\
    umask 077 keeps the token file private to you. Give the server the same file with `lubdub server --token-secret FILE`; give the client its \
    token with `lubdub client --credential-file alice.token` (or LUBDUB_CREDENTIAL).")]
pub struct TokenArgs {
    /// Create a secret file of 32 random bytes (mode 0600) and exit. Its
    /// directory must exist (e.g. `install -d -m 0700 /etc/lubdub`).
    /// Never overwrites: every token signed with an existing secret would
    /// stop working.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["secret_file", "name"])]
    new_secret: Option<PathBuf>,
    /// Secret file to sign with (at least 32 bytes; the server's --token-secret).
    #[arg(long, value_name = "FILE", required_unless_present = "new_secret")]
    secret_file: Option<PathBuf>,
    /// Name the token grants.
    #[arg(long, required_unless_present = "new_secret")]
    name: Option<String>,
    /// How long the token is valid, like 30d, 12h or 90m (at most 3650d).
    /// Tokens cannot be revoked short of changing the secret, so keep it short.
    #[arg(long, default_value = "30d", value_parser = parse_ttl)]
    ttl: Duration,
    /// Rooms the name may join: `#lobby`, a prefix such as `#match:*`, or
    /// `*` for any (comma-separated or repeated). Without it the token
    /// joins no room.
    #[arg(long, value_name = "ROOMS")]
    join: Vec<String>,
    /// Names and rooms the name may watch (`bob`, `#lobby`, `team-*`, `*`;
    /// comma-separated or repeated). Without it the token watches nothing,
    /// so that watching cannot be used to find out who exists.
    #[arg(long, value_name = "TARGETS")]
    watch: Vec<String>,
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.new_secret {
        TokenSecret::create(&path)?;
        eprintln!(
            "created {} (32 random bytes, mode 0600); keep it secret: whoever reads it can mint tokens for any name",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(secret_file), Some(name)) = (args.secret_file, args.name) else {
        anyhow::bail!("give --secret-file and --name, or --new-secret");
    };
    let grants = Grants::new(&args.join, &args.watch)
        .map_err(|error| anyhow::anyhow!("bad --join or --watch: {error}"))?;
    let secret = TokenSecret::load(&secret_file)?;
    let expires_at = SystemTime::now() + args.ttl;
    let token = secret
        .mint_with(&name, expires_at, &grants)
        .with_context(|| format!("cannot mint a token for {name:?}"))?;
    println!("{token}");
    let granting = if grants.is_empty() {
        String::new()
    } else {
        format!(", granting {}", grants.text())
    };
    eprintln!(
        "token for {name}, valid until {}{granting}",
        humantime::format_rfc3339_seconds(expires_at)
    );
    Ok(ExitCode::SUCCESS)
}
