//! The session task: one established session driven until it ends
//! (heartbeats by [`ClientSchedule`], inbound frames, the application's
//! messages), then reconnection with backoff until the client stops.

use std::time::{Duration, Instant};

use lubdub_core::client::{ClientAction, ClientSchedule};
use lubdub_core::protocol::rooms::Watch;
use lubdub_core::protocol::{Bye, Frame, Message, ReasonCode};
use tokio::sync::mpsc;

use super::presence::remember;
use super::transport::Established;
use super::{dial, ClientConfig, ClientEvent, Outgoing, Status, StopCause, TlsConnector};

/// How one session ended.
enum SessionEnd {
    /// The application closed the client.
    Closed,
    /// Reconnecting makes sense, after at least `retry_after`.
    Lost {
        reason: String,
        retry_after: Duration,
    },
    /// Reconnecting would not help.
    Final { reason: String, cause: StopCause },
}

pub(super) async fn run(
    mut config: ClientConfig,
    tls: Option<TlsConnector>,
    first: Established,
    mut outgoing: mpsc::Receiver<Outgoing>,
    events: mpsc::UnboundedSender<ClientEvent>,
) {
    let emit = |status: Status| {
        // The application may have stopped listening; the session goes on.
        let _ = events.send(ClientEvent::Status(status));
    };
    let mut next = Some(first);
    let mut attempt: u32 = 0;
    let mut retry_after = Duration::ZERO;
    loop {
        let established = match next.take() {
            Some(established) => established,
            None => {
                // The server's hint plus our own jitter: a server that sent
                // every session the same hint would otherwise get them all
                // back in the same instant.
                let delay = retry_after + config.backoff.delay(attempt, rand::random::<f64>());
                attempt += 1;
                emit(Status::Reconnecting { attempt, delay });
                if wait_or_close(delay, &mut outgoing, &mut config).await {
                    emit(closed());
                    return;
                }
                match dial(&config, tls.as_ref()).await {
                    Ok(established) => established,
                    Err(error) if error.is_retryable() => {
                        emit(Status::ServerLost {
                            reason: crate::report::chain(&error),
                        });
                        retry_after = Duration::ZERO;
                        continue;
                    }
                    Err(error) => {
                        emit(Status::Stopped {
                            reason: crate::report::chain(&error),
                            cause: StopCause::of_connect(&error),
                        });
                        return;
                    }
                }
            }
        };
        let welcome = established.welcome;
        let session_started = Instant::now();
        let healthy_after = Duration::from_millis(u64::from(welcome.granted_interval_ms))
            * u32::from(welcome.max_missed);
        emit(Status::Connected {
            server: config.server.clone(),
            session_id: welcome.session_id,
            epoch: welcome.epoch,
            interval: Duration::from_millis(u64::from(welcome.granted_interval_ms)),
            max_missed: u32::from(welcome.max_missed),
        });
        let end = drive(&mut config, established, &mut outgoing, &events).await;
        // Only a session that lasted a whole deadline resets the backoff, so
        // a server that accepts and drops at once is not hammered.
        if session_started.elapsed() >= healthy_after {
            attempt = 0;
        }
        match end {
            SessionEnd::Closed => {
                emit(closed());
                return;
            }
            SessionEnd::Final { reason, cause } => {
                emit(Status::Stopped { reason, cause });
                return;
            }
            SessionEnd::Lost {
                reason,
                retry_after: hint,
            } => {
                emit(Status::ServerLost { reason });
                retry_after = hint;
            }
        }
    }
}

fn closed() -> Status {
    Status::Stopped {
        reason: "closed by the application".into(),
        cause: StopCause::Closed,
    }
}

/// Waits `delay`, or until the application closes (`true`). A status,
/// will, room or watch set meanwhile is kept, for the next session.
async fn wait_or_close(
    delay: Duration,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    config: &mut ClientConfig,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return false,
            command = outgoing.recv() => match command {
                // Messages typed while disconnected are dropped, not queued for ever.
                Some(Outgoing::Message { .. }) => continue,
                Some(Outgoing::Close) | None => return true,
                Some(request) => remember(config, &request),
            },
        }
    }
}

/// Runs one established session until it ends.
async fn drive(
    config: &mut ClientConfig,
    established: Established,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> SessionEnd {
    let Established {
        welcome,
        mut reader,
        mut writer,
        ..
    } = established;
    let interval = Duration::from_millis(u64::from(welcome.granted_interval_ms));
    let mut schedule = ClientSchedule::new(
        Instant::now(),
        interval,
        u32::from(welcome.max_missed),
        !config.one_way,
    );
    // A write that blocks this long means the server stopped reading.
    let write_limit = schedule.deadline_after();
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        retry_after: Duration::ZERO,
    };
    // Rooms, the will and watches are the session's: each new session
    // registers them again (the will after the rooms it may be sent to).
    let rooms = config
        .rooms
        .iter()
        .map(|room| Frame::Join { room: room.clone() });
    let will = config.will.iter().map(|will| Frame::Will(will.clone()));
    let watches = config.watches.iter().map(|(target, mode)| {
        Frame::Watch(Watch {
            mode: *mode as u8,
            target: target.clone(),
        })
    });
    let again: Vec<Frame> = rooms.chain(will).chain(watches).collect();
    for frame in again {
        match tokio::time::timeout(write_limit, writer.write_frame(&frame)).await {
            Ok(Ok(())) => schedule.on_sent(Instant::now()),
            Ok(Err(error)) => return lost(format!("write failed: {error}")),
            Err(_) => return lost("the server stopped reading".into()),
        }
    }
    loop {
        let wake = tokio::time::Instant::from_std(schedule.poll_timeout());
        let to_send = tokio::select! {
            // Inbound first: after this process was stopped or starved, the
            // frames waiting in the socket are read before the expired timer
            // can blame the server for our own silence.
            biased;
            frame = reader.read_frame() => {
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return lost("the server closed the connection".into()),
                    Err(error) => return lost(format!("read failed: {error}")),
                };
                let pong_seq = match frame {
                    Frame::Pong { seq } => Some(seq),
                    _ => None,
                };
                schedule.on_received(Instant::now(), pong_seq);
                match frame {
                    Frame::Msg(message) => {
                        let _ = events.send(ClientEvent::Message(message));
                    }
                    Frame::Notice(reason) => {
                        let _ = events.send(ClientEvent::Notice(reason));
                    }
                    Frame::Presence(update) => {
                        let _ = events.send(ClientEvent::Presence(update));
                    }
                    Frame::Pong { .. } => {}
                    Frame::Bye(bye) => return end_for_bye(bye),
                    other => {
                        let text = format!("{:?} is not sent by servers", other.kind());
                        let _ = writer.write_frame(&Frame::bye(ReasonCode::UnexpectedFrame, text.clone())).await;
                        return lost(format!("protocol error: {text}"));
                    }
                }
                // With inbound first, a steady stream of messages could keep
                // the timer branch from ever running: send a due PING here.
                due_ping(&mut schedule)
            }
            command = outgoing.recv() => match command {
                Some(Outgoing::Message { to, body }) => Some(Frame::Msg(Message { from: String::new(), to, body })),
                Some(Outgoing::Close) | None => {
                    let _ = writer.write_frame(&Frame::bye(ReasonCode::Normal, "quit")).await;
                    return SessionEnd::Closed;
                }
                // Kept for the next reconnect too.
                Some(request) => {
                    remember(config, &request);
                    Some(match request {
                        Outgoing::Status(text) => Frame::Status { text },
                        Outgoing::Will(will) => Frame::Will(will),
                        Outgoing::Join(room) => Frame::Join { room },
                        Outgoing::Leave(room) => Frame::Leave { room },
                        Outgoing::Watch(target, mode) => Frame::Watch(Watch { mode: mode as u8, target }),
                        Outgoing::Message { .. } | Outgoing::Close => unreachable!("matched above"),
                    })
                }
            },
            () = tokio::time::sleep_until(wake) => match schedule.handle_timeout(Instant::now()) {
                ClientAction::SendPing { seq, rtt_us } => Some(Frame::Ping { seq, rtt_us }),
                ClientAction::ServerDead { silent_for } => {
                    return lost(format!(
                        "no answer from the server for {} ({} missed intervals)",
                        humantime::format_duration(Duration::from_millis(silent_for.as_millis() as u64)),
                        welcome.max_missed
                    ));
                }
                ClientAction::Wait => None,
            },
        };
        if let Some(frame) = to_send {
            match tokio::time::timeout(write_limit, writer.write_frame(&frame)).await {
                Ok(Ok(())) => schedule.on_sent(Instant::now()),
                Ok(Err(error)) => return lost(format!("write failed: {error}")),
                Err(_) => return lost("the server stopped reading".into()),
            }
        }
    }
}

/// The PING to send now, if one is due. The server is alive (a frame just
/// arrived), so only a PING can be due here.
fn due_ping(schedule: &mut ClientSchedule) -> Option<Frame> {
    let now = Instant::now();
    if now < schedule.poll_timeout() {
        return None;
    }
    match schedule.handle_timeout(now) {
        ClientAction::SendPing { seq, rtt_us } => Some(Frame::Ping { seq, rtt_us }),
        ClientAction::Wait | ClientAction::ServerDead { .. } => None,
    }
}

fn end_for_bye(bye: Bye) -> SessionEnd {
    let reason = format!("server said BYE: {} ({})", bye.reason.text, bye.reason.code);
    match bye.reason.code {
        // Reconnecting would steal the name back, and the two clients would
        // take it from each other for ever.
        ReasonCode::TakenOver => SessionEnd::Final {
            reason,
            cause: StopCause::TakenOver,
        },
        _ => SessionEnd::Lost {
            reason,
            retry_after: Duration::from_millis(u64::from(bye.retry_after_ms)),
        },
    }
}
