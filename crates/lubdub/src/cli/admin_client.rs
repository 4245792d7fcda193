//! How the CLI's commands reach the admin API: the address, and the bearer
//! token a server with `--admin-token-file` asks for; refusals are told as
//! the server's own text, not as an unreachable server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::parse_admin_addr;

/// The flags that say where the admin API is and how to be let in.
#[derive(Debug, Clone, Args)]
pub struct AdminTarget {
    /// Address of the server's admin API.
    #[arg(long, default_value = super::DEFAULT_ADMIN, value_parser = parse_admin_addr)]
    pub admin: SocketAddr,
    /// File holding the admin API's bearer token (the server's
    /// --admin-token-file).
    #[arg(long, value_name = "FILE", env = "LUBDUB_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl AdminTarget {
    /// The `Authorization` header value, if a token file is given.
    ///
    /// # Errors
    /// The file cannot be read or is empty.
    pub fn authorization(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            bail!("the admin token file {} is empty", path.display());
        }
        Ok(Some(format!("Bearer {token}")))
    }

    /// The body of `GET path` (with its query).
    ///
    /// # Errors
    /// The server cannot be reached, or answers other than 200 (its text
    /// is the error).
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{}{path}", self.admin);
        let mut request = ureq::get(&url).config().http_status_as_error(false).build();
        if let Some(authorization) = self.authorization()? {
            request = request.header("Authorization", &authorization);
        }
        let mut response = request.call().with_context(|| {
            format!(
                "cannot reach the admin API at {url} (is `lubdub server` running, with --admin {}?)",
                self.admin
            )
        })?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .context("cannot read the admin API's answer")?;
        if status == 401 && self.admin_token_file.is_none() {
            bail!("the admin API at {url} needs a token: give --admin-token-file FILE (or LUBDUB_ADMIN_TOKEN_FILE)");
        }
        if !status.is_success() {
            bail!("the admin API at {url} answered {status}: {}", body.trim());
        }
        Ok(body)
    }
}
