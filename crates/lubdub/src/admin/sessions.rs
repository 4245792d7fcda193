//! `GET /sessions`: the whole list streamed as one JSON array, fetched from
//! the event loop one page at a time; `?limit=N&after=CURSOR` for one page
//! with the next cursor; `?name=NAME` for one session, looked up by name.
//! Each answer carries a `Lubdub-Seq` header: the number of the last
//! presence event published before the listing was taken (see `events`).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::{ServerControl, ServerStopped, SessionInfo, MAX_SESSIONS_PER_PAGE};

/// What a `/sessions` query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    /// Every session, as one JSON array.
    All,
    /// One page: `{"sessions": [...], "next": CURSOR or null}`.
    Page { after: Option<u64>, limit: usize },
    /// The session holding this name, as an array of zero or one.
    Named(String),
}

/// Why a `/sessions` query was refused (400, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum QueryError {
    #[error("unknown parameter {0:?} (known: name, limit, after)")]
    Unknown(String),
    #[error("{name}={value:?} is not a whole number")]
    NotANumber { name: &'static str, value: String },
    #[error("limit must be 1 to {MAX_SESSIONS_PER_PAGE}, not {0}")]
    Limit(usize),
    #[error("name cannot be combined with limit or after")]
    NameWithPage,
    #[error("{0} given twice")]
    Repeated(&'static str),
}

fn parse_query(query: Option<&str>) -> Result<Query, QueryError> {
    let mut name = None;
    let mut limit = None;
    let mut after = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "name" => set_once(&mut name, "name", value.into_owned())?,
            "limit" => set_once(&mut limit, "limit", number("limit", &value)?)?,
            "after" => set_once(&mut after, "after", number("after", &value)?)?,
            other => return Err(QueryError::Unknown(other.to_owned())),
        }
    }
    match (name, limit, after) {
        (Some(name), None, None) => Ok(Query::Named(name)),
        (Some(_), _, _) => Err(QueryError::NameWithPage),
        (None, None, None) => Ok(Query::All),
        (None, limit, after) => {
            let limit = limit.map_or(Ok(MAX_SESSIONS_PER_PAGE), |limit| {
                usize::try_from(limit)
                    .ok()
                    .filter(|limit| (1..=MAX_SESSIONS_PER_PAGE).contains(limit))
                    .ok_or(QueryError::Limit(
                        usize::try_from(limit).unwrap_or(usize::MAX),
                    ))
            })?;
            Ok(Query::Page { after, limit })
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), QueryError> {
    match slot.replace(value) {
        Some(_) => Err(QueryError::Repeated(name)),
        None => Ok(()),
    }
}

fn number(name: &'static str, value: &str) -> Result<u64, QueryError> {
    value.parse().map_err(|_| QueryError::NotANumber {
        name,
        value: value.to_owned(),
    })
}

pub(super) async fn sessions(
    State(control): State<ServerControl>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = match parse_query(query.as_deref()) {
        Ok(query) => query,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    // Read before the listing is taken: it reflects at least every event
    // up to this one, and changes numbered after it bring it up to date.
    let seq = control.presence().last_seq();
    let answer = match query {
        Query::All => Ok(stream_all(control)),
        Query::Page { after, limit } => control
            .sessions_page(after, limit)
            .await
            .map(|page| Json(page).into_response()),
        Query::Named(name) => control
            .session_named(&name)
            .await
            .map(|session| Json(Vec::from_iter(session)).into_response()),
    };
    let mut response = answer.unwrap_or_else(|error| {
        (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
    });
    response.headers_mut().insert(SEQ_HEADER, seq.into());
    response
}

/// The response header naming the last presence event a listing reflects.
pub(super) const SEQ_HEADER: &str = "lubdub-seq";

/// Where a streamed listing stands.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The next page starts after this cursor (`None`: at the start).
    after: Option<u64>,
    /// Sessions written so far, for the commas.
    written: u64,
    done: bool,
}

/// Every session as one JSON array, in slab order, written page by page:
/// the loop is asked for the next page only when the previous one has been
/// taken by the connection, so a slow reader costs the loop nothing and the
/// server holds at most one page per listing. Sessions that come or go
/// during the listing may be missing or present (see `SessionPage`).
fn stream_all(control: ServerControl) -> Response {
    let start = Progress {
        after: None,
        written: 0,
        done: false,
    };
    let pages = futures_util::stream::unfold(start, move |progress| {
        let control = control.clone();
        async move {
            if progress.done {
                return None;
            }
            let page = match control
                .sessions_page(progress.after, MAX_SESSIONS_PER_PAGE)
                .await
            {
                Ok(page) => page,
                // Ends the body early: the client sees a truncated answer.
                Err(error) => {
                    let done = Progress {
                        done: true,
                        ..progress
                    };
                    return Some((Err(error), done));
                }
            };
            let mut chunk = String::new();
            if progress.after.is_none() {
                chunk.push('[');
            }
            let mut written = progress.written;
            for session in &page.sessions {
                if written > 0 {
                    chunk.push(',');
                }
                written += 1;
                chunk.push_str(&to_json(session));
            }
            if page.next.is_none() {
                chunk.push(']');
            }
            let next = Progress {
                after: page.next,
                written,
                done: page.next.is_none(),
            };
            Some((Ok::<_, ServerStopped>(chunk), next))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(pages),
    )
        .into_response()
}

fn to_json(session: &SessionInfo) -> String {
    serde_json::to_string(session).expect("a SessionInfo always serialises (plain fields)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_into_what_they_ask_for() {
        assert_eq!(parse_query(None), Ok(Query::All));
        assert_eq!(parse_query(Some("")), Ok(Query::All));
        assert_eq!(
            parse_query(Some("name=al%20ice")),
            Ok(Query::Named("al ice".into()))
        );
        assert_eq!(
            parse_query(Some("limit=10&after=42")),
            Ok(Query::Page {
                after: Some(42),
                limit: 10
            })
        );
        assert_eq!(
            parse_query(Some("after=7")),
            Ok(Query::Page {
                after: Some(7),
                limit: MAX_SESSIONS_PER_PAGE
            })
        );
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        assert_eq!(parse_query(Some("limit=0")), Err(QueryError::Limit(0)));
        assert_eq!(
            parse_query(Some("limit=5000")),
            Err(QueryError::Limit(5000))
        );
        assert_eq!(
            parse_query(Some("after=x")),
            Err(QueryError::NotANumber {
                name: "after",
                value: "x".into()
            })
        );
        assert_eq!(
            parse_query(Some("name=a&limit=3")),
            Err(QueryError::NameWithPage)
        );
        assert_eq!(
            parse_query(Some("name=a&name=b")),
            Err(QueryError::Repeated("name"))
        );
        assert_eq!(
            parse_query(Some("sort=name")),
            Err(QueryError::Unknown("sort".into()))
        );
    }
}
