//! Last wills waiting for their delay, process-wide: a session that ended
//! without a BYE of its own leaves its will here until the delay is over,
//! when its loop takes and sends it; a claim of the same name meanwhile, on
//! any loop, takes it first, and it is never sent (MQTT 5's will delay).
//! One lock for both, so exactly one of the two happens.

use std::collections::HashMap;
use std::sync::Mutex;

use lubdub_core::protocol::Will;

/// Most wills waiting at once (at most 1 KiB each: 100 MB). Sessions that
/// set a will with a delay and vanish, again and again under new names,
/// must not grow the server without bound; beyond this a will is sent at
/// once, its delay cut short.
pub const MAX_WAITING_WILLS: usize = 100_000;

/// The wills waiting, by name.
#[derive(Debug, Default)]
pub struct WillBoard {
    waiting: Mutex<HashMap<String, (u64, Will)>>,
}

impl WillBoard {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Will)>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The will of session `session_id`, named `name`, waits for its delay
    /// (replacing any earlier one of that name); handed back when
    /// [`MAX_WAITING_WILLS`] already wait.
    pub fn wait(&self, name: &str, session_id: u64, will: Will) -> Result<(), Will> {
        let mut waiting = self.waiting();
        if waiting.len() >= MAX_WAITING_WILLS && !waiting.contains_key(name) {
            return Err(will);
        }
        waiting.insert(name.to_owned(), (session_id, will));
        Ok(())
    }

    /// Whether the will of session `session_id` under `name` still waits.
    pub fn holds(&self, name: &str, session_id: u64) -> bool {
        self.waiting()
            .get(name)
            .is_some_and(|(owner, _)| *owner == session_id)
    }

    /// `name` is online again: a will waiting under it is not sent.
    /// Returns whether one was waiting.
    pub fn name_back(&self, name: &str) -> bool {
        self.waiting().remove(name).is_some()
    }

    /// The will of session `session_id` under `name`, if it still waits:
    /// its delay is over, and it is now the caller's to send.
    pub fn take(&self, name: &str, session_id: u64) -> Option<Will> {
        let mut waiting = self.waiting();
        match waiting.get(name) {
            Some((owner, _)) if *owner == session_id => waiting.remove(name).map(|(_, will)| will),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn will(body: &str) -> Will {
        Will {
            delay_ms: 1_000,
            to: String::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_will_is_taken_once_unless_its_name_comes_back_first() {
        let board = WillBoard::default();
        board.wait("bob", 7, will("gone")).expect("room");
        assert_eq!(board.take("bob", 7), Some(will("gone")));
        assert_eq!(board.take("bob", 7), None, "once only");

        board.wait("bob", 8, will("gone again")).expect("room");
        assert!(board.name_back("bob"));
        assert_eq!(board.take("bob", 8), None, "bob came back first");
        assert!(!board.name_back("bob"));

        // A later session's will is not taken by an earlier one's deadline.
        board.wait("bob", 9, will("third")).expect("room");
        assert!(board.holds("bob", 9) && !board.holds("bob", 8));
        assert_eq!(board.take("bob", 8), None);
        assert_eq!(board.take("bob", 9), Some(will("third")));
    }
}
