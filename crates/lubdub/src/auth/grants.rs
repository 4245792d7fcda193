//! What a token allows beyond its name: the rooms it may join and the
//! names and rooms it may watch. With credentials configured, a session
//! joins and watches only what its token grants, so that watching cannot
//! be used to find out who exists; without credentials everything is open,
//! as names are.
//!
//! Written as `join=#lobby,#match:*;watch=#lobby,bob`: each list holds
//! exact rooms or names, a prefix ending in `*` (`#match:*`), or `*` for
//! everything. Kept in a token's signed payload, after its name.

use lubdub_core::protocol::rooms::{is_room, validate_room};

/// Longest grants text a token may carry, in bytes.
pub const MAX_GRANTS_LEN: usize = 2048;

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    join: Vec<Pattern>,
    watch: Vec<Pattern>,
}

/// One entry of a list: everything, a prefix, or one room or name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Everything,
    Prefix(String),
    Exact(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Everything);
        }
        if let Some(prefix) = text.strip_suffix('*') {
            if prefix.contains('*') {
                return Err(format!("{text:?}: `*` may only end an entry"));
            }
            return Ok(Self::Prefix(prefix.to_owned()));
        }
        if text.contains('*') {
            return Err(format!("{text:?}: `*` may only end an entry"));
        }
        if is_room(text) {
            validate_room(text).map_err(|error| format!("{text:?}: {error}"))?;
        } else {
            lubdub_core::protocol::handshake::validate_name(text)
                .map_err(|error| format!("{text:?}: {error}"))?;
        }
        Ok(Self::Exact(text.to_owned()))
    }

    fn matches(&self, target: &str) -> bool {
        match self {
            Self::Everything => true,
            Self::Prefix(prefix) => target.starts_with(prefix.as_str()),
            Self::Exact(exact) => exact == target,
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Everything => "*".to_owned(),
            Self::Prefix(prefix) => format!("{prefix}*"),
            Self::Exact(exact) => exact.clone(),
        }
    }
}

impl Grants {
    /// Grants from the lists of `lubdub token --join` and `--watch`.
    ///
    /// # Errors
    /// The first entry that is no room, name or pattern.
    pub fn new(join: &[String], watch: &[String]) -> Result<Self, String> {
        let list = |entries: &[String]| -> Result<Vec<Pattern>, String> {
            entries
                .iter()
                .flat_map(|entry| entry.split(','))
                .filter(|entry| !entry.is_empty())
                .map(Pattern::parse)
                .collect()
        };
        let grants = Self {
            join: list(join)?,
            watch: list(watch)?,
        };
        if let Some(bad) = grants.join.iter().find(|pattern| match pattern {
            Pattern::Exact(room) => !is_room(room),
            Pattern::Prefix(prefix) => !prefix.starts_with('#'),
            Pattern::Everything => false,
        }) {
            return Err(format!(
                "{:?}: only rooms (#name) can be joined",
                bad.text()
            ));
        }
        if grants.text().len() > MAX_GRANTS_LEN {
            return Err(format!("grants longer than {MAX_GRANTS_LEN} bytes"));
        }
        Ok(grants)
    }

    /// Grants nothing.
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && self.watch.is_empty()
    }

    /// Whether `room` may be joined.
    pub fn allows_join(&self, room: &str) -> bool {
        self.join.iter().any(|pattern| pattern.matches(room))
    }

    /// Whether the name or room `target` may be watched.
    pub fn allows_watch(&self, target: &str) -> bool {
        self.watch.iter().any(|pattern| pattern.matches(target))
    }

    /// The text form, as kept in a token.
    pub fn text(&self) -> String {
        let list = |patterns: &[Pattern]| {
            patterns
                .iter()
                .map(Pattern::text)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("join={};watch={}", list(&self.join), list(&self.watch))
    }

    /// Reads the text form.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut join = Vec::new();
        let mut watch = Vec::new();
        for part in text.split(';').filter(|part| !part.is_empty()) {
            match part.split_once('=') {
                Some(("join", list)) => join.push(list.to_owned()),
                Some(("watch", list)) => watch.push(list.to_owned()),
                _ => return Err(format!("unknown grant {part:?} (known: join=, watch=)")),
            }
        }
        Self::new(&join, &watch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn grants_allow_exact_prefixed_or_every_target_and_round_trip() {
        let grants = Grants::new(
            &strings(&["#lobby,#match:*"]),
            &strings(&["#lobby", "bob", "team-*"]),
        )
        .expect("valid");
        assert!(grants.allows_join("#lobby"));
        assert!(grants.allows_join("#match:42"));
        assert!(!grants.allows_join("#lobby2"));
        assert!(grants.allows_watch("bob"));
        assert!(grants.allows_watch("team-red"));
        assert!(!grants.allows_watch("bobby"));
        assert!(!grants.allows_watch("#match:42"));
        assert_eq!(Grants::parse(&grants.text()), Ok(grants));
        let everything = Grants::new(&strings(&["*"]), &strings(&["*"])).expect("valid");
        assert!(everything.allows_watch("anyone") && everything.allows_join("#any"));
        assert!(Grants::default().is_empty());
        assert!(!Grants::default().allows_watch("bob"));
    }

    #[test]
    fn bad_grants_say_why() {
        assert!(Grants::new(&strings(&["bob"]), &[])
            .expect_err("a name")
            .contains("only rooms"));
        assert!(Grants::new(&[], &strings(&["b*b"]))
            .expect_err("inner star")
            .contains("may only end"));
        assert!(Grants::new(&[], &strings(&["#a b"])).is_err());
        assert!(Grants::parse("see=everything").is_err());
    }
}
