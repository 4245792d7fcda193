//! How a webhook request proves it comes from this server: the header
//! `Lubdub-Signature: t=UNIX_SECONDS,v1=HEX`, where `HEX` is the
//! HMAC-SHA256, under the shared secret, of `UNIX_SECONDS`, a dot, and the
//! body's bytes. The time is signed with the body so that a receiver can
//! refuse a request replayed long after it was sent (five minutes is the
//! usual tolerance; the server's retries are signed afresh).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "Lubdub-Signature";

/// The header value for `body` sent at `unix_seconds`.
pub fn sign(secret: &[u8], unix_seconds: u64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex(&mac(secret, unix_seconds, body))
    )
}

/// Whether `header` is this server's signature of `body` (what a receiver
/// written in Rust would call; the README shows the same in Python).
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut time = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => time = value.parse::<u64>().ok(),
            Some(("v1", value)) => signature = Some(value),
            _ => {}
        }
    }
    let (Some(time), Some(signature)) = (time, signature) else {
        return false;
    };
    let Some(bytes) = unhex(signature) else {
        return false;
    };
    let mut check = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    check.update(time.to_string().as_bytes());
    check.update(b".");
    check.update(body);
    // Constant time, whatever prefix a forgery gets right.
    check.verify_slice(&bytes).is_ok()
}

fn mac(secret: &[u8], unix_seconds: u64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let secret = b"0123456789abcdef";
        let body = br#"{"events":[]}"#;
        let header = sign(secret, 1_800_000_000, body);
        assert!(header.starts_with("t=1800000000,v1="), "{header}");
        assert_eq!(header.len(), "t=1800000000,v1=".len() + 64);
        assert!(verify(secret, &header, body));
        assert!(!verify(b"another secret!!", &header, body));
        assert!(!verify(secret, &header, br#"{"events":[1]}"#));
        let replayed_later = header.replace("t=1800000000", "t=1800000999");
        assert!(!verify(secret, &replayed_later, body));
        assert!(!verify(secret, "t=1,v1=zz", body));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"key", b"1.{}", hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"key", 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
