//! Rooms and watches as the protocol sees them: which room names are
//! valid, how many rooms and watches a session may hold, and the frames
//! that carry them (JOIN, LEAVE, WATCH from clients; PRESENCE from the
//! server). The server's bookkeeping lives in the `lubdub` crate; this
//! module only says what is allowed and what the bytes mean.

/// Longest room name, `#` included, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// Rooms one session may be in at once: bounds what a session costs in
/// the room directory (and what its departure publishes).
pub const MAX_ROOMS_PER_SESSION: usize = 32;

/// Targets one session may watch at once.
pub const MAX_WATCHES_PER_SESSION: usize = 64;

/// Largest room a full (listing) watch or a `once` watch snapshots; a
/// larger room can be watched by count. A server also refuses a listing
/// whose bytes would not fit half of the watcher's outbound queue (10,000
/// members of 20-byte names without statuses take about 560 KB; the
/// default queue is 1 MiB), and charges it to the watcher's fan-out
/// budget as one delivery per member.
pub const MAX_LISTED_MEMBERS: usize = 10_000;

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// It does not start with `#`.
    #[error("a room name starts with '#', as in #lobby")]
    NoHash,
    /// Nothing after the `#`.
    #[error("a room name needs at least one character after '#'")]
    Empty,
    /// Longer than [`MAX_ROOM_LEN`].
    #[error("room name is {len} bytes; at most {MAX_ROOM_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character other than ASCII letters, digits, `_`, `-`, `.`, `:`.
    #[error("room names hold ASCII letters, digits, '_', '-', '.' and ':' only; {found:?} is not allowed")]
    Character {
        /// The character.
        found: char,
    },
}

/// Checks a room name: `#` then 1 to 63 of ASCII letters, digits, `_`,
/// `-`, `.`, `:`. ASCII only, so that no two rooms look alike and every
/// room prints safely in a terminal or a log.
///
/// # Errors
/// The first rule it breaks.
pub fn validate_room(room: &str) -> Result<(), RoomError> {
    let Some(rest) = room.strip_prefix('#') else {
        return Err(RoomError::NoHash);
    };
    if rest.is_empty() {
        return Err(RoomError::Empty);
    }
    if room.len() > MAX_ROOM_LEN {
        return Err(RoomError::TooLong { len: room.len() });
    }
    match rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        Some(found) => Err(RoomError::Character { found }),
        None => Ok(()),
    }
}

/// Whether a MSG or WILL recipient, or a watch target, names a room.
pub fn is_room(target: &str) -> bool {
    target.starts_with('#')
}

/// What a WATCH asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WatchMode {
    /// Stop watching the target.
    Stop = 0,
    /// A snapshot of the target (the name, or the room's members), then
    /// every change to it.
    Full = 1,
    /// A room's member count, then every change of it: for rooms too
    /// large to list.
    Count = 2,
    /// The snapshot only, then nothing (`/who`).
    Once = 3,
}

impl WatchMode {
    /// The mode a wire byte names, or `None` for one this version does not define.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Stop,
            1 => Self::Full,
            2 => Self::Count,
            3 => Self::Once,
            _ => return None,
        })
    }

    /// Its name in NOTICEs and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Full => "full",
            Self::Count => "count",
            Self::Once => "once",
        }
    }
}

/// WATCH: a client starts or stops watching a name or a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The [`WatchMode`] byte; kept raw so that an unknown mode is a
    /// request refused, not a broken frame.
    pub mode: u8,
    /// A name, or a room (`#lobby`).
    pub target: String,
}

/// What a PRESENCE frame reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// A watch's snapshot begins: `count` is the target's member count
    /// (a name: 0 or 1), and for a listing watch `count` `member` frames
    /// follow, before any change after `seq`.
    Snapshot,
    /// One member of a snapshot (`suspect` set when it is suspect, `text`
    /// its status).
    Member,
    /// The name came online (`text`: its status).
    Online,
    /// The name was taken over by a new session (`session`): still online.
    Takeover,
    /// Its status changed (`text`; empty: cleared).
    Status,
    /// It turned suspect: silent past half its deadline.
    Suspect,
    /// It was suspect and was heard from again.
    Recovered,
    /// It went offline; `text` is the reason (`quit`, `timeout`, …).
    Offline,
    /// It joined the room `target` (`count`: the room's members now).
    Joined,
    /// It left the room `target` (`count`: the room's members now; `text`:
    /// `left`, or the reason its session ended).
    Left,
    /// The room's member count changed (count-only watches).
    Count,
    /// Changes were lost (the watcher's loop fell behind): a fresh
    /// snapshot follows.
    Resync,
    /// A kind this version does not know; clients skip it.
    Other(u8),
}

impl UpdateKind {
    /// Its wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Snapshot => 1,
            Self::Member => 2,
            Self::Online => 3,
            Self::Takeover => 4,
            Self::Status => 5,
            Self::Suspect => 6,
            Self::Recovered => 7,
            Self::Offline => 8,
            Self::Joined => 9,
            Self::Left => 10,
            Self::Count => 11,
            Self::Resync => 12,
            Self::Other(byte) => byte,
        }
    }

    /// The kind a wire byte names.
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            1 => Self::Snapshot,
            2 => Self::Member,
            3 => Self::Online,
            4 => Self::Takeover,
            5 => Self::Status,
            6 => Self::Suspect,
            7 => Self::Recovered,
            8 => Self::Offline,
            9 => Self::Joined,
            10 => Self::Left,
            11 => Self::Count,
            12 => Self::Resync,
            other => Self::Other(other),
        }
    }

    /// Its name in the CLI's output and JSON lines.
    pub fn label(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Member => "member",
            Self::Online => "online",
            Self::Takeover => "takeover",
            Self::Status => "status",
            Self::Suspect => "suspect",
            Self::Recovered => "recovered",
            Self::Offline => "offline",
            Self::Joined => "join",
            Self::Left => "leave",
            Self::Count => "count",
            Self::Resync => "resync",
            Self::Other(_) => "other",
        }
    }
}

/// PRESENCE: one change (or one snapshot line) of a watched target,
/// server → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    /// The change's number in the server's sequence; a snapshot's is the
    /// last change it may not include. Changes of one target arrive in
    /// increasing order; one with a `seq` at or below the snapshot's is
    /// never sent.
    pub seq: u64,
    /// What happened.
    pub kind: UpdateKind,
    /// The member is suspect (`member`) .
    pub suspect: bool,
    /// The room's member count (`snapshot`, `join`, `leave`, `count`).
    pub count: u32,
    /// The session the change is about (0 when none).
    pub session_id: u64,
    /// The watch this answers: the watched name or room.
    pub target: String,
    /// The name the change is about (empty for `snapshot`, `count`, `resync`).
    pub name: String,
    /// A status, or an offline reason; see [`UpdateKind`].
    pub text: String,
}

impl PresenceUpdate {
    /// An update of `kind` for the watch of `target`; other fields zero.
    pub fn new(seq: u64, kind: UpdateKind, target: impl Into<String>) -> Self {
        Self {
            seq,
            kind,
            suspect: false,
            count: 0,
            session_id: 0,
            target: target.into(),
            name: String::new(),
            text: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_a_hash_and_plain_ascii() {
        assert_eq!(validate_room("#lobby"), Ok(()));
        assert_eq!(validate_room("#match:42.eu-west_1"), Ok(()));
        assert_eq!(validate_room(&format!("#{}", "a".repeat(63))), Ok(()));
        assert_eq!(
            validate_room(&format!("#{}", "a".repeat(64))),
            Err(RoomError::TooLong { len: 65 })
        );
        assert_eq!(validate_room("lobby"), Err(RoomError::NoHash));
        assert_eq!(validate_room("#"), Err(RoomError::Empty));
        assert_eq!(
            validate_room("#lob by"),
            Err(RoomError::Character { found: ' ' })
        );
        assert_eq!(
            validate_room("#lоbby"),
            Err(RoomError::Character { found: 'о' })
        );
    }

    #[test]
    fn every_kind_and_mode_round_trips_through_its_byte() {
        for byte in 0..=255u8 {
            assert_eq!(UpdateKind::from_byte(byte).to_byte(), byte);
            if let Some(mode) = WatchMode::from_byte(byte) {
                assert_eq!(mode as u8, byte);
            }
        }
        assert_eq!(WatchMode::from_byte(4), None);
    }
}
