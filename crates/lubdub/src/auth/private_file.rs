//! Files that hold secrets (the token secret, the auth file, a TLS key):
//! created readable by their owner only, replaced keeping their owner, and
//! checked for modes that let group or others read or write them.
//!
//! `lubdub token --new-secret` and `lubdub passwd` write through
//! [`create`] and [`replace`]; the server calls [`warn_if_exposed`] on each
//! secret file it loads (at start, and again on any later reload).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Permission bits that expose a secret: read or write for group or others.
pub const EXPOSING_BITS: u32 = 0o066;

/// Creates a new file readable and writable by its owner only (mode 0600,
/// whatever the umask); fails if it exists.
///
/// # Errors
/// The OS error; when the directory is missing, one that says so and how to
/// create it.
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| explain_missing_directory(path, error))
}

/// Replaces `path` with `contents`, mode 0600: written to a temporary file
/// beside it, then renamed over it, so a crash leaves the old file or the
/// new one, never half of one. An existing file keeps its owner and group
/// (so a file root edits for a service's user stays readable by that
/// user) and its mode is tightened to 0600.
///
/// # Errors
/// The OS error; when the file's owner cannot be kept (run as root or as
/// the owner), one that says so, and the file is left as it was.
pub fn replace(path: &Path, contents: &str) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let owner = match std::fs::metadata(path) {
        Ok(metadata) => Some((metadata.uid(), metadata.gid())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let result = create(&temporary).and_then(|mut file| {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "cannot keep its owner (uid {uid}, gid {gid}) on the new copy: {error}; \
                         run this as root or as the file's owner"
                    ),
                )
            })?;
        }
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// What a mode exposes, e.g. `readable by group and others`; `None` when
/// neither group nor others may read or write.
pub fn exposure(mode: u32) -> Option<String> {
    let who = |read: u32, write: u32| match (mode & read != 0, mode & write != 0) {
        (true, true) => Some("readable and writable"),
        (true, false) => Some("readable"),
        (false, true) => Some("writable"),
        (false, false) => None,
    };
    match (who(0o040, 0o020), who(0o004, 0o002)) {
        (None, None) => None,
        (Some(group), None) => Some(format!("{group} by group")),
        (None, Some(others)) => Some(format!("{others} by others")),
        (Some(group), Some(others)) if group == others => {
            Some(format!("{group} by group and others"))
        }
        (Some(group), Some(others)) => Some(format!("{group} by group, {others} by others")),
    }
}

/// Logs a warning, naming the file, its mode and the fix, when `path` (the
/// file given to `flag`) may be read or written by group or others. Such a
/// file still works: refusing it would stop servers that ran before this
/// check existed. A file that cannot be inspected is left to the load that
/// follows, which names the problem.
pub fn warn_if_exposed(path: &Path, flag: &str) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.mode() & 0o7777;
    if let Some(exposed) = exposure(mode) {
        tracing::warn!(
            file = %path.display(),
            mode = %format_args!("{mode:04o}"),
            "the {flag} file {} is {exposed} (mode {mode:04o}) and holds a secret; fix with chmod 600 {}",
            path.display(),
            path.display()
        );
    }
}

/// `error` from creating `path`, explained when the directory to hold it
/// does not exist: neither `token --new-secret` nor `passwd` creates
/// directories, so that a mistyped path does not become a new tree under
/// /etc.
fn explain_missing_directory(path: &Path, error: io::Error) -> io::Error {
    let missing = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty() && !dir.exists());
    match missing {
        Some(dir) if error.kind() == io::ErrorKind::NotFound => io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the directory {} does not exist; create it first, e.g. `install -d -m 0700 {}`",
                dir.display(),
                dir.display()
            ),
        ),
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lubdub-private-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).expect("exists").mode() & 0o777
    }

    #[test]
    fn exposure_names_who_may_do_what() {
        assert_eq!(exposure(0o600), None);
        assert_eq!(exposure(0o400), None);
        assert_eq!(exposure(0o700), None);
        // Execute bits expose no secret.
        assert_eq!(exposure(0o611), None);
        assert_eq!(exposure(0o640).as_deref(), Some("readable by group"));
        assert_eq!(exposure(0o604).as_deref(), Some("readable by others"));
        assert_eq!(
            exposure(0o644).as_deref(),
            Some("readable by group and others")
        );
        assert_eq!(
            exposure(0o666).as_deref(),
            Some("readable and writable by group and others")
        );
        assert_eq!(
            exposure(0o624).as_deref(),
            Some("writable by group, readable by others")
        );
    }

    #[test]
    fn created_files_are_private_whatever_exists() {
        let dir = scratch("create");
        let path = dir.join("secret");
        create(&path).expect("created");
        assert_eq!(mode_of(&path), 0o600);
        let error = create(&path).expect_err("never overwrites");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }

    #[test]
    fn a_missing_directory_is_named_with_the_command_that_makes_it() {
        let dir = scratch("missing");
        let path = dir.join("etc-lubdub").join("token.secret");
        let error = create(&path).expect_err("no directory");
        let text = error.to_string();
        assert!(
            text.contains(&format!(
                "{} does not exist",
                dir.join("etc-lubdub").display()
            )) && text.contains("install -d -m 0700"),
            "{text}"
        );
        let error = replace(&path, "x").expect_err("no directory");
        assert!(error.to_string().contains("does not exist"), "{error}");
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }

    #[test]
    fn replacing_tightens_the_mode_and_keeps_the_owner() {
        let dir = scratch("replace");
        let path = dir.join("auth");
        std::fs::write(&path, "old\n").expect("written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        // As root (the test machines), the file is given to another user
        // first: replacing it must not hand it to root.
        let _ = std::os::unix::fs::chown(&path, Some(12_345), Some(12_346));
        let before = std::fs::metadata(&path).expect("exists");
        replace(&path, "new\n").expect("replaced");
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), "new\n");
        let after = std::fs::metadata(&path).expect("exists");
        assert_eq!(after.mode() & 0o777, 0o600);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        // A new file is private too.
        let fresh = dir.join("fresh");
        replace(&fresh, "x\n").expect("created");
        assert_eq!(mode_of(&fresh), 0o600);
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
