//! A registry that fails: the claimant is told to come back later, in
//! words of the server's own; what the backend said stays in the server's
//! log, where operators look, and out of the peer's hands.

mod common;

use std::sync::Arc;

use common::{fast_config, RawConn};
use lubdub::core::protocol::{Frame, ReasonCode};
use lubdub::server::registry::{Claim, Claimed, RegistryError, SessionRecord};
use lubdub::server::{self, Registry};

/// A backend that is down, and says where it lives and why.
struct Unreachable;

const BACKEND_SAID: &str = "redis://10.1.2.3:6379: NOAUTH Authentication required";

impl Registry for Unreachable {
    fn claim(&self, _: Claim) -> Result<Claimed, RegistryError> {
        Err(RegistryError::Unavailable(BACKEND_SAID.into()))
    }
    fn release(&self, _: &str, _: u64) -> Result<bool, RegistryError> {
        Err(RegistryError::Unavailable(BACKEND_SAID.into()))
    }
    fn lookup(&self, _: &str) -> Result<Option<SessionRecord>, RegistryError> {
        Err(RegistryError::Unavailable(BACKEND_SAID.into()))
    }
    fn count(&self) -> Result<usize, RegistryError> {
        Err(RegistryError::Unavailable(BACKEND_SAID.into()))
    }
}

/// Fails on the code before issue 14 (item 6): the REJECT carried the
/// backend's error text (an address, a reason) to any peer, as
/// `server_full`, which it is not.
#[tokio::test]
async fn a_failing_registry_is_not_quoted_to_the_peer() {
    let handle = server::start(fast_config(), Arc::new(Unreachable)).expect("server starts");
    let mut conn = RawConn::connect(handle.local_addr()).await;
    conn.send(&common::hello("alice", 1_000, true)).await;
    match conn.next_frame().await {
        Some(Frame::Reject(reason)) => {
            assert_eq!(reason.code, ReasonCode::ServerBusy, "{reason:?}");
            assert!(!reason.text.contains("redis"), "{}", reason.text);
            assert!(!reason.text.contains("NOAUTH"), "{}", reason.text);
            assert!(reason.text.contains("retry"), "{}", reason.text);
        }
        other => panic!("expected REJECT server_busy, got {other:?}"),
    }
    conn.expect_closed().await;
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .expect("join")
        .expect("stops");
}
