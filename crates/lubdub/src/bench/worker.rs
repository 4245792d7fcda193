//! One load-generator process: opens its share of the sessions from one
//! source address, heartbeats each at a fixed period, and counts
//! heartbeats, acknowledgements, round trips and sessions the server ended.
//!
//! A worker is a child process of `lubdub bench` (the hidden `lubdub bench
//! worker` subcommand) because one process may hold at most about 20,000
//! sockets on the machines lubdub is measured on; see [`super::fleet`].
//! It talks to its coordinator in JSON lines: [`WorkerMessage`]s on stdout,
//! [`WorkerCommand`]s on stdin. Closing stdin ends it.
//!
//! Each session is a tokio task on one current-thread runtime: a
//! heartbeat is a timer expiry, one write and one read, and the generator's
//! memory is not what is being measured.
//!
//! Size: one job (one load-generator process: its sessions' connect, heartbeat and count loop, which must stay one loop to be cheap); the rest is its tests.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::dialect::{Dialect, Reply};

/// Pause before retrying a failed handshake, multiplied by the attempt number.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often connect progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Distinct error messages kept; the rest are counted under one line.
const MAX_ERROR_KINDS: usize = 20;
/// Largest round trip the histogram holds, µs (a stalled server answers late).
const MAX_RTT_US: u64 = 3_600_000_000;

/// What one worker is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// The server under test.
    pub server: SocketAddr,
    /// Local address to connect from, or `None` for the kernel's choice.
    pub source: Option<IpAddr>,
    /// Protocol to speak.
    pub dialect: Dialect,
    /// Session names (MQTT client ids) are `{prefix}-{index}`.
    pub name_prefix: String,
    /// Index of this worker's first session among all workers'.
    pub first_index: usize,
    /// Sessions this worker opens.
    pub sessions: usize,
    /// Heartbeat period, ms; also the interval asked for (MQTT: the
    /// keep-alive, rounded up to whole seconds).
    pub period_ms: u64,
    /// Ask for an acknowledgement of every heartbeat (lubdub; MQTT always
    /// answers). Without, heartbeats are one-way and no round trip is measured.
    pub acks: bool,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Time one handshake may take, ms.
    pub handshake_timeout_ms: u64,
    /// Attempts per session before it counts as failed (a refusal is final).
    pub connect_attempts: u32,
}

/// A line from the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerCommand {
    /// Zero the window counters: the measured window starts now.
    Measure,
    /// Report the window counters (a [`WorkerMessage::Window`]).
    Report,
}

/// A line to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// Handshakes finished so far, while connecting.
    Progress {
        /// Sessions open.
        established: usize,
        /// Sessions given up on.
        failed: usize,
    },
    /// Every handshake has finished.
    Connected {
        /// Sessions open.
        established: usize,
        /// Sessions given up on.
        failed: usize,
        /// Why, by message.
        errors: Vec<Tally>,
    },
    /// Counters since the last [`WorkerCommand::Measure`].
    Window(WindowCounts),
    /// The worker cannot go on.
    Fatal {
        /// What happened.
        error: String,
    },
}

/// A message and how many sessions it happened to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The message.
    pub what: String,
    /// How often.
    pub count: usize,
}

/// What happened during the measured window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowCounts {
    /// Heartbeats written.
    pub heartbeats_sent: u64,
    /// Acknowledgements (PONG, PINGRESP) received.
    pub heartbeats_acked: u64,
    /// Sessions the server ended (BYE or EOF) or that failed.
    pub sessions_ended: usize,
    /// How they ended, by message.
    pub endings: Vec<Tally>,
    /// Sessions open when the report was taken.
    pub sessions_open: usize,
    /// Round trips, µs, as (value, count) pairs of a histogram.
    pub rtt_us: Vec<(u64, u64)>,
}

/// Counters shared by the session tasks.
struct Shared {
    established: AtomicUsize,
    failed: AtomicUsize,
    open: AtomicUsize,
    sent: AtomicU64,
    acked: AtomicU64,
    ended: AtomicUsize,
    rtt_us: Mutex<Histogram<u64>>,
    handshake_errors: Mutex<BTreeMap<String, usize>>,
    endings: Mutex<BTreeMap<String, usize>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            established: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ended: AtomicUsize::new(0),
            rtt_us: Mutex::new(new_histogram()),
            handshake_errors: Mutex::new(BTreeMap::new()),
            endings: Mutex::new(BTreeMap::new()),
        }
    }

    fn record_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.rtt_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(us.max(1));
    }

    fn take_window(&self, reset: bool) -> WindowCounts {
        let swap_u64 = |counter: &AtomicU64| {
            if reset {
                counter.swap(0, Ordering::Relaxed)
            } else {
                counter.load(Ordering::Relaxed)
            }
        };
        let mut histogram = self.rtt_us.lock().unwrap_or_else(PoisonError::into_inner);
        let rtt_us = histogram
            .iter_recorded()
            .map(|value| (value.value_iterated_to(), value.count_at_value()))
            .collect();
        let mut endings = self.endings.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = WindowCounts {
            heartbeats_sent: swap_u64(&self.sent),
            heartbeats_acked: swap_u64(&self.acked),
            sessions_ended: if reset {
                self.ended.swap(0, Ordering::Relaxed)
            } else {
                self.ended.load(Ordering::Relaxed)
            },
            endings: tallies(&endings),
            sessions_open: self.open.load(Ordering::Relaxed),
            rtt_us,
        };
        if reset {
            histogram.reset();
            endings.clear();
        }
        counts
    }
}

fn new_histogram() -> Histogram<u64> {
    // Three significant digits from 1 µs to an hour: constructor arguments
    // that are valid by construction.
    Histogram::new_with_bounds(1, MAX_RTT_US, 3).unwrap_or_else(|_| unreachable!())
}

/// Rebuilds a histogram from (value, count) pairs, to merge workers' reports.
pub fn histogram_from_pairs<'a>(pairs: impl IntoIterator<Item = &'a (u64, u64)>) -> Histogram<u64> {
    let mut histogram = new_histogram();
    for &(value, count) in pairs {
        // Values come from a histogram with the same bounds.
        let _ = histogram.record_n(value.clamp(1, MAX_RTT_US), count);
    }
    histogram
}

/// A map of message → count as tallies, most frequent first.
pub(crate) fn tallies(map: &BTreeMap<String, usize>) -> Vec<Tally> {
    let mut list: Vec<Tally> = map
        .iter()
        .map(|(what, &count)| Tally {
            what: what.clone(),
            count,
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.what.cmp(&b.what)));
    list
}

fn count_error(map: &Mutex<BTreeMap<String, usize>>, message: String) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    let key = if map.len() >= MAX_ERROR_KINDS && !map.contains_key(&message) {
        "(other errors)".to_owned()
    } else {
        message
    };
    *map.entry(key).or_default() += 1;
}

/// Runs a worker in this process: reads commands from stdin, writes
/// messages to stdout, returns when stdin closes.
///
/// # Errors
/// The runtime cannot start.
pub fn run_as_process(config: &WorkerConfig) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

async fn run(config: &WorkerConfig) -> io::Result<()> {
    let shared = Arc::new(Shared::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_slots = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for offset in 0..config.sessions {
        let config = config.clone();
        let shared = Arc::clone(&shared);
        let connect_slots = Arc::clone(&connect_slots);
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            drive(
                &config,
                config.first_index + offset,
                &shared,
                &connect_slots,
                stop,
            )
            .await;
        });
    }

    // Progress until every handshake has an outcome.
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    loop {
        ticker.tick().await;
        let established = shared.established.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if established + failed >= config.sessions {
            let errors = tallies(
                &shared
                    .handshake_errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            emit(&WorkerMessage::Connected {
                established,
                failed,
                errors,
            })?;
            break;
        }
        emit(&WorkerMessage::Progress {
            established,
            failed,
        })?;
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<WorkerCommand>(&line) {
            Ok(WorkerCommand::Measure) => {
                shared.take_window(true);
            }
            Ok(WorkerCommand::Report) => {
                emit(&WorkerMessage::Window(shared.take_window(false)))?;
            }
            Err(error) => emit(&WorkerMessage::Fatal {
                error: format!("unknown command {line:?}: {error}"),
            })?,
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn emit(message: &WorkerMessage) -> io::Result<()> {
    use std::io::Write as _;
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut stdout = io::stdout().lock();
    stdout.write_all(&line)?;
    stdout.flush()
}

/// One session: handshake (with retries), then heartbeats until stopped
/// or ended by the server.
async fn drive(
    config: &WorkerConfig,
    index: usize,
    shared: &Shared,
    connect_slots: &Semaphore,
    mut stop: watch::Receiver<bool>,
) {
    let name = format!("{}-{index}", config.name_prefix);
    let period = Duration::from_millis(config.period_ms.max(1));
    let mut attempt = 0;
    let (mut stream, mut inbox) = loop {
        attempt += 1;
        let outcome = {
            let Ok(_slot) = connect_slots.acquire().await else {
                return;
            };
            handshake(config, &name, period).await
        };
        match outcome {
            Ok(open) => break open,
            Err(HandshakeError::Refused(why)) => {
                count_error(&shared.handshake_errors, why);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(HandshakeError::Failed(why)) if attempt >= config.connect_attempts.max(1) => {
                count_error(&shared.handshake_errors, why);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(HandshakeError::Failed(_)) => tokio::time::sleep(RETRY_PAUSE * attempt).await,
        }
    };
    shared.established.fetch_add(1, Ordering::Relaxed);
    shared.open.fetch_add(1, Ordering::Relaxed);

    // Each session beats at its own phase, spread over one period, as
    // independent devices would.
    let phase = period.mul_f64(spread_fraction(index));
    let mut next_beat = Instant::now() + phase;
    let mut seq: u32 = 1;
    let mut unanswered: VecDeque<Instant> = VecDeque::new();
    let expects_ack = config.acks || config.dialect == Dialect::Mqtt;
    let mut buf = [0u8; 256];
    let ending = loop {
        tokio::select! {
            _ = stop.changed() => break None,
            () = tokio::time::sleep_until(next_beat) => {
                let bytes = config.dialect.heartbeat_bytes(seq);
                seq = seq.wrapping_add(1);
                let sent_at = Instant::now();
                if let Err(error) = stream.write_all(bytes.as_ref()).await {
                    break Some(format!("write failed: {error}"));
                }
                shared.sent.fetch_add(1, Ordering::Relaxed);
                if expects_ack {
                    unanswered.push_back(sent_at);
                }
                next_beat += period;
                // Behind schedule (the worker itself stalled): skip the
                // missed beats instead of sending a burst.
                let now = Instant::now();
                if next_beat < now {
                    next_beat = now + period;
                }
            }
            read = stream.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break Some("closed by the server (EOF)".to_owned()),
                    Ok(n) => n,
                    Err(error) => break Some(format!("read failed: {error}")),
                };
                let received_at = Instant::now();
                inbox.extend_from_slice(&buf[..n]);
                match take_replies(config.dialect, &mut inbox) {
                    Ok(replies) => {
                        let mut ended = None;
                        for reply in replies {
                            match reply {
                                Reply::HeartbeatAck => {
                                    shared.acked.fetch_add(1, Ordering::Relaxed);
                                    if let Some(sent_at) = unanswered.pop_front() {
                                        shared.record_rtt(received_at - sent_at);
                                    }
                                }
                                Reply::Ended(why) => ended = Some(why),
                                _ => {}
                            }
                        }
                        if ended.is_some() {
                            break ended;
                        }
                    }
                    Err(error) => break Some(error),
                }
            }
        }
    };
    shared.open.fetch_sub(1, Ordering::Relaxed);
    if let Some(why) = ending {
        shared.ended.fetch_add(1, Ordering::Relaxed);
        count_error(&shared.endings, why);
    }
}

/// A deterministic spread of phases in [0, 1): the golden-ratio sequence,
/// so that any prefix of the sessions is evenly spread too.
fn spread_fraction(index: usize) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    (index as f64 * GOLDEN).fract()
}

enum HandshakeError {
    /// The server said no; retrying would not help.
    Refused(String),
    /// Anything else; worth another attempt.
    Failed(String),
}

/// Connects, opens the session and waits for its acceptance. Returns the
/// stream and any bytes read past the acceptance.
async fn handshake(
    config: &WorkerConfig,
    name: &str,
    period: Duration,
) -> Result<(TcpStream, Vec<u8>), HandshakeError> {
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    let attempt = async {
        let mut stream = connect(config.server, config.source)
            .await
            .map_err(|error| HandshakeError::Failed(explain_connect_error(&error, config)))?;
        stream
            .write_all(&config.dialect.open_bytes(name, period, config.acks))
            .await
            .map_err(|error| HandshakeError::Failed(format!("write failed: {error}")))?;
        let mut inbox = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|error| HandshakeError::Failed(format!("read failed: {error}")))?;
            if n == 0 {
                return Err(HandshakeError::Failed(
                    "the server closed the connection during the handshake".to_owned(),
                ));
            }
            inbox.extend_from_slice(&buf[..n]);
            let replies =
                take_replies(config.dialect, &mut inbox).map_err(HandshakeError::Failed)?;
            for reply in replies {
                match reply {
                    Reply::Accepted { .. } => return Ok((stream, inbox)),
                    Reply::Refused(why) => return Err(HandshakeError::Refused(why)),
                    Reply::Ended(why) => return Err(HandshakeError::Failed(why)),
                    Reply::HeartbeatAck | Reply::Other => {}
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(HandshakeError::Failed(format!(
                "no answer to the handshake within {timeout:?}"
            )))
        })
}

/// Decodes every complete reply in `inbox` and removes its bytes.
fn take_replies(dialect: Dialect, inbox: &mut Vec<u8>) -> Result<Vec<Reply>, String> {
    let mut replies = Vec::new();
    let mut offset = 0;
    while let Some((reply, used)) = dialect
        .decode(&inbox[offset..])
        .map_err(|error| error.to_string())?
    {
        replies.push(reply);
        offset += used;
    }
    inbox.drain(..offset);
    Ok(replies)
}

/// Connects from `source` when given. The port is left to `connect`
/// (`IP_BIND_ADDRESS_NO_PORT`): then a local port only has to be unique per
/// destination, and ports in TIME_WAIT from an earlier run can be reused,
/// instead of `bind` reserving one of the ~28,000 ephemeral ports outright.
async fn connect(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(io::Error::from)?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    // Heartbeats are tiny: without NODELAY, Nagle would hold one back behind
    // an unacknowledged predecessor and distort the round trip.
    socket.set_nodelay(true)?;
    socket.connect(server).await
}

/// A connect error in the words of the limit that caused it.
fn explain_connect_error(error: &io::Error, config: &WorkerConfig) -> String {
    let source = config.source.map_or_else(
        || "the default source address".to_owned(),
        |ip| ip.to_string(),
    );
    match error.raw_os_error() {
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE => format!(
            "connect failed: this worker ran out of open files ({error}); use more workers \
             (lower --sessions-per-worker)"
        ),
        Some(code) if code == nix::libc::EADDRNOTAVAIL => format!(
            "connect failed: no free local port on {source} ({error}); the ephemeral range \
             (/proc/sys/net/ipv4/ip_local_port_range) is used up: spread the sessions over \
             more source addresses (lower --sessions-per-worker)"
        ),
        Some(code) if code == nix::libc::ECONNREFUSED => {
            format!(
                "connect failed: nothing listens on {} ({error})",
                config.server
            )
        }
        _ => format!("connect failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_name_the_limit_behind_them() {
        let config = WorkerConfig {
            server: SocketAddr::from(([127, 0, 0, 1], 7070)),
            source: Some(IpAddr::from([127, 0, 0, 9])),
            dialect: Dialect::Lubdub,
            name_prefix: "x".to_owned(),
            first_index: 0,
            sessions: 1,
            period_ms: 1000,
            acks: true,
            connect_concurrency: 1,
            handshake_timeout_ms: 1000,
            connect_attempts: 1,
        };
        let ports = io::Error::from_raw_os_error(nix::libc::EADDRNOTAVAIL);
        let text = explain_connect_error(&ports, &config);
        assert!(text.contains("no free local port on 127.0.0.9"), "{text}");
        let files = io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert!(explain_connect_error(&files, &config).contains("out of open files"));
        let refused = io::Error::from_raw_os_error(nix::libc::ECONNREFUSED);
        assert!(
            explain_connect_error(&refused, &config).contains("nothing listens on 127.0.0.1:7070")
        );
    }

    #[test]
    fn phases_are_spread_over_the_period() {
        let mut buckets = [0usize; 10];
        for index in 0..1000 {
            let fraction = spread_fraction(index);
            assert!((0.0..1.0).contains(&fraction));
            buckets[(fraction * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&count| (90..=110).contains(&count)),
            "{buckets:?}"
        );
    }

    #[test]
    fn histograms_survive_the_trip_through_pairs() {
        let shared = Shared::new();
        for us in [10u64, 20, 20, 5_000, 1_000_000] {
            shared.record_rtt(Duration::from_micros(us));
        }
        let window = shared.take_window(true);
        let merged = histogram_from_pairs(&window.rtt_us);
        assert_eq!(merged.len(), 5);
        assert_eq!(merged.value_at_quantile(0.5), 20);
        assert!(merged.max() >= 999_000, "{}", merged.max());
        assert!(shared.take_window(false).rtt_us.is_empty(), "reset");
    }

    #[test]
    fn error_kinds_are_bounded() {
        let map = Mutex::new(BTreeMap::new());
        for i in 0..100 {
            count_error(&map, format!("error {i}"));
        }
        let list = tallies(&map.lock().expect("not poisoned"));
        assert_eq!(list.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(list.iter().map(|tally| tally.count).sum::<usize>(), 100);
    }

    #[test]
    fn worker_lines_round_trip() {
        let message = WorkerMessage::Progress {
            established: 3,
            failed: 1,
        };
        let line = serde_json::to_string(&message).expect("encodes");
        assert_eq!(line, r#"{"type":"progress","established":3,"failed":1}"#);
        assert_eq!(
            serde_json::from_str::<WorkerMessage>(&line).expect("decodes"),
            message
        );
        assert_eq!(
            serde_json::from_str::<WorkerCommand>(r#""measure""#).expect("decodes"),
            WorkerCommand::Measure
        );
    }
}
