//! `GET /rooms`: every room with its member count; `GET /rooms/{room}`:
//! one room's members (name, session, status, suspect), up to `?limit=`.
//! The room may be written without its `#` (`/rooms/lobby`), since `#`
//! starts a URL's fragment. Each answer carries the number of the last
//! presence event published before it was taken (`seq`, and the
//! `Lubdub-Seq` header): changes after it (the event stream's `join`,
//! `leave`, `offline` with their `rooms`) bring it up to date.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lubdub_core::protocol::rooms::validate_room;
use serde::Serialize;

use super::sessions::SEQ_HEADER;
use crate::server::ServerControl;

/// Members one answer lists by default, and at most.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;

#[derive(Serialize)]
struct RoomCount<'a> {
    room: &'a str,
    members: u32,
}

#[derive(Serialize)]
struct Member<'a> {
    name: &'a str,
    session: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    suspect: bool,
}

pub(super) async fn rooms(State(control): State<ServerControl>) -> Response {
    let hub = control.presence();
    let seq = hub.last_seq();
    let rooms = hub.rooms().list();
    let listed: Vec<RoomCount<'_>> = rooms
        .iter()
        .map(|(room, members)| RoomCount {
            room,
            members: *members,
        })
        .collect();
    let body = serde_json::json!({ "seq": seq, "rooms": listed });
    with_seq(Json(body).into_response(), seq)
}

pub(super) async fn room(
    State(control): State<ServerControl>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let room = if room.starts_with('#') {
        room
    } else {
        format!("#{room}")
    };
    if let Err(error) = validate_room(&room) {
        return (
            StatusCode::BAD_REQUEST,
            format!("invalid room {room:?}: {error}\n"),
        )
            .into_response();
    }
    let limit = match limit(query.as_deref()) {
        Ok(limit) => limit,
        Err(text) => return (StatusCode::BAD_REQUEST, format!("{text}\n")).into_response(),
    };
    let hub = control.presence();
    let seq = hub.last_seq();
    let listed = hub.rooms().members(&room, limit);
    let marks = hub.marks(listed.listed.iter().map(|(name, _)| &**name));
    let members: Vec<Member<'_>> = listed
        .listed
        .iter()
        .zip(&marks)
        .map(|((name, session), mark)| {
            let mark = mark.as_ref().filter(|mark| mark.session_id == *session);
            Member {
                name,
                session: *session,
                status: mark.and_then(|mark| mark.status.as_deref()),
                suspect: mark.is_some_and(|mark| mark.suspect),
            }
        })
        .collect();
    let body = serde_json::json!({
        "seq": seq,
        "room": room,
        "count": listed.count,
        "members": members,
    });
    with_seq(Json(body).into_response(), seq)
}

fn limit(query: Option<&str>) -> Result<usize, String> {
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| format!("limit must be 1 to {MAX_LIMIT}, not {value:?}"))?;
            }
            other => return Err(format!("unknown parameter {other:?} (known: limit)")),
        }
    }
    Ok(limit)
}

fn with_seq(mut response: Response, seq: u64) -> Response {
    response.headers_mut().insert(SEQ_HEADER, seq.into());
    response
}
