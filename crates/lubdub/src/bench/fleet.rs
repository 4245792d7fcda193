//! The coordinator of the hold, pump and stall scenarios: splits the
//! sessions over worker processes and source addresses, waits for them to
//! connect, measures a window, and reads the server's memory and CPU time
//! around it.
//!
//! Timeline of one run:
//!
//! ```text
//! sample server ─ spawn workers ─ connect (progress) ─ warm-up ─ Measure
//!   ─ window (stall: SIGSTOP … SIGCONT inside it) ─ sample server ─ Report ─ end
//! ```
//!
//! Memory per session is the server's resident-memory growth from before
//! the first connect to the end of the window, over the sessions held; CPU
//! per heartbeat is the server's CPU time during the window over the
//! heartbeats acknowledged in it.
//!
//! Size: one job (coordinating a run of workers and measuring the server); a sixth is its tests.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dialect::Dialect;
use super::limits::OpenFiles;
use super::load_report::LoadReport;
use super::process_stats::{ProcessSample, Watched};
use super::worker::{Tally, WindowCounts, WorkerCommand, WorkerConfig, WorkerMessage};
use super::BenchError;

/// Sessions per worker process by default: under the 20,000 open files a
/// process may have here, and under half of one source address's ~28,000
/// ephemeral ports.
pub const DEFAULT_SESSIONS_PER_WORKER: usize = 10_000;
/// Files a server needs besides its sessions (listener, epoll, admin, logs).
const SERVER_FILE_MARGIN: u64 = 32;
/// How long workers get to exit after their stdin closes.
const WORKER_EXIT_PATIENCE: Duration = Duration::from_secs(10);

/// Which scenario a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadScenario {
    /// Many sessions at a slow period: memory and idle CPU.
    Hold,
    /// Sessions at a fast period: CPU per heartbeat and round trips under load.
    Pump,
    /// The server is stopped (SIGSTOP) and resumed inside the window:
    /// how many sessions does it evict?
    Stall,
}

/// When, within the window, the server is stopped and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallPlan {
    /// From the start of the window to SIGSTOP.
    pub after: Duration,
    /// From SIGSTOP to SIGCONT.
    pub stopped_for: Duration,
}

/// Parameters of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// What is measured; decides nothing by itself beyond the label and `stall`.
    pub scenario: LoadScenario,
    /// The server under test.
    pub server: SocketAddr,
    /// Protocol to speak.
    pub dialect: Dialect,
    /// Sessions to open in all.
    pub sessions: usize,
    /// Heartbeat period of every session.
    pub period: Duration,
    /// Ask for an acknowledgement of every heartbeat (lubdub only; MQTT
    /// always answers).
    pub acks: bool,
    /// Heartbeating after the last handshake, before the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Stop and resume the server inside the window (needs `server_pid`).
    pub stall: Option<StallPlan>,
    /// The server's process, for memory and CPU (and for the stall).
    pub server_pid: Option<u32>,
    /// Most sessions one worker process opens.
    pub sessions_per_worker: usize,
    /// Worker `i` connects from this address + `i`; `None` for the kernel's choice.
    pub source_base: Option<Ipv4Addr>,
    /// Handshakes in flight at once, per worker.
    pub connect_concurrency: usize,
    /// Time one handshake may take.
    pub handshake_timeout: Duration,
    /// Attempts per session.
    pub connect_attempts: u32,
    /// The `lubdub` executable the workers run (`lubdub bench worker`).
    pub worker_program: PathBuf,
    /// Session names are `{name_prefix}-{index}`.
    pub name_prefix: String,
}

/// What the coordinator is doing, for progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEvent {
    /// The sessions are split like this.
    Planned {
        /// Worker processes.
        workers: usize,
        /// Sessions per worker (the last may have fewer).
        per_worker: usize,
        /// Source address of each worker.
        sources: Vec<Option<IpAddr>>,
    },
    /// Handshakes finished so far.
    Connecting {
        /// Finished (open or failed).
        done: usize,
        /// Of this many.
        total: usize,
    },
    /// Every handshake has finished.
    Connected {
        /// Open.
        established: usize,
        /// Failed.
        failed: usize,
        /// Time taken.
        took: Duration,
    },
    /// The measured window began; it lasts this long.
    Measuring(Duration),
    /// The server was stopped; it is resumed after this long.
    Stopped(Duration),
    /// The server was resumed.
    Resumed,
}

/// A running worker process.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Worker {
    fn send(&mut self, command: WorkerCommand) -> Result<(), BenchError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| BenchError::Worker("worker input already closed".to_owned()))?;
        let mut line =
            serde_json::to_vec(&command).map_err(|error| BenchError::Worker(error.to_string()))?;
        line.push(b'\n');
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .map_err(|error| BenchError::Worker(format!("a worker stopped listening: {error}")))
    }
}

/// Ends every worker however the run ends: closing stdin asks it to close
/// its sessions and exit; one that does not is killed.
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            worker.stdin = None;
        }
        let deadline = Instant::now() + WORKER_EXIT_PATIENCE;
        for worker in &mut self.0 {
            loop {
                match worker.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = worker.child.kill();
                        let _ = worker.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// A message from worker `.0`, or `None` when its output ended.
type Inbound = (usize, Option<WorkerMessage>);

/// Runs a hold, pump or stall scenario.
///
/// # Errors
/// [`BenchError`] when the run cannot start or a worker fails; measurements,
/// good or bad, are a report.
pub fn run(
    config: &LoadConfig,
    mut progress: impl FnMut(FleetEvent),
) -> Result<LoadReport, BenchError> {
    validate(config)?;
    let server = config.server_pid.map(|pid| Watched { pid });
    if let Some(server) = server {
        check_server_files(server, config.sessions)?;
    }
    let plan = plan_workers(config)?;
    progress(FleetEvent::Planned {
        workers: plan.len(),
        per_worker: plan.first().map_or(0, |worker| worker.sessions),
        sources: plan.iter().map(|worker| worker.source).collect(),
    });

    let before = server.map(sample).transpose()?;
    let started = Instant::now();
    let (inbound_tx, inbound) = mpsc::channel::<Inbound>();
    let mut workers = Workers(Vec::with_capacity(plan.len()));
    for (index, worker_config) in plan.iter().enumerate() {
        workers.0.push(spawn_worker(
            config,
            worker_config,
            index,
            inbound_tx.clone(),
        )?);
    }
    drop(inbound_tx);

    // Connect.
    let mut done = vec![0usize; plan.len()];
    let mut connected: Vec<Option<(usize, usize, Vec<Tally>)>> = vec![None; plan.len()];
    while connected.iter().any(Option::is_none) {
        let (index, message) = receive(&inbound)?;
        match message {
            Some(WorkerMessage::Progress {
                established,
                failed,
            }) => done[index] = established + failed,
            Some(WorkerMessage::Connected {
                established,
                failed,
                errors,
            }) => {
                done[index] = established + failed;
                connected[index] = Some((established, failed, errors));
            }
            other => return Err(unexpected(index, other)),
        }
        progress(FleetEvent::Connecting {
            done: done.iter().sum(),
            total: config.sessions,
        });
    }
    let connect_time = started.elapsed();
    let mut established = 0;
    let mut failed = 0;
    let mut handshake_errors = Vec::new();
    for (open, lost, errors) in connected.into_iter().flatten() {
        established += open;
        failed += lost;
        handshake_errors.extend(errors);
    }
    progress(FleetEvent::Connected {
        established,
        failed,
        took: connect_time,
    });
    if established == 0 {
        return Err(BenchError::NoSessions {
            server: config.server,
            error: handshake_errors
                .first()
                .map_or_else(|| "no reason given".to_owned(), |tally| tally.what.clone()),
        });
    }

    // Warm up, then measure.
    std::thread::sleep(config.warmup);
    for worker in &mut workers.0 {
        worker.send(WorkerCommand::Measure)?;
    }
    let window_start = server.map(sample).transpose()?;
    let window_started = Instant::now();
    progress(FleetEvent::Measuring(config.window));
    let mut stopped_for = None;
    if let (Some(plan), Some(server)) = (config.stall, server) {
        std::thread::sleep(plan.after);
        signal(server.pid, nix::sys::signal::Signal::SIGSTOP)?;
        progress(FleetEvent::Stopped(plan.stopped_for));
        let stopped_at = Instant::now();
        std::thread::sleep(plan.stopped_for);
        signal(server.pid, nix::sys::signal::Signal::SIGCONT)?;
        stopped_for = Some(stopped_at.elapsed());
        progress(FleetEvent::Resumed);
    }
    std::thread::sleep(config.window.saturating_sub(window_started.elapsed()));
    let window_end = server.map(sample).transpose()?;
    let window_time = window_started.elapsed();
    for worker in &mut workers.0 {
        worker.send(WorkerCommand::Report)?;
    }
    let mut windows: Vec<Option<WindowCounts>> = vec![None; plan.len()];
    while windows.iter().any(Option::is_none) {
        match receive(&inbound)? {
            (index, Some(WorkerMessage::Window(counts))) => windows[index] = Some(counts),
            // Late progress lines are harmless.
            (_, Some(WorkerMessage::Progress { .. })) => {}
            (index, other) => return Err(unexpected(index, other)),
        }
    }
    drop(workers);

    Ok(LoadReport::build(
        config,
        &plan,
        super::load_report::Measured {
            established,
            handshake_failed: failed,
            handshake_errors,
            connect_time,
            window_time,
            stopped_for,
            windows: windows.into_iter().flatten().collect(),
            server_before: before,
            server_window_start: window_start,
            server_window_end: window_end,
        },
    ))
}

fn validate(config: &LoadConfig) -> Result<(), BenchError> {
    let invalid = |why: &str| Err(BenchError::InvalidConfig(why.to_owned()));
    if config.sessions == 0 {
        return invalid("--sessions must be at least 1");
    }
    if config.period.is_zero() {
        return invalid("--period must be positive");
    }
    if config.window.is_zero() {
        return invalid("--duration must be positive");
    }
    if !config.acks && config.dialect == Dialect::Mqtt {
        return invalid("MQTT always answers PINGREQ: --one-way applies to lubdub only");
    }
    if config.sessions_per_worker == 0 {
        return invalid("--sessions-per-worker must be at least 1");
    }
    if let Some(plan) = config.stall {
        if config.server_pid.is_none() {
            return invalid("the stall scenario stops the server: give its --server-pid");
        }
        if plan.after + plan.stopped_for > config.window {
            return invalid("the stall (--stop-after + --stop-for) must fit in --duration");
        }
    }
    Ok(())
}

/// Refuses up front when the server could not hold the sessions anyway,
/// instead of letting them fail one by one at its accept.
fn check_server_files(server: Watched, sessions: usize) -> Result<(), BenchError> {
    let limit = server.open_files_limit().map_err(|error| {
        BenchError::Server(format!("cannot read process {}: {error}", server.pid))
    })?;
    let needed = sessions as u64 + SERVER_FILE_MARGIN;
    if limit < needed {
        return Err(BenchError::InvalidConfig(format!(
            "the server (pid {}) may open only {limit} files, and {sessions} sessions need about \
             {needed}: lower --sessions or raise the server's limit (`ulimit -n` before starting it)",
            server.pid
        )));
    }
    Ok(())
}

/// Splits the sessions into workers of at most `sessions_per_worker`, each
/// with its own source address.
fn plan_workers(config: &LoadConfig) -> Result<Vec<WorkerConfig>, BenchError> {
    // Workers inherit this process's open-file limit.
    let capacity = OpenFiles::of_this_process()
        .map(|files| files.limit.saturating_sub(super::limits::MARGIN * 2))
        .unwrap_or(u64::MAX);
    let per_worker = config
        .sessions_per_worker
        .min(usize::try_from(capacity).unwrap_or(usize::MAX))
        .max(1);
    let workers = config.sessions.div_ceil(per_worker);
    let mut plan = Vec::with_capacity(workers);
    for index in 0..workers {
        let first_index = index * per_worker;
        let source = match config.source_base {
            Some(base) => {
                let address = u32::from(base)
                    .checked_add(index as u32)
                    .map(Ipv4Addr::from);
                match address {
                    Some(address) if address.octets()[0] == base.octets()[0] => {
                        Some(IpAddr::V4(address))
                    }
                    _ => {
                        return Err(BenchError::InvalidConfig(format!(
                            "{workers} workers need {workers} source addresses from {base}, \
                             which runs out of its /8: choose a lower --source"
                        )))
                    }
                }
            }
            None => None,
        };
        plan.push(WorkerConfig {
            server: config.server,
            source,
            dialect: config.dialect,
            name_prefix: config.name_prefix.clone(),
            first_index,
            sessions: per_worker.min(config.sessions - first_index),
            period_ms: u64::try_from(config.period.as_millis()).unwrap_or(u64::MAX),
            acks: config.acks,
            connect_concurrency: config.connect_concurrency,
            handshake_timeout_ms: u64::try_from(config.handshake_timeout.as_millis())
                .unwrap_or(u64::MAX),
            connect_attempts: config.connect_attempts,
        });
    }
    Ok(plan)
}

fn spawn_worker(
    config: &LoadConfig,
    worker: &WorkerConfig,
    index: usize,
    inbound: mpsc::Sender<Inbound>,
) -> Result<Worker, BenchError> {
    let json =
        serde_json::to_string(worker).map_err(|error| BenchError::Worker(error.to_string()))?;
    let mut child = Command::new(&config.worker_program)
        .args(["bench", "worker", "--config", &json])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| {
            BenchError::Worker(format!(
                "cannot start {} as a worker: {error}",
                config.worker_program.display()
            ))
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Worker("worker has no stdout".to_owned()))?;
    let stdin = child.stdin.take();
    std::thread::Builder::new()
        .name(format!("bench-worker-{index}"))
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let message =
                    serde_json::from_str(&line).unwrap_or_else(|error| WorkerMessage::Fatal {
                        error: format!("unreadable line {line:?}: {error}"),
                    });
                if inbound.send((index, Some(message))).is_err() {
                    return;
                }
            }
            let _ = inbound.send((index, None));
        })
        .map_err(|error| BenchError::Worker(format!("cannot start a reader thread: {error}")))?;
    Ok(Worker { child, stdin })
}

fn receive(inbound: &mpsc::Receiver<Inbound>) -> Result<Inbound, BenchError> {
    inbound
        .recv()
        .map_err(|_| BenchError::Worker("every worker has exited".to_owned()))
}

fn unexpected(index: usize, message: Option<WorkerMessage>) -> BenchError {
    match message {
        None => BenchError::Worker(format!(
            "worker {index} exited early (see its errors above)"
        )),
        Some(WorkerMessage::Fatal { error }) => {
            BenchError::Worker(format!("worker {index} failed: {error}"))
        }
        Some(other) => BenchError::Worker(format!("worker {index} sent {other:?} out of turn")),
    }
}

fn sample(server: Watched) -> Result<ProcessSample, BenchError> {
    server
        .sample()
        .map_err(|error| BenchError::Server(format!("cannot read process {}: {error}", server.pid)))
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> Result<(), BenchError> {
    let pid = i32::try_from(pid)
        .map_err(|_| BenchError::InvalidConfig(format!("{pid} is not a process id")))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|error| BenchError::Server(format!("cannot send {signal} to {pid}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sessions: usize) -> LoadConfig {
        LoadConfig {
            scenario: LoadScenario::Hold,
            server: SocketAddr::from(([127, 0, 0, 1], 7070)),
            dialect: Dialect::Lubdub,
            sessions,
            period: Duration::from_secs(3),
            acks: true,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(10),
            stall: None,
            server_pid: None,
            sessions_per_worker: 10_000,
            source_base: Some(Ipv4Addr::new(127, 0, 0, 2)),
            connect_concurrency: 500,
            handshake_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            worker_program: PathBuf::from("lubdub"),
            name_prefix: "bench".to_owned(),
        }
    }

    #[test]
    fn sessions_are_split_over_workers_and_source_addresses() {
        let plan = plan_workers(&config(19_000)).expect("plans");
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].sessions + plan[1].sessions, 19_000);
        assert_eq!(plan[1].first_index, plan[0].sessions);
        assert_eq!(
            plan[0].source,
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            plan[1].source,
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
        assert_eq!(plan_workers(&config(1_000)).expect("plans").len(), 1);
    }

    #[test]
    fn running_out_of_source_addresses_is_refused() {
        let mut config = config(5);
        config.sessions_per_worker = 1;
        config.source_base = Some(Ipv4Addr::new(127, 255, 255, 254));
        let error = plan_workers(&config).expect_err("127.255.255.254 + 4 leaves 127/8");
        assert!(error.to_string().contains("source addresses"), "{error}");
    }

    #[test]
    fn a_stall_needs_the_server_pid_and_must_fit_the_window() {
        let mut config = config(5);
        config.stall = Some(StallPlan {
            after: Duration::from_secs(1),
            stopped_for: Duration::from_secs(2),
        });
        assert!(validate(&config).is_err());
        config.server_pid = Some(1);
        assert!(validate(&config).is_ok());
        config.window = Duration::from_secs(2);
        assert!(validate(&config).is_err());
    }

    #[test]
    fn a_server_that_cannot_hold_the_sessions_is_refused_up_front() {
        let me = Watched {
            pid: std::process::id(),
        };
        let limit = me.open_files_limit().expect("own limits");
        let error = check_server_files(me, usize::try_from(limit).unwrap_or(usize::MAX))
            .expect_err("over the limit");
        assert!(error.to_string().contains("may open only"), "{error}");
        assert!(check_server_files(me, 10).is_ok());
    }
}
