//! `GET /events`: every change of presence as Server-Sent Events, each with
//! the hub's number as its `id`, filtered by `?names=` and `?kinds=`, and
//! resumed after `Last-Event-ID` (or `?after=N`) from the hub's history.
//!
//! A consumer that asks for events the hub no longer holds, or that falls
//! further behind the live ring than it holds, gets a `resync` change: its
//! state may miss changes, and it rebuilds it from `GET /sessions` (whose
//! `Lubdub-Seq` header names the last change the listing reflects), then
//! applies the changes numbered after it. A stream costs the server no
//! memory beyond the hub's rings however slowly it is read.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::watch;

use super::listener::AdminConnection;
use crate::server::changes::{Change, KINDS};
use crate::server::{FeedItem, PresenceEvent, PresenceFeed, ServerControl};
use lubdub_core::protocol::rooms::validate_room;

/// Quiet time after which a comment line is sent, so that proxies and
/// clients see the stream alive (and a vanished client is noticed).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Most names one stream may filter on.
pub const MAX_FILTER_NAMES: usize = 1_000;

/// What a stream passes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filter {
    /// Only these names (`None`: all, unless `rooms` is set).
    names: Option<HashSet<String>>,
    /// Only the changes of members of these rooms, and the rooms' joins
    /// and leaves (`None`: all, unless `names` is set). With `names`
    /// too, a change passes when it is of either.
    rooms: Option<HashSet<String>>,
    /// Only these kinds (`None`: all).
    kinds: Option<HashSet<&'static str>>,
    /// Resume after this event number.
    after: Option<u64>,
}

impl Filter {
    /// Whether the names and rooms asked for take in this event.
    fn follows(&self, event: &PresenceEvent) -> bool {
        if self.names.is_none() && self.rooms.is_none() {
            return true;
        }
        let by_name = self
            .names
            .as_ref()
            .is_some_and(|names| names.contains(&event.name));
        by_name
            || self
                .rooms
                .as_ref()
                .is_some_and(|rooms| event.rooms.iter().any(|(room, _)| rooms.contains(&**room)))
    }

    fn passes(&self, change: &Change<'_>) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(change.kind))
    }
}

/// Why a `/events` query was refused (400, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum QueryError {
    #[error("unknown parameter {0:?} (known: names, rooms, kinds, after)")]
    Unknown(String),
    #[error("unknown kind {0:?} (kinds: online, takeover, status, suspect, recovered, offline, join, leave)")]
    Kind(String),
    #[error("invalid room {0:?}: {1}")]
    Room(String, String),
    #[error("after={0:?} is not a whole number")]
    After(String),
    #[error("Last-Event-ID {0:?} is not a whole number")]
    LastEventId(String),
    #[error("more than {MAX_FILTER_NAMES} names")]
    TooManyNames,
}

fn parse(query: Option<&str>, last_event_id: Option<&str>) -> Result<Filter, QueryError> {
    let mut filter = Filter::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "names" | "name" => {
                let names = filter.names.get_or_insert_with(HashSet::new);
                names.extend(
                    value
                        .split(',')
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned),
                );
                if names.len() > MAX_FILTER_NAMES {
                    return Err(QueryError::TooManyNames);
                }
            }
            "rooms" | "room" => {
                let rooms = filter.rooms.get_or_insert_with(HashSet::new);
                for room in value.split(',').filter(|room| !room.is_empty()) {
                    // `#` starts a URL's fragment: `rooms=lobby` (or `%23lobby`).
                    let room = if room.starts_with('#') {
                        room.to_owned()
                    } else {
                        format!("#{room}")
                    };
                    validate_room(&room)
                        .map_err(|error| QueryError::Room(room.clone(), error.to_string()))?;
                    rooms.insert(room);
                }
                if rooms.len() > MAX_FILTER_NAMES {
                    return Err(QueryError::TooManyNames);
                }
            }
            "kinds" | "kind" => {
                let kinds = filter.kinds.get_or_insert_with(HashSet::new);
                for kind in value.split(',').filter(|kind| !kind.is_empty()) {
                    let known = KINDS
                        .iter()
                        .find(|known| **known == kind)
                        .ok_or_else(|| QueryError::Kind(kind.to_owned()))?;
                    kinds.insert(known);
                }
            }
            "after" => {
                let after = value
                    .parse()
                    .map_err(|_| QueryError::After(value.clone().into_owned()))?;
                filter.after = Some(after);
            }
            other => return Err(QueryError::Unknown(other.to_owned())),
        }
    }
    // The header is what a reconnecting EventSource sends: it wins.
    if let Some(id) = last_event_id {
        let after = id
            .trim()
            .parse()
            .map_err(|_| QueryError::LastEventId(id.to_owned()))?;
        filter.after = Some(after);
    }
    Ok(filter)
}

pub(super) async fn events(
    State(control): State<ServerControl>,
    Extension(connection): Extension<AdminConnection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let filter = match parse(query.as_deref(), last_event_id.as_deref()) {
        Ok(filter) => filter,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    // A stream is no request to be finished within the connection's time
    // limit: it lasts until the client or the server goes.
    connection.streaming();
    let hub = control.presence();
    let (backlog, resync, feed) = match filter.after {
        Some(after) => {
            let resumed = hub.resume(after);
            (resumed.backlog, resumed.resync, resumed.feed)
        }
        None => (Vec::new(), false, hub.subscribe()),
    };
    // A comment first, so that a reader knows the stream is open (and a
    // person running curl what it is).
    let opened = Event::default().comment(format!(
        "lubdub presence events; last change so far: {}",
        hub.last_seq()
    ));
    let first = resync.then(|| resync_event(hub.last_seq(), None));
    let filter = Arc::new(filter);
    let held = stream::iter(std::iter::once(opened).chain(first).chain(
        backlog.into_iter().filter_map({
            let filter = Arc::clone(&filter);
            move |event| render(&event, &filter)
        }),
    ));
    let live = live(feed, filter, control.clone());
    let until_stopped = stopped(connection.stopped());
    let stream = held
        .chain(live)
        .take_until(until_stopped)
        .map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// The live changes after the hub's history, with a `resync` wherever the
/// stream fell behind the ring.
/// `filter` is shared, not copied per change: it may hold a thousand names.
fn live(
    feed: PresenceFeed,
    filter: Arc<Filter>,
    control: ServerControl,
) -> impl Stream<Item = Event> {
    stream::unfold(feed, move |mut feed| {
        let filter = Arc::clone(&filter);
        let control = control.clone();
        async move {
            loop {
                match feed.recv().await? {
                    FeedItem::Event(event) => {
                        if let Some(rendered) = render(&event, &filter) {
                            return Some((rendered, feed));
                        }
                    }
                    FeedItem::Gap { missed } => {
                        let event = resync_event(control.presence().last_seq(), Some(missed));
                        return Some((event, feed));
                    }
                }
            }
        }
    })
}

/// Completes when the server shuts the admin API down.
async fn stopped(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: stopped too.
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

fn render(event: &PresenceEvent, filter: &Filter) -> Option<Event> {
    // The name and rooms first: a stream that follows a few names skips
    // the rest without building their changes.
    if !filter.follows(event) {
        return None;
    }
    let change = Change::of(event)?;
    if !filter.passes(&change) {
        return None;
    }
    let data = event.change_json()?;
    Some(Event::default().id(change.seq.to_string()).data(data))
}

/// The stream lost changes (`missed`, when known): the consumer rebuilds
/// its state. No `id`: the consumer's last id stays the last change it saw.
fn resync_event(last_seq: u64, missed: Option<u64>) -> Event {
    let data = match missed {
        Some(missed) => format!(r#"{{"kind":"resync","last_seq":{last_seq},"missed":{missed}}}"#),
        None => format!(r#"{{"kind":"resync","last_seq":{last_seq}}}"#),
    };
    Event::default().data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_ones_say_why() {
        let filter = parse(Some("names=alice,bob&kinds=offline&after=7"), None).expect("parses");
        assert_eq!(filter.names.expect("names").len(), 2);
        assert_eq!(filter.kinds.expect("kinds").len(), 1);
        assert_eq!(filter.after, Some(7));
        assert_eq!(parse(None, Some("12")).expect("parses").after, Some(12));
        assert_eq!(
            parse(Some("after=3"), Some("12"))
                .expect("the header wins")
                .after,
            Some(12)
        );
        assert_eq!(
            parse(Some("kinds=gone"), None),
            Err(QueryError::Kind("gone".to_owned()))
        );
        assert_eq!(
            parse(Some("place=x"), None),
            Err(QueryError::Unknown("place".to_owned()))
        );
        let rooms = parse(Some("rooms=lobby,%23game"), None).expect("parses");
        assert_eq!(rooms.rooms.expect("rooms").len(), 2);
        assert!(matches!(
            parse(Some("rooms=lob%20by"), None),
            Err(QueryError::Room(..))
        ));
        assert_eq!(
            parse(None, Some("x")),
            Err(QueryError::LastEventId("x".to_owned()))
        );
    }
}
