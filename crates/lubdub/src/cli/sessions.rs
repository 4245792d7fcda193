//! `lubdub sessions`: the admin API's session list as a table or raw JSON.
//! Names in the table are shown escaped (see `lubdub::escape`) unless --raw.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lubdub::escape::escape;
use lubdub::server::SessionInfo;

use super::admin_client::AdminTarget;

/// Flags of `lubdub sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// Print the raw JSON array (in the server's slot order) instead of a
    /// table (sorted by name).
    #[arg(long)]
    json: bool,
    /// Show names in the table exactly as the server holds them, for
    /// scripts. By default control, format and invisible characters are
    /// shown escaped (`\e`, `\u{200b}`), so that two names that print the
    /// same can be told apart and none can rewrite the terminal.
    #[arg(long)]
    raw: bool,
}

pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let body = args.target.get("/sessions")?;
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut sessions: Vec<SessionInfo> =
        serde_json::from_str(&body).context("the admin API answered with unexpected JSON")?;
    // The server streams its list in slot order; people read it by name.
    sessions.sort_by(|a, b| a.name.cmp(&b.name));
    print!("{}", table(&sessions, args.raw));
    Ok(ExitCode::SUCCESS)
}

fn table(sessions: &[SessionInfo], raw: bool) -> String {
    let header = [
        "NAME",
        "ADDR",
        "STATE",
        "MISSED",
        "LAST SEEN",
        "MEAN GAP",
        "PHI",
        "RTT",
        "EPOCH",
        "CONNECTED AT",
        "LAST CHANGE",
        "STATUS",
    ];
    let rows: Vec<[String; 12]> = sessions
        .iter()
        .map(|s| {
            [
                if raw {
                    s.name.clone()
                } else {
                    escape(&s.name).into_owned()
                },
                s.addr.to_string(),
                serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                s.missed.to_string(),
                format!("{} ms ago", s.last_seen_ms),
                format!("{:.0} ms", s.mean_interarrival_ms),
                s.phi
                    .map_or_else(|| "-".to_owned(), |phi| format!("{phi:.2}")),
                s.rtt_ms
                    .map_or_else(|| "-".to_owned(), |rtt| format!("{rtt:.2} ms")),
                s.epoch.to_string(),
                s.connected_at.clone(),
                s.last_change.clone(),
                s.status.as_deref().map_or_else(String::new, |status| {
                    if raw {
                        status.to_owned()
                    } else {
                        escape(status).into_owned()
                    }
                }),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        out.push_str("(no sessions)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(name: &str) -> SessionInfo {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "addr": "127.0.0.1:5000",
            "state": "alive",
            "missed": 0,
            "last_seen_ms": 10,
            "connected_at": "2026-12-02T02:00:00Z",
            "epoch": 7,
            "session_id": 1,
            "one_way": false,
            "interval_ms": 3000,
            "mean_interarrival_ms": 2400.0,
            "last_change": "joined",
        }))
        .expect("a valid session")
    }

    /// A server that predates the naming rules (or a registry shared with
    /// one) can still hold such names; the table must tell them apart.
    /// Fails on the code before this change, which printed names as held:
    /// both rows then read `alice`.
    #[test]
    fn names_in_the_table_are_escaped_unless_raw() {
        let sessions = [
            session("alice"),
            session("alice\u{200b}"),
            session("\u{202e}eve\x1b[2J"),
        ];
        let shown = table(&sessions, false);
        assert!(shown.contains("alice\\u{200b} "), "{shown}");
        assert!(shown.contains("\\u{202e}eve\\e[2J "), "{shown}");
        assert!(!shown.contains(['\u{200b}', '\u{202e}', '\x1b']), "{shown}");
        let raw = table(&sessions, true);
        assert!(raw.contains("alice\u{200b}"), "{raw}");
        assert!(raw.contains("\u{202e}eve\x1b[2J"), "{raw}");
    }
}
