//! The exit statuses of `lubdub client`: one per way it can end, so that a
//! supervisor or a script can tell a revoked credential from a stolen name
//! without reading the text. Listed in `lubdub client --help` and the README.

use std::process::ExitCode;

use lubdub::client::StopCause;

/// Shown at the end of `lubdub client --help`.
pub const STATUSES_HELP: &str = "\
Exit status:
  0  left: `quit`, end of input (chat), SIGTERM or SIGINT
  1  an error before any connect: unreadable credential or TLS file, bad settings
  2  bad command line
  3  gave up: no session within --give-up-after
  4  unauthorized: the server refused the credential for this name
  5  name refused: against the naming rules, or confusable with a name online
  6  taken over: another client claimed the name
  7  TLS mismatch: TLS on one side only, an untrusted or wrong-name certificate,
     or a refused client certificate
  8  incompatible server: another protocol version, or not lubdub";

/// The exit status for a client that stopped for `cause`.
pub fn status(cause: StopCause) -> ExitCode {
    ExitCode::from(match cause {
        StopCause::Closed => 0,
        StopCause::Config => 1,
        StopCause::GaveUp => 3,
        StopCause::Unauthorized => 4,
        StopCause::NameRefused => 5,
        StopCause::TakenOver => 6,
        StopCause::Tls => 7,
        StopCause::Incompatible => 8,
    })
}
