//! What standard input is for: chat lines, or nothing at all (a device
//! agent, a service, a container), and what one chat line asks for.

use std::io::IsTerminal;
use std::os::fd::AsFd;

/// How the client takes input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lines from standard input are sent; `quit` or end of input leaves.
    Chat,
    /// Standard input is not read: the client heartbeats, reconnects and
    /// prints what it receives until a signal or a final refusal.
    Unattended,
}

impl Mode {
    /// `--unattended`, or standard input that can never give a line: a
    /// closed descriptor, `/dev/null` (what systemd and a container without
    /// `-i` give), or an empty file. A terminal, a pipe or a file with
    /// lines is chat, where end of input means `quit`, as scripts expect.
    pub fn choose(unattended_flag: bool) -> Mode {
        if unattended_flag || stdin_is_empty() {
            Mode::Unattended
        } else {
            Mode::Chat
        }
    }
}

fn stdin_is_empty() -> bool {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return false;
    }
    // A duplicate of descriptor 0, for fstat(2); it fails if 0 is closed.
    let Ok(descriptor) = stdin.as_fd().try_clone_to_owned() else {
        return true;
    };
    let Ok(metadata) = std::fs::File::from(descriptor).metadata() else {
        return true;
    };
    if metadata.is_file() {
        return metadata.len() == 0;
    }
    is_dev_null(&metadata)
}

fn is_dev_null(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    metadata.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == metadata.rdev())
}

/// What one stdin line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Quit,
    Direct {
        to: &'a str,
        body: &'a str,
    },
    Broadcast(&'a str),
    /// `/status TEXT` (empty clears it).
    Status(&'a str),
    /// `/join #room`: join it and watch who comes and goes.
    Join(&'a str),
    /// `/leave #room`.
    Leave(&'a str),
    /// `/watch NAME|#room`: print its changes.
    Watch(&'a str),
    /// `/unwatch NAME|#room`.
    Unwatch(&'a str),
    /// `/who NAME|#room`: who is there now (empty: the usage is shown).
    Who(&'a str),
    /// A command without the argument it needs.
    Usage(&'static str),
    /// A `/word` that is no command: not sent, the user is told.
    UnknownCommand(&'a str),
    Nothing,
}

/// The commands, as `/help` and an unknown command list them.
pub const COMMANDS: &str = "/join #ROOM, /leave #ROOM, /watch NAME|#ROOM, /unwatch NAME|#ROOM, \
/who [NAME|#ROOM], /status TEXT (empty: clear it); `#room text` sends to a room, `@name text` to one \
person, `//text` sends a line starting with /";

pub fn parse_line(line: &str) -> Line<'_> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.trim() == "quit" {
        return Line::Quit;
    }
    if trimmed.trim().is_empty() {
        return Line::Nothing;
    }
    // `//text` is a line that starts with `/`, not a command.
    if trimmed.starts_with("//") {
        return Line::Broadcast(&trimmed[1..]);
    }
    if let Some(rest) = trimmed.strip_prefix('/') {
        let (command, argument) = rest.split_once(' ').unwrap_or((rest, ""));
        return match command {
            "status" => Line::Status(argument.trim()),
            "who" => Line::Who(argument.trim()),
            "join" | "leave" | "watch" | "unwatch" if argument.trim().is_empty() => {
                Line::Usage(match command {
                    "join" => "/join #ROOM",
                    "leave" => "/leave #ROOM",
                    "watch" => "/watch NAME or /watch #ROOM",
                    _ => "/unwatch NAME or /unwatch #ROOM",
                })
            }
            "join" => Line::Join(argument.trim()),
            "leave" => Line::Leave(argument.trim()),
            "watch" => Line::Watch(argument.trim()),
            "unwatch" => Line::Unwatch(argument.trim()),
            other => Line::UnknownCommand(other),
        };
    }
    // A name never starts with `#`: `#lobby hi` is for the room.
    if trimmed.starts_with('#') {
        let (to, body) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        return Line::Direct { to, body };
    }
    if let Some(rest) = trimmed.strip_prefix('@') {
        let (to, body) = rest.split_once(' ').unwrap_or((rest, ""));
        return Line::Direct { to, body };
    }
    Line::Broadcast(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_to_chat_actions() {
        assert_eq!(parse_line("quit"), Line::Quit);
        assert_eq!(parse_line("quit\r"), Line::Quit);
        assert_eq!(
            parse_line("@bob hi there"),
            Line::Direct {
                to: "bob",
                body: "hi there"
            }
        );
        assert_eq!(parse_line("hello all"), Line::Broadcast("hello all"));
        assert_eq!(parse_line("   "), Line::Nothing);
        assert_eq!(
            parse_line("/status in match 42"),
            Line::Status("in match 42")
        );
        assert_eq!(parse_line("/status"), Line::Status(""));
        assert_eq!(parse_line("/shrug"), Line::UnknownCommand("shrug"));
        assert_eq!(parse_line("//shrug"), Line::Broadcast("/shrug"));
        assert_eq!(parse_line("/join #lobby"), Line::Join("#lobby"));
        assert_eq!(parse_line("/join"), Line::Usage("/join #ROOM"));
        assert_eq!(parse_line("/who"), Line::Who(""));
        assert_eq!(parse_line("/watch bob"), Line::Watch("bob"));
        assert_eq!(
            parse_line("#lobby hi all"),
            Line::Direct {
                to: "#lobby",
                body: "hi all"
            }
        );
        assert_eq!(
            parse_line("quitting time"),
            Line::Broadcast("quitting time")
        );
    }

    #[test]
    fn dev_null_is_told_from_other_devices() {
        let null = std::fs::metadata("/dev/null").expect("/dev/null");
        assert!(is_dev_null(&null));
        let zero = std::fs::metadata("/dev/zero").expect("/dev/zero");
        assert!(!is_dev_null(&zero));
    }
}
