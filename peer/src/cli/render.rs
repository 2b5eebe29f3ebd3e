//! Turning engine events into the lines a user reads. Pure functions: no
//! printing here, so the wording is tested directly. Received text is always
//! passed through [`sanitize_for_display`] so that escape sequences from a
//! peer never reach the terminal raw.

use crate::engine::{
    ChatEnd, ChatFailure, CommandKind, ConnectError, Event, Fatal, HistoryLine, LinkFault, Refusal,
    Withdrawn,
};
use chrono::{Local, TimeZone};
use common::names::sanitize_for_display;
use common::protocol::{LoginFailure, Outcome, Withdrawal};

/// How lines are decorated.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Use ANSI colours.
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A notice from the program (not a chat message).
    pub fn info(&self, text: &str) -> String {
        self.paint("36", text)
    }

    /// An error.
    pub fn error(&self, text: &str) -> String {
        self.paint("31", text)
    }

    fn name(&self, text: &str) -> String {
        self.paint("1", text)
    }
}

/// A message time: `HH:MM` today, `YYYY-MM-DD HH:MM` otherwise.
pub fn format_time(ms: i64) -> String {
    let Some(t) = Local.timestamp_millis_opt(ms).single() else {
        return "??:??".into();
    };
    if t.date_naive() == Local::now().date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// One chat message as shown.
pub fn message_line(style: &Style, from: &str, body: &str, sent_at_ms: i64, held: bool) -> String {
    message_line_marked(style, from, body, sent_at_ms, held, false)
}

/// One chat message as shown; `unshown` marks one stored in an earlier run
/// whose showing was never confirmed then (it may or may not have reached
/// the screen before the program stopped).
pub fn message_line_marked(
    style: &Style,
    from: &str,
    body: &str,
    sent_at_ms: i64,
    held: bool,
    unshown: bool,
) -> String {
    let when = format_time(sent_at_ms);
    let away = match (held, unshown) {
        (_, true) => ", received before a restart",
        (true, false) => ", sent while you were away",
        (false, false) => "",
    };
    format!(
        "[{when}{away}] {}: {}",
        style.name(from),
        sanitize_for_display(body)
    )
}

fn history_line(style: &Style, l: &HistoryLine) -> String {
    let mut line = message_line(style, &l.from, &l.body, l.sent_at_ms, false);
    if l.held {
        line.push_str(" (kept while away)");
    }
    match l.delivered {
        Some(false) => line.push_str(" (not delivered yet)"),
        Some(true) => line.push_str(" (delivered)"),
        None => {}
    }
    line
}

/// `/status`: the coordinator, who you are, and each open connection.
fn status_lines(style: &Style, st: &crate::engine::Status) -> Vec<String> {
    // The node is named unless the coordinator was given as that address.
    let coord = match (st.connected, st.node) {
        (true, Some(node)) if node.to_string() != st.coordinator => {
            format!("connected to {node}")
        }
        (true, _) => "connected".to_string(),
        (false, _) => "not connected; retrying".to_string(),
    };
    let mut out = vec![style.info(&format!(
        "Coordinator: {} ({coord}).",
        listed(&st.coordinator)
    ))];
    out.push(style.info(&match &st.me {
        Some(me) => format!("Logged in as {me}; this peer listens on {}.", st.local),
        None => format!("Not logged in; this peer listens on {}.", st.local),
    }));
    if st.links.is_empty() {
        out.push(style.info("No open connections to other peers."));
    }
    for l in &st.links {
        let what = if l.chat {
            "chat"
        } else {
            "delivering kept messages"
        };
        let path = if l.relayed {
            "through the coordinator relay".to_string()
        } else {
            format!("direct to {}", l.remote)
        };
        out.push(style.info(&format!(
            "{} ({what}): {path}, round trip {} ms.",
            l.peer,
            l.rtt.as_millis()
        )));
    }
    out
}

/// What to offer after a request that ended without a chat.
pub fn outcome_text(name: &str, outcome: Outcome) -> (String, bool) {
    let keep = "Type messages to keep for them (delivered when you are both online), or disconnect to stop.";
    match outcome {
        Outcome::NoSuchUser => (
            format!("There is no user named {name}. Try another name."),
            false,
        ),
        Outcome::InvalidName => (format!("'{name}' is not a valid username."), false),
        Outcome::SelfRequest => ("That is you. Choose someone else.".to_string(), false),
        Outcome::Offline => (format!("{name} is offline. {keep}"), true),
        Outcome::Declined => (format!("{name} declined the chat. {keep}"), true),
        Outcome::Busy => (format!("{name} is busy in another chat. {keep}"), true),
        Outcome::TimedOut => (format!("{name} did not answer. {keep}"), true),
        Outcome::CalleeLeft => (format!("{name} went offline. {keep}"), true),
        Outcome::TooManyRequests => (
            "Too many requests at once; wait a moment.".to_string(),
            false,
        ),
        Outcome::DuplicateId => ("That request is already pending.".to_string(), false),
    }
}

/// Why a chat ended, as a sentence.
pub fn chat_end_text(with: &str, reason: &ChatEnd) -> String {
    match reason {
        ChatEnd::YouLeft => format!("You left the chat with {with}."),
        ChatEnd::PeerLeft => format!("{with} left the chat."),
        ChatEnd::PeerSignedOut => format!("{with} signed out."),
        ChatEnd::PeerRestarted => {
            format!("{with} came back on a new connection; the old chat was closed.")
        }
        ChatEnd::ConnectionLost(why) => format!("The connection to {with} was lost ({why})."),
        ChatEnd::ProtocolError(fault) => format!(
            "The chat with {with} was closed: {}.",
            fault_text(with, fault)
        ),
    }
}

/// A breach on a direct connection, as a phrase.
pub fn fault_text(with: &str, fault: &LinkFault) -> String {
    match fault {
        LinkFault::BadFrame(why) => format!("{with} sent bad data ({why})"),
        LinkFault::BadMessage(e) => format!("{with} sent an invalid message ({e})"),
        LinkFault::OutOfOrder => format!("{with} sent a frame out of order"),
        LinkFault::EndedStream => format!("{with} ended its stream during a chat"),
        LinkFault::NotReading => format!("{with} is not reading its messages"),
        LinkFault::Stalled => format!("the delivery with {with} made no progress"),
        LinkFault::Store(e) => format!("your message store failed ({e})"),
    }
}

/// Why a login failed, as a phrase.
pub fn login_failure_text(reason: &LoginFailure) -> String {
    match reason {
        LoginFailure::WrongPassword => "wrong password".into(),
        LoginFailure::TooManyAttempts => "too many failed attempts".into(),
        LoginFailure::Invalid(text) => sanitize_for_display(text),
        LoginFailure::BadToken => "session expired".into(),
    }
}

/// Why an accepted chat did not start, as a phrase.
pub fn chat_failure_text(reason: &ChatFailure) -> String {
    match reason {
        ChatFailure::CoordinatorLost => {
            "the coordinator is unreachable right now; try again when it is back".into()
        }
        ChatFailure::NoShow => "they did not connect in time".into(),
        // A refusal carries the other peer's words.
        ChatFailure::Dial(e) => sanitize_for_display(&e.to_string()),
    }
}

/// Why an incoming request went away, as a phrase.
pub fn withdrawn_text(reason: Withdrawn) -> &'static str {
    match reason {
        Withdrawn::Coordinator(Withdrawal::Cancelled) => "they cancelled the request",
        Withdrawn::Coordinator(Withdrawal::TimedOut) => "the request timed out",
        Withdrawn::Coordinator(Withdrawal::RequesterLeft) => "they went offline",
        Withdrawn::CoordinatorLost => "the coordinator went away",
    }
}

/// Someone went offline.
pub fn offline_text(name: &str) -> String {
    format!("{name} went offline.")
}

/// A refused command, as a sentence.
pub fn refusal_text(command: CommandKind, reason: &Refusal) -> String {
    let what = match command {
        CommandKind::Username => "That name was not sent",
        CommandKind::Password => "That password was not sent",
        CommandKind::Chat => "No request was sent",
        CommandKind::CancelRequest => "Nothing was cancelled",
        CommandKind::Answer => "Nothing was answered",
        CommandKind::Send => "Message not sent",
        CommandKind::History => "No history",
        CommandKind::Online => "No list",
        CommandKind::Whois => "No key shown",
        CommandKind::Status => "No status",
        CommandKind::ChangePassword => "The password was not changed",
    };
    let why = match reason {
        Refusal::NotConnected => "not connected to the coordinator right now".to_string(),
        Refusal::NotLoggedIn => "log in first".to_string(),
        Refusal::OutOfTurn => "it is not the time for that".to_string(),
        Refusal::NoRequest => "there is no chat request to answer".to_string(),
        Refusal::InChat => "you are in a chat already; type disconnect first".to_string(),
        Refusal::BadName(e) | Refusal::BadMessage(e) => e.to_string(),
        Refusal::Store(e) => format!("your message store failed ({e})"),
    };
    format!("{what}: {why}.")
}

/// The coordinator as given, a list with a space after each comma.
fn listed(coordinator: &str) -> String {
    crate::engine::coordinator_entries(coordinator).join(", ")
}

/// Why the engine stopped, as a sentence.
pub fn fatal_text(fatal: &Fatal) -> String {
    match fatal {
        Fatal::Connect(e) => sanitize_for_display(&e.to_string()),
        Fatal::VersionMismatch(message) => sanitize_for_display(message),
        Fatal::Replaced => "You signed in from another place, which closed this session.".into(),
        Fatal::Store(e) => format!("Cannot open your message store: {e}"),
    }
}

/// The lines for events that need no state to render; `None` for the rest.
pub fn simple_event(style: &Style, ev: &Event) -> Option<Vec<String>> {
    let lines = match ev {
        Event::Connecting { coordinator } => vec![style.info(&format!("Connecting to the coordinator at {}...", listed(coordinator)))],
        Event::ConnectFailed { coordinator, reason: ConnectError::Closed(why), retry_in } => vec![style.error(&format!(
            "The coordinator at {} closed the connection: {}. Retrying in {} s (type exit to quit).",
            listed(coordinator),
            sanitize_for_display(why),
            retry_in.as_secs().max(1)
        ))],
        Event::ConnectFailed { coordinator, reason, retry_in } => vec![style.error(&format!(
            "Cannot reach the coordinator at {}: {}. Retrying in {} s (type exit to quit).",
            listed(coordinator),
            sanitize_for_display(&reason.to_string()),
            retry_in.as_secs().max(1)
        ))],
        Event::CoordinatorReached { addr, addresses } => vec![style.info(&format!(
            "Reached the coordinator at {addr} (one of its {addresses} addresses)."
        ))],
        Event::CoordinatorPinned { coordinator, fingerprint, file } => vec![
            style.info(&format!(
                "First connection to the coordinator at {coordinator}. Its certificate fingerprint is {fingerprint}."
            )),
            style.info(&format!(
                "Compare it with the one the coordinator prints (coordinator fingerprint). It is pinned in {}: later runs accept only this certificate.",
                file.display()
            )),
        ],
        Event::ContactKeyChanged { name, old, new } => vec![
            style.error(&format!("WARNING: {name}'s key has changed since you last connected.")),
            style.error(&format!("  remembered: {old}")),
            style.error(&format!("  now:        {new}")),
            style.error(&format!(
                "The coordinator vouched for the new key. {name} may have reinstalled p2pchat or moved to another computer, or someone may be posing as {name}: check the key with {name} another way (/whois {name} shows it)."
            )),
        ],
        Event::Status(st) => status_lines(style, st),
        Event::ChatPathChanged { with, relayed: false } => vec![style.info(&format!(
            "The chat with {with} now runs directly (a direct path was found)."
        ))],
        Event::ChatPathChanged { with, relayed: true } => vec![style.info(&format!(
            "The chat with {with} now runs through the coordinator relay."
        ))],
        Event::PasswordChanged => vec![style.info(
            "Password changed. Sessions elsewhere must log in with the new one.",
        )],
        Event::PasswordNotChanged { reason, retry_after } => {
            let wait = if retry_after.is_zero() {
                String::new()
            } else {
                format!(" Wait {} s before trying again.", retry_after.as_secs().max(1))
            };
            vec![style.error(&format!(
                "Password not changed: {}.{wait}",
                login_failure_text(reason)
            ))]
        }
        Event::Whois { name, key: Some(key), me: true } => {
            vec![style.info(&format!("Your key ({name}): {key}. Contacts can compare it with what /whois {name} shows them."))]
        }
        Event::Whois { name, key: Some(key), .. } => {
            vec![style.info(&format!("{name}'s key, as the coordinator last vouched for it: {key}"))]
        }
        Event::Whois { name, key: None, .. } => vec![style.info(&format!(
            "No key known for {name} yet: it is learned at your first chat or delivery with them."
        ))],
        Event::Presence { name, online: true } => vec![style.info(&format!("{name} is online."))],
        Event::Presence { name, online: false } => vec![style.info(&offline_text(name))],
        Event::OnlineList(names) if names.is_empty() => vec![style.info("Nobody else is online.")],
        Event::OnlineList(names) => vec![style.info(&format!("Online: {}", sanitize_for_display(&names.join(", "))))],
        Event::Message { from, body, sent_at_ms, held, unshown, .. } => {
            vec![message_line_marked(style, from, body, *sent_at_ms, *held, *unshown)]
        }
        Event::Kept { to } => vec![style.info(&format!("(kept for {to})"))],
        Event::Delivered { to, count } => {
            let s = if *count == 1 { "" } else { "s" };
            vec![style.info(&format!("{count} kept message{s} delivered to {to}."))]
        }
        Event::MissedWhileBusy { from } => {
            vec![style.info(&format!("{from} wanted to chat while you were busy; they were told you are busy."))]
        }
        Event::History { with, lines } if lines.is_empty() => vec![style.info(&format!("No messages with {with} yet."))],
        Event::History { with, lines } => {
            let mut out = vec![style.info(&format!("History with {with} ({} messages):", lines.len()))];
            out.extend(lines.iter().map(|l| history_line(style, l)));
            out
        }
        Event::CoordinatorLost { reason } => vec![style.error(&format!(
            "Lost the coordinator ({}); reconnecting. Chats in progress go on.",
            sanitize_for_display(reason)
        ))],
        Event::Reconnected => vec![style.info("Reconnected to the coordinator.")],
        Event::Refused { command, reason } => vec![style.error(&refusal_text(*command, reason))],
        Event::CoordinatorError { message } => vec![style.error(&format!(
            "The coordinator says: {}",
            sanitize_for_display(message)
        ))],
        Event::ResumeRefused => vec![style.error("Your session could not be resumed; log in again.")],
        Event::Fatal(f) => vec![style.error(&fatal_text(f))],
        _ => return None,
    };
    Some(lines)
}

/// The help text.
pub fn help() -> Vec<String> {
    [
        "Commands:",
        "  /online          who is online",
        "  /history NAME    the stored conversation with NAME",
        "  /whois NAME      the key NAME had when the coordinator last vouched for it",
        "  /status          the coordinator, who you are, and each open connection",
        "  /password        change your password (at the who-prompt)",
        "  /help            this list",
        "  disconnect       leave the chat (or stop keeping messages); /leave too",
        "  exit             sign out and quit (Ctrl+C and Ctrl+D too); /quit too",
        "In a chat, /say TEXT sends TEXT as it is (to send the word exit or",
        "disconnect), and a line starting with // is sent with one / removed.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_node_unless_the_coordinator_was_given_as_it() {
        let style = Style { color: false };
        let node: std::net::SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let status = |coordinator: &str, connected| crate::engine::Status {
            coordinator: coordinator.into(),
            connected,
            node: connected.then_some(node),
            me: None,
            local: "127.0.0.1:5000".parse().unwrap(),
            links: Vec::new(),
        };
        let first = |st| status_lines(&style, &st).remove(0);
        assert_eq!(
            first(status("a.example:7070,b.example:7070", true)),
            "Coordinator: a.example:7070, b.example:7070 (connected to 127.0.0.1:7070)."
        );
        assert_eq!(
            first(status("127.0.0.1:7070", true)),
            "Coordinator: 127.0.0.1:7070 (connected)."
        );
        assert_eq!(
            first(status("localhost:7070", false)),
            "Coordinator: localhost:7070 (not connected; retrying)."
        );
    }

    #[test]
    fn history_lines_carry_the_date_when_the_day_differs_and_the_delivery_state() {
        let style = Style { color: false };
        let now = common::ids::now_millis();
        let line = |sent_at_ms, delivered| {
            history_line(
                &style,
                &HistoryLine {
                    from: "alice".into(),
                    body: "hi".into(),
                    sent_at_ms,
                    held: false,
                    delivered,
                },
            )
        };
        let today = line(now, Some(true));
        assert!(
            today.starts_with('[') && today.as_bytes()[3] == b':',
            "{today}"
        );
        assert!(today.ends_with("alice: hi (delivered)"), "{today}");
        let three_days_ago = line(now - 3 * 24 * 3600 * 1000, Some(false));
        let date = Local
            .timestamp_millis_opt(now - 3 * 24 * 3600 * 1000)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        assert!(
            three_days_ago.starts_with(&format!("[{date} ")),
            "{three_days_ago}"
        );
        assert!(
            three_days_ago.ends_with("(not delivered yet)"),
            "{three_days_ago}"
        );
        assert!(line(now, None).ends_with("alice: hi"), "received: no mark");
    }

    #[test]
    fn received_escapes_are_neutralised() {
        let style = Style { color: false };
        let line = message_line(
            &style,
            "bob",
            "\x1b[2J\x1b]0;pwned\x07hi",
            common::ids::now_millis(),
            true,
        );
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
        assert!(line.contains("sent while you were away"));
    }

    #[test]
    fn a_coordinator_without_its_accounts_database_says_to_try_again_shortly() {
        let style = Style { color: false };
        let lines = simple_event(
            &style,
            &Event::ConnectFailed {
                coordinator: "coord.example:7070".into(),
                reason: ConnectError::Closed(
                    common::close::CloseCode::UNAVAILABLE.describe().into(),
                ),
                retry_in: std::time::Duration::from_secs(2),
            },
        )
        .unwrap();
        assert_eq!(
            lines,
            [
                "The coordinator at coord.example:7070 closed the connection: the coordinator \
              cannot reach its accounts database; try again shortly. Retrying in 2 s (type exit \
              to quit)."
            ]
        );
    }

    #[test]
    fn offline_offers_kept_messages() {
        let (text, keep) = outcome_text("bob", Outcome::Offline);
        assert!(keep && text.contains("bob is offline"));
        assert!(!outcome_text("bob", Outcome::NoSuchUser).1);
    }
}
