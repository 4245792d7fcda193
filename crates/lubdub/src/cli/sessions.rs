//! `lubdub sessions`: the admin API's session list as a table or raw JSON.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lubdub::server::SessionInfo;

use super::parse_addr;

/// Flags of `lubdub sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Address of the server's admin API.
    #[arg(long, default_value = super::DEFAULT_ADMIN, value_parser = parse_addr)]
    admin: SocketAddr,
    /// Print the raw JSON array (in the server's slot order) instead of a
    /// table (sorted by name).
    #[arg(long)]
    json: bool,
}

pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let url = format!("http://{}/sessions", args.admin);
    let body = ureq::get(&url)
        .call()
        .with_context(|| format!("cannot reach the admin API at {url} (is `lubdub server` running, with --admin {}?)", args.admin))?
        .body_mut()
        .read_to_string()
        .context("cannot read the admin API's answer")?;
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut sessions: Vec<SessionInfo> =
        serde_json::from_str(&body).context("the admin API answered with unexpected JSON")?;
    // The server streams its list in slot order; people read it by name.
    sessions.sort_by(|a, b| a.name.cmp(&b.name));
    print!("{}", table(&sessions));
    Ok(ExitCode::SUCCESS)
}

fn table(sessions: &[SessionInfo]) -> String {
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
    ];
    let rows: Vec<[String; 11]> = sessions
        .iter()
        .map(|s| {
            [
                s.name.clone(),
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
