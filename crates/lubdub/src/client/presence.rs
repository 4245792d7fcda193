//! The client's rooms and watches: joining and leaving rooms, watching
//! names and rooms, all kept in the configuration so that every reconnect
//! joins and watches again (each watch then starts with a fresh snapshot).
//! Changes arrive as [`ClientEvent::Presence`](super::ClientEvent::Presence).

use lubdub_core::protocol::rooms::WatchMode;

use super::{Client, ClientClosed, ClientConfig, Outgoing};

impl Client {
    /// Joins `room` (`#lobby`): messages sent to it reach this client, and
    /// its watchers see this client. At most 32 rooms; a NOTICE event says
    /// why a JOIN was refused.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn join(&self, room: &str) -> Result<(), ClientClosed> {
        self.request(Outgoing::Join(room.to_owned())).await
    }

    /// Leaves `room`.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn leave(&self, room: &str) -> Result<(), ClientClosed> {
        self.request(Outgoing::Leave(room.to_owned())).await
    }

    /// Watches a name or a room: a snapshot (a `snapshot` update, then one
    /// `member` update per member), then every change after it, as
    /// [`ClientEvent::Presence`](super::ClientEvent::Presence) events. At
    /// most 64 watches; rooms of more than 10,000 members (or too large for half this
    /// session's queue on the server) are watched by
    /// count ([`watch_count`](Self::watch_count)).
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn watch(&self, target: &str) -> Result<(), ClientClosed> {
        self.request(Outgoing::Watch(target.to_owned(), WatchMode::Full))
            .await
    }

    /// Watches a room's member count: a `snapshot` with the count, then a
    /// `count` update at every change.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn watch_count(&self, room: &str) -> Result<(), ClientClosed> {
        self.request(Outgoing::Watch(room.to_owned(), WatchMode::Count))
            .await
    }

    /// Stops watching `target`.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn unwatch(&self, target: &str) -> Result<(), ClientClosed> {
        self.request(Outgoing::Watch(target.to_owned(), WatchMode::Stop))
            .await
    }

    /// Asks once who is in a room (or whether a name is online): a
    /// snapshot, and no changes after it.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn who(&self, target: &str) -> Result<(), ClientClosed> {
        self.request(Outgoing::Watch(target.to_owned(), WatchMode::Once))
            .await
    }

    async fn request(&self, request: Outgoing) -> Result<(), ClientClosed> {
        self.outgoing.send(request).await.map_err(|_| ClientClosed)
    }
}

/// Keeps what a request changes in `config`, for the next reconnect.
pub(super) fn remember(config: &mut ClientConfig, request: &Outgoing) {
    match request {
        Outgoing::Status(text) => {
            config.status = Some(text.clone()).filter(|text| !text.is_empty());
        }
        Outgoing::Will(will) => {
            config.will = Some(will.clone()).filter(|will| !will.body.is_empty());
        }
        Outgoing::Join(room) => {
            if !config.rooms.contains(room) {
                config.rooms.push(room.clone());
            }
        }
        Outgoing::Leave(room) => config.rooms.retain(|held| held != room),
        Outgoing::Watch(target, mode) => {
            config.watches.retain(|(held, _)| held != target);
            if matches!(mode, WatchMode::Full | WatchMode::Count) {
                config.watches.push((target.clone(), *mode));
            }
        }
        Outgoing::Message { .. } | Outgoing::Close => {}
    }
}

/// One presence update in words, for people: `bob went offline (timeout)`,
/// `#lobby: 3 members`. Names, rooms and statuses are escaped.
pub fn describe(update: &super::PresenceUpdate) -> String {
    use crate::escape::Escaped;
    use lubdub_core::protocol::rooms::UpdateKind;
    let name = Escaped(&update.name);
    let target = Escaped(&update.target);
    let text = Escaped(&update.text);
    let status = if update.text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    };
    let room = update.target.starts_with('#');
    // A member's change is said with its room: one watching both `bob`
    // and `#lobby` sees which watch each line answers.
    let line = describe_kind(update, room, &name, &target, &text, &status);
    let of_member = room
        && matches!(
            update.kind,
            UpdateKind::Status | UpdateKind::Suspect | UpdateKind::Recovered
        );
    if of_member {
        format!("{target}: {line}")
    } else {
        line
    }
}

fn describe_kind(
    update: &super::PresenceUpdate,
    room: bool,
    name: &impl std::fmt::Display,
    target: &impl std::fmt::Display,
    text: &impl std::fmt::Display,
    status: &str,
) -> String {
    use lubdub_core::protocol::rooms::UpdateKind;
    match update.kind {
        UpdateKind::Snapshot if room => format!("{target}: {} member(s)", update.count),
        UpdateKind::Snapshot if update.count == 0 => format!("{target} is offline"),
        UpdateKind::Snapshot => format!("{target}:"),
        UpdateKind::Member => {
            let suspect = if update.suspect { " [suspect]" } else { "" };
            format!("  {name} is online{status}{suspect}")
        }
        UpdateKind::Online => format!("{name} is online{status}"),
        UpdateKind::Takeover => format!("{name} reconnected (session {})", update.session_id),
        UpdateKind::Status if update.text.is_empty() => format!("{name} cleared their status"),
        UpdateKind::Status => format!("{name}'s status: {text}"),
        UpdateKind::Suspect => format!("{name} is suspect: silent past half their deadline"),
        UpdateKind::Recovered => format!("{name} is heard from again"),
        UpdateKind::Offline => format!("{name} went offline ({text})"),
        UpdateKind::Joined => format!("{name} joined {target} ({} now)", update.count),
        UpdateKind::Left if update.text == "left" => {
            format!("{name} left {target} ({} now)", update.count)
        }
        UpdateKind::Left => format!("{name} left {target}: {text} ({} now)", update.count),
        UpdateKind::Count => format!("{target}: {} member(s)", update.count),
        UpdateKind::Resync => format!("{target}: changes were lost; a fresh snapshot follows"),
        UpdateKind::Other(kind) => format!("{target}: an update of unknown kind {kind}"),
    }
}

/// One presence update as a JSON object, for scripts (one per line).
pub fn to_json(update: &super::PresenceUpdate) -> serde_json::Value {
    let mut object = serde_json::json!({
        "seq": update.seq,
        "kind": update.kind.label(),
        "target": update.target,
    });
    let fields = object.as_object_mut().expect("built as an object");
    if !update.name.is_empty() {
        fields.insert("name".into(), update.name.clone().into());
    }
    if update.session_id != 0 {
        fields.insert("session".into(), update.session_id.into());
    }
    if update.suspect {
        fields.insert("suspect".into(), true.into());
    }
    let room = update.target.starts_with('#');
    use lubdub_core::protocol::rooms::UpdateKind;
    if room
        && matches!(
            update.kind,
            UpdateKind::Snapshot | UpdateKind::Joined | UpdateKind::Left | UpdateKind::Count
        )
    {
        fields.insert("count".into(), update.count.into());
    }
    let text_field = match update.kind {
        UpdateKind::Offline | UpdateKind::Left => Some("reason"),
        UpdateKind::Member
        | UpdateKind::Online
        | UpdateKind::Status
        | UpdateKind::Joined
        | UpdateKind::Takeover => Some("status"),
        _ => None,
    };
    if let Some(field) = text_field {
        if !update.text.is_empty() || update.kind == UpdateKind::Status {
            fields.insert(field.into(), update.text.clone().into());
        }
    }
    object
}
