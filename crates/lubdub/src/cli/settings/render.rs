//! The settings in effect as a configuration file (`lubdub config check`):
//! every key in the order of `--help`, with its value as the file would
//! write it and, when it was not the default, where it came from. A key
//! with no value (an optional file or a computed default) is a comment
//! saying so. Files are named by path; no secret is ever printed.

use std::fmt::Write;

use lubdub::server::ServerConfig;

use super::layers::{Origin, Resolved};

/// The settings `resolved` as TOML: read back as a file, it gives the
/// same settings (less the computed defaults, which stay computed).
///
/// # Errors
/// When a path is not UTF-8 (TOML strings are).
pub fn render(resolved: &Resolved) -> Result<String, toml::ser::Error> {
    let table = toml::Table::try_from(&resolved.settings)?;
    let config = resolved.settings.server_config();
    let mut text = String::from(
        "# lubdub server: the configuration in effect (defaults < file < environment < flags)\n",
    );
    if let Some(file) = &resolved.file {
        let _ = writeln!(text, "# configuration file: {}", file.display());
    }
    for (key, _) in super::keys() {
        match table.get(&key) {
            Some(value) => {
                let _ = write!(text, "{key} = {value}");
                match resolved.origin(&key) {
                    Origin::Default => {}
                    origin => {
                        let _ = write!(text, "  # from {origin}");
                    }
                }
                text.push('\n');
            }
            None => {
                let _ = writeln!(text, "# {key}: {}", unset(&key, &config));
            }
        }
    }
    Ok(text)
}

/// What an unset key means.
fn unset(key: &str, config: &ServerConfig) -> String {
    match key {
        "max-connections" => format!(
            "not set: the open-file limit minus 64 and admin-max-connections, now {}",
            config.connection_cap()
        ),
        "max-outbound-total" => format!(
            "not set: 1/16 of the machine's memory (64 MiB to 4 GiB), now {}",
            config.outbound_total_cap()
        ),
        "verifier-threads" => format!(
            "not set: one per core, now {}",
            config.auth.verifier_threads
        ),
        _ => "not set".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::file::ConfigFile;
    use super::super::layers::{resolve, Given};
    use super::*;

    #[test]
    fn every_key_is_printed_and_reads_back_as_the_same_settings() {
        let file = ConfigFile::parse(
            Path::new("lubdub.toml"),
            "interval = \"1m30s\"\nauth-file = \"/etc/lubdub/auth\"\ntcp-keepalive = \"off\"\n",
        )
        .expect("valid");
        let resolved = resolve(Some(&file), &Given::default()).expect("valid");
        let text = render(&resolved).expect("renders");
        assert!(
            text.contains("\ninterval = \"1m 30s\"  # from line 1 of the configuration file\n"),
            "{text}"
        );
        assert!(text.contains("\nmax-missed = 5\n"), "{text}");
        assert!(text.contains("\n# token-secret: not set\n"), "{text}");
        assert!(
            text.contains("\n# max-connections: not set: the open-file limit"),
            "{text}"
        );
        for (key, _) in super::super::keys() {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key}: ")),
                "{key} missing:\n{text}"
            );
        }
        let again = ConfigFile::parse(Path::new("again.toml"), &text).expect("reads back");
        let reread = resolve(Some(&again), &Given::default()).expect("valid");
        assert_eq!(reread.settings, resolved.settings);
    }
}
