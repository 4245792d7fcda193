//! The presence scenario: what rooms and watches cost the server and what
//! watchers receive. Members join one room and heartbeat (optionally
//! leaving and joining again at a churn rate); watchers watch names or
//! rooms (in full, or a room by count) and count every PRESENCE frame.
//!
//! Stages, each measured on the server (`/proc/<pid>`) when its pid is
//! given: members connected → joined (bytes per membership) → watchers
//! connected → watching (bytes per watch) → a measured window (CPU, what
//! each kind of watcher received a second), which lasts `duration`, or,
//! with `expect_leaves`, until every watcher has seen that many departures
//! (another process makes them: `lubdub bench silence --rooms`).
//!
//! One tokio task per session, as in the silence scenario.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub_core::client::ping_after;
use lubdub_core::protocol::rooms::{UpdateKind, Watch, WatchMode};
use lubdub_core::protocol::Frame;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::process_stats::Watched;
use super::session::{RawSession, Received};
use super::BenchError;

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// The server's protocol address.
    pub server: std::net::SocketAddr,
    /// Interval every HELLO asks for.
    pub interval: Duration,
    /// Sessions that join `room` and heartbeat.
    pub members: usize,
    /// The members' room.
    pub room: String,
    /// Members leaving and joining again, a second, in all (each LEAVE is
    /// followed by a JOIN).
    pub churn_per_sec: f64,
    /// Sessions watching every one of `targets` in full.
    pub watchers: usize,
    /// What the full watchers watch (names or rooms); by default `room`.
    pub targets: Vec<String>,
    /// Full watcher `i` watches only `targets[i % targets.len()]`, not all.
    pub spread: bool,
    /// Sessions watching `room` by count.
    pub count_watchers: usize,
    /// The measured window, unless `expect_leaves` ends it.
    pub duration: Duration,
    /// End the window once every full watcher has seen this many
    /// departures (`leave` other than a LEAVE, or `offline`), or after
    /// `duration` at the latest.
    pub expect_leaves: Option<u64>,
    /// The server's pid, for its memory and CPU.
    pub server_pid: Option<u32>,
}

/// What one kind of watcher received in the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatcherTotals {
    /// Sessions of this kind.
    pub sessions: usize,
    /// PRESENCE frames a session received a second, median over sessions.
    pub frames_per_sec_median: f64,
    /// Bytes a session received a second (frames' encoded size), median.
    pub bytes_per_sec_median: f64,
    /// Departures counted by the session with fewest, median, most.
    pub departures_min: u64,
    pub departures_median: u64,
    pub departures_max: u64,
    /// Seconds from the window's start to the last departure a session
    /// received, the latest over sessions.
    pub last_departure_s: f64,
}

/// The run's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PresenceReport {
    pub members: usize,
    pub watchers: usize,
    pub count_watchers: usize,
    pub targets: Vec<String>,
    pub churn_per_sec: f64,
    /// Sessions that completed their handshake.
    pub members_connected: usize,
    pub watchers_connected: usize,
    /// Server memory growth per room membership and per watch (RSS
    /// difference across the stage, divided by what it added), bytes.
    pub bytes_per_membership: Option<f64>,
    pub bytes_per_watch: Option<f64>,
    /// Server CPU in the window, in cores (1.0: one core busy).
    pub server_cpu_cores: Option<f64>,
    pub window_s: f64,
    pub full: WatcherTotals,
    pub count: WatcherTotals,
}

#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    departures: AtomicU64,
    /// µs since the run's origin of the last departure.
    last_departure_us: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StagePlan {
    Connect,
    Act,
    Measure,
    Stop,
}

/// Runs the scenario; `say` reports each stage.
///
/// # Errors
/// [`BenchError`] when sessions cannot be opened.
pub async fn run(
    config: &PresenceConfig,
    mut say: impl FnMut(&str),
) -> Result<PresenceReport, BenchError> {
    let needed = config.members + config.watchers + config.count_watchers;
    super::silence::check_open_files(needed)?;
    let origin = Instant::now();
    // Short names (`p1a2b-m42`): a room's listing is sized by them.
    let prefix = format!("p{:04x}", rand::random::<u16>());
    let sample = |pid: Option<u32>| pid.and_then(|pid| Watched { pid }.sample().ok());

    let (member_stage, member_rx) = watch::channel(StagePlan::Connect);
    let (watcher_stage, watcher_rx) = watch::channel(StagePlan::Connect);
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<bool>();
    let mut tasks = JoinSet::new();
    let per_member_churn = if config.members == 0 {
        0.0
    } else {
        config.churn_per_sec / config.members as f64
    };
    for index in 0..config.members {
        let member = Member {
            server: config.server,
            interval: config.interval,
            name: format!("{prefix}-m{index}"),
            room: config.room.clone(),
            churn_per_sec: per_member_churn,
        };
        tasks.spawn(member.run(member_rx.clone(), ready_tx.clone()));
    }
    let members_opened = wait_ready(&mut ready, config.members).await;
    say(&format!(
        "{members_opened} of {} members connected",
        config.members
    ));
    let connected = sample(config.server_pid);
    member_stage.send_replace(StagePlan::Act);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let joined = sample(config.server_pid);

    let targets = if config.targets.is_empty() {
        vec![config.room.clone()]
    } else {
        config.targets.clone()
    };
    let mut full = Vec::new();
    let mut counting = Vec::new();
    for index in 0..config.watchers + config.count_watchers {
        let counters = Arc::new(Counters::default());
        let by_count = index >= config.watchers;
        let watcher = Watcher {
            server: config.server,
            interval: config.interval,
            name: format!("{prefix}-w{index}"),
            targets: if by_count {
                vec![(config.room.clone(), WatchMode::Count)]
            } else if config.spread {
                vec![(targets[index % targets.len()].clone(), WatchMode::Full)]
            } else {
                targets
                    .iter()
                    .map(|t| (t.clone(), WatchMode::Full))
                    .collect()
            },
            counters: Arc::clone(&counters),
            origin,
        };
        if by_count {
            counting.push(counters);
        } else {
            full.push(counters);
        }
        tasks.spawn(watcher.run(watcher_rx.clone(), ready_tx.clone()));
    }
    drop(ready_tx);
    let watchers_opened = wait_ready(&mut ready, config.watchers + config.count_watchers).await;
    say(&format!("{watchers_opened} watchers connected"));
    let watchers_connected = sample(config.server_pid);
    watcher_stage.send_replace(StagePlan::Act);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watching = sample(config.server_pid);

    // The window: counters start from here.
    for counters in full.iter().chain(&counting) {
        counters.frames.store(0, Ordering::Relaxed);
        counters.bytes.store(0, Ordering::Relaxed);
        counters.departures.store(0, Ordering::Relaxed);
    }
    let window_start = Instant::now();
    let window_start_us = micros(origin, window_start);
    let cpu_start = sample(config.server_pid);
    member_stage.send_replace(StagePlan::Measure);
    say("measuring");
    let deadline = window_start + config.duration;
    loop {
        let done = config.expect_leaves.is_some_and(|expected| {
            full.iter()
                .all(|c| c.departures.load(Ordering::Relaxed) >= expected)
        });
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window_end = Instant::now();
    let cpu_end = sample(config.server_pid);
    member_stage.send_replace(StagePlan::Stop);
    watcher_stage.send_replace(StagePlan::Stop);
    let window = window_end - window_start;
    let summarize = |group: &[Arc<Counters>]| summarize(group, window, window_start_us);
    let per = |after: &Option<super::process_stats::ProcessSample>,
               before: &Option<super::process_stats::ProcessSample>,
               count: usize| {
        match (after, before) {
            (Some(after), Some(before)) if count > 0 => {
                Some((after.rss_bytes as f64 - before.rss_bytes as f64) / count as f64)
            }
            _ => None,
        }
    };
    let report = PresenceReport {
        members: config.members,
        watchers: config.watchers,
        count_watchers: config.count_watchers,
        targets,
        churn_per_sec: config.churn_per_sec,
        members_connected: members_opened,
        watchers_connected: watchers_opened,
        bytes_per_membership: per(&joined, &connected, members_opened),
        // Full watchers watch every target; count watchers one room.
        bytes_per_watch: per(
            &watching,
            &watchers_connected,
            watchers_opened.saturating_sub(config.count_watchers)
                * if config.spread {
                    1
                } else {
                    config.targets.len().max(1)
                }
                + config.count_watchers.min(watchers_opened),
        ),
        server_cpu_cores: match (cpu_start, cpu_end) {
            (Some(start), Some(end)) => {
                Some((end.cpu - start.cpu).as_secs_f64() / window.as_secs_f64())
            }
            _ => None,
        },
        window_s: window.as_secs_f64(),
        full: summarize(&full),
        count: summarize(&counting),
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(report)
}

async fn wait_ready(ready: &mut mpsc::UnboundedReceiver<bool>, expected: usize) -> usize {
    let mut opened = 0;
    for _ in 0..expected {
        match ready.recv().await {
            Some(true) => opened += 1,
            Some(false) => {}
            None => break,
        }
    }
    opened
}

fn micros(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_micros()).unwrap_or(u64::MAX)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn summarize(group: &[Arc<Counters>], window: Duration, start_us: u64) -> WatcherTotals {
    let seconds = window.as_secs_f64().max(1e-9);
    let mut departures: Vec<u64> = group
        .iter()
        .map(|c| c.departures.load(Ordering::Relaxed))
        .collect();
    departures.sort_unstable();
    let last = group
        .iter()
        .map(|c| c.last_departure_us.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    WatcherTotals {
        sessions: group.len(),
        frames_per_sec_median: median(
            group
                .iter()
                .map(|c| c.frames.load(Ordering::Relaxed) as f64 / seconds)
                .collect(),
        ),
        bytes_per_sec_median: median(
            group
                .iter()
                .map(|c| c.bytes.load(Ordering::Relaxed) as f64 / seconds)
                .collect(),
        ),
        departures_min: departures.first().copied().unwrap_or(0),
        departures_median: departures.get(departures.len() / 2).copied().unwrap_or(0),
        departures_max: departures.last().copied().unwrap_or(0),
        last_departure_s: last.saturating_sub(start_us) as f64 / 1e6,
    }
}

async fn open(server: std::net::SocketAddr, name: &str, interval: Duration) -> Option<RawSession> {
    for attempt in 1..=3u32 {
        match RawSession::open(server, name, interval, false, Duration::from_secs(10)).await {
            Ok((session, _)) => return Some(session),
            Err(_) => tokio::time::sleep(Duration::from_millis(100) * attempt).await,
        }
    }
    None
}

struct Member {
    server: std::net::SocketAddr,
    interval: Duration,
    name: String,
    room: String,
    churn_per_sec: f64,
}

impl Member {
    async fn run(self, mut stage: watch::Receiver<StagePlan>, ready: mpsc::UnboundedSender<bool>) {
        let Some(mut session) = open(self.server, &self.name, self.interval).await else {
            let _ = ready.send(false);
            return;
        };
        let _ = ready.send(true);
        drop(ready);
        let period = ping_after(session.granted_interval());
        let mut next_ping = tokio::time::Instant::now() + period;
        let mut joined = false;
        let mut next_cycle: Option<tokio::time::Instant> = None;
        loop {
            let current = *stage.borrow_and_update();
            if current == StagePlan::Stop {
                return;
            }
            if current >= StagePlan::Act && !joined {
                let join = Frame::Join {
                    room: self.room.clone(),
                };
                if session.send(&join).await.is_err() {
                    return;
                }
                joined = true;
            }
            if current == StagePlan::Measure && next_cycle.is_none() && self.churn_per_sec > 0.0 {
                next_cycle = Some(tokio::time::Instant::now() + exponential(self.churn_per_sec));
            }
            let cycle_at = next_cycle
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stage.changed() => {}
                () = tokio::time::sleep_until(next_ping) => {
                    if session.ping().await.is_err() { return; }
                    next_ping += period;
                }
                () = tokio::time::sleep_until(cycle_at) => {
                    let leave = Frame::Leave { room: self.room.clone() };
                    let join = Frame::Join { room: self.room.clone() };
                    if session.send(&leave).await.is_err() || session.send(&join).await.is_err() {
                        return;
                    }
                    next_cycle = Some(tokio::time::Instant::now() + exponential(self.churn_per_sec));
                }
                received = session.next() => {
                    if !matches!(received, Ok((Received::Frame(_), _))) { return; }
                }
            }
        }
    }
}

/// A wait drawn from an exponential distribution of rate `per_sec`: the
/// members' cycles together form a Poisson stream at the churn rate.
fn exponential(per_sec: f64) -> Duration {
    let uniform: f64 = rand::random::<f64>().max(1e-12);
    Duration::from_secs_f64(-uniform.ln() / per_sec)
}

struct Watcher {
    server: std::net::SocketAddr,
    interval: Duration,
    name: String,
    targets: Vec<(String, WatchMode)>,
    counters: Arc<Counters>,
    origin: Instant,
}

impl Watcher {
    async fn run(self, mut stage: watch::Receiver<StagePlan>, ready: mpsc::UnboundedSender<bool>) {
        let Some(mut session) = open(self.server, &self.name, self.interval).await else {
            let _ = ready.send(false);
            return;
        };
        let _ = ready.send(true);
        drop(ready);
        let period = ping_after(session.granted_interval());
        let mut next_ping = tokio::time::Instant::now() + period;
        let mut watching = false;
        loop {
            let current = *stage.borrow_and_update();
            if current == StagePlan::Stop {
                return;
            }
            if current >= StagePlan::Act && !watching {
                for (target, mode) in &self.targets {
                    let watch = Frame::Watch(Watch {
                        mode: *mode as u8,
                        target: target.clone(),
                    });
                    if session.send(&watch).await.is_err() {
                        return;
                    }
                }
                watching = true;
            }
            tokio::select! {
                _ = stage.changed() => {}
                () = tokio::time::sleep_until(next_ping) => {
                    if session.ping().await.is_err() { return; }
                    next_ping += period;
                }
                received = session.next() => match received {
                    Ok((Received::Frame(Frame::Presence(update)), at)) => {
                        let counters = &self.counters;
                        counters.frames.fetch_add(1, Ordering::Relaxed);
                        // The encoded size: 31 bytes of fixed fields with the prefix.
                        let size = 31 + update.target.len() + update.name.len() + update.text.len();
                        counters.bytes.fetch_add(size as u64, Ordering::Relaxed);
                        let departure = matches!(update.kind, UpdateKind::Offline)
                            || (update.kind == UpdateKind::Left && update.text != "left");
                        if departure {
                            counters.departures.fetch_add(1, Ordering::Relaxed);
                            counters.last_departure_us.store(micros(self.origin, at), Ordering::Relaxed);
                        }
                    }
                    Ok((Received::Frame(_), _)) => {}
                    _ => return,
                },
            }
        }
    }
}
