//! `lubdub server` on SIGHUP: reads the configuration file again (when
//! there is one), lays the flags and variables of the start over it,
//! decides what changes (`settings::reload::plan`), reads the files the
//! new settings name, and hands the result to the running loop. Every
//! change is logged, one line per key; a change that needs a restart is
//! logged and left alone. A configuration that is invalid, or names a file
//! that is broken, changes nothing: the server logs why and runs on.

use std::path::PathBuf;

use lubdub::server::{self, ServerControl};
use tracing::{info, warn};

use super::settings::layers::{self, Given};
use super::settings::reload::{plan, Plan};
use super::settings::ServerSettings;

/// What a reload needs to know: where the settings came from, and which
/// are in effect.
pub struct Reloader {
    file: Option<PathBuf>,
    given: Given,
    running: ServerSettings,
    control: ServerControl,
}

impl Reloader {
    /// A reloader for a server started with `running`, from `file` (if
    /// any) under the flags and variables `given`.
    pub fn new(
        file: Option<PathBuf>,
        given: Given,
        running: ServerSettings,
        control: ServerControl,
    ) -> Self {
        Self {
            file,
            given,
            running,
            control,
        }
    }

    /// Reloads, logging what changed, or why nothing did.
    pub async fn reload(&mut self) {
        match &self.file {
            Some(file) => info!("SIGHUP: reading {} again", file.display()),
            None => info!("SIGHUP: reading the files the flags name again (no --config)"),
        }
        let file = self.file.clone();
        let given = self.given.clone();
        let running = self.running.clone();
        // Files and an argon2 hash (the auth file's decoy): off the runtime.
        let prepared = tokio::task::spawn_blocking(move || prepare(file, &given, &running)).await;
        let (plan, reload) = match prepared {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(error)) => {
                warn!("reload failed, the running configuration is kept: {error:#}");
                return;
            }
            Err(error) => {
                warn!("reload failed, the running configuration is kept: {error}");
                return;
            }
        };
        let names = reload.auth_file_names();
        if self.control.reload(reload).await.is_err() {
            warn!("reload failed: the server has stopped");
            return;
        }
        let mut applied = 0;
        for change in &plan.changes {
            match change.restart {
                None => {
                    applied += 1;
                    info!("reload: {change}");
                }
                Some(reason) => warn!("reload: {change}: {reason}; the running value stays"),
            }
        }
        log_files_read(&plan.applied, names);
        info!(
            changed = applied,
            need_restart = plan.changes.len() - applied,
            "configuration reloaded; sessions kept"
        );
        self.running = plan.applied;
    }
}

/// Reads and checks the new settings, and the files they name.
fn prepare(
    file: Option<PathBuf>,
    given: &Given,
    running: &ServerSettings,
) -> anyhow::Result<(Plan, server::Reload)> {
    let wanted = layers::load(file.as_deref(), given)?;
    // The whole of what is wanted must be valid, even the part that waits
    // for a restart; then what applies now, with what stays, must be too.
    wanted.server_config()?;
    let plan = plan(running, &wanted.settings)?;
    let reload = server::prepare_reload(plan.applied.server_config())?;
    Ok((plan, reload))
}

/// Says which files the reload read, so that a changed file's contents
/// (same path, new lines) show in the log too.
fn log_files_read(applied: &ServerSettings, names: Option<usize>) {
    let config = applied.server_config();
    if let (Some(file), Some(names)) = (&config.auth.auth_file, names) {
        let plural = if names == 1 { "" } else { "s" };
        info!(
            "reload: auth file {} read: {names} name{plural}",
            file.display()
        );
    }
    if let Some(file) = &config.auth.token_secret_file {
        info!("reload: token secret {} read", file.display());
    }
    if let Some(tls) = &config.tls {
        info!(
            "reload: TLS certificate {} and key {} read; new connections use them",
            tls.cert.display(),
            tls.key.display()
        );
    }
}
