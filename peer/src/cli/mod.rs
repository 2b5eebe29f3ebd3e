//! The terminal front end: prompts, typed commands and the rendering of
//! engine events. It sends [`Command`]s and reads [`Event`]s; it never
//! touches the network or the database.
//!
//! With a terminal it uses line editing and colours (unless `NO_COLOR` is
//! set); with a pipe it reads plain lines and writes plain lines, each prompt
//! on a line of its own, so scripts and tests can drive it.

pub mod input;
pub mod render;
pub mod terminal;

use crate::engine::{ChatEnd, Command, EngineHandle, Event};
use common::names::{check_password, normalize_username};
use common::report::sentence;
use input::{Input, Reader};
use render::Style;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Lines kept while the engine has no room (or a state waits for it);
/// past this, input is not read until they have gone.
const QUEUED_LINES: usize = 1024;

/// Where the conversation with the user stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the coordinator.
    Connecting,
    /// Asking for a username.
    Username,
    /// Waiting for the account status.
    CheckingName,
    /// Asking for the password of an existing account.
    Password { name: String },
    /// Asking for a new account's password.
    NewPassword { name: String },
    /// Asking for it again.
    RepeatPassword { name: String, first: String },
    /// Waiting for the login result (`new`: creating the account).
    LoggingIn { name: String, new: bool },
    /// Asking who to chat with.
    Who,
    /// Waiting for the request to be sent.
    Asking { name: String },
    /// Waiting for the callee's answer.
    Requesting { name: String },
    /// Asking whether to accept `from`.
    Answering { from: String },
    /// Accepted; waiting for the connection.
    Joining { with: String },
    /// In a chat.
    Chatting { with: String },
    /// Typing messages to keep for `to`.
    Composing { to: String },
    /// `/password`: asking for the current password.
    OldPassword,
    /// Asking for the new one.
    ChosenPassword { old: String },
    /// Asking for it again.
    RepeatChosen { old: String, new: String },
}

impl State {
    /// True while waiting for the engine: typed lines are kept until the
    /// state changes (so a script may type ahead), except `exit`, and
    /// `disconnect` while a request is pending.
    fn waiting(&self) -> bool {
        matches!(
            self,
            State::Connecting
                | State::CheckingName
                | State::LoggingIn { .. }
                | State::Asking { .. }
                | State::Requesting { .. }
                | State::Joining { .. }
        )
    }

    /// The prompt, and whether typing is hidden; `None` when no line should
    /// be read now (a short wait for the engine).
    fn prompt(&self, me: &str) -> Option<(String, bool)> {
        let p = |s: &str| Some((s.to_string(), false));
        match self {
            State::Connecting | State::Requesting { .. } | State::Joining { .. } => p(""),
            State::Username => p("Username: "),
            State::Password { name } => Some((format!("Password for {name}: "), true)),
            State::NewPassword { name } => {
                Some((format!("New account {name}. Choose a password: "), true))
            }
            State::RepeatPassword { .. } => Some(("Repeat the password: ".into(), true)),
            State::Who => p("Who do you want to chat with? "),
            State::Answering { from } => Some((format!("Chat with {from}? [y/n] "), false)),
            State::Chatting { with } => Some((format!("{me} → {with}> "), false)),
            State::Composing { to } => Some((format!("{me} → {to} (kept)> "), false)),
            State::OldPassword => Some(("Current password: ".into(), true)),
            State::ChosenPassword { .. } => Some(("New password: ".into(), true)),
            State::RepeatChosen { .. } => Some(("Repeat the new password: ".into(), true)),
            State::CheckingName | State::LoggingIn { .. } | State::Asking { .. } => None,
        }
    }
}

/// `/quit` and `/leave` are `exit` and `disconnect`.
fn alias(line: String) -> String {
    match line.trim() {
        w if w.eq_ignore_ascii_case("/quit") => "exit".to_string(),
        w if w.eq_ignore_ascii_case("/leave") => "disconnect".to_string(),
        _ => line,
    }
}

/// A chat line meant as text although it looks like a command: `/say TEXT`
/// is TEXT, and `//…` loses one slash.
fn as_text(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("//") {
        return Some(format!("/{rest}"));
    }
    line.strip_prefix("/say ")
        .map(str::to_string)
        .filter(|t| !t.is_empty())
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The user left.
    Normal,
    /// The engine hit a fatal error.
    Failed,
}

struct Cli {
    engine: EngineHandle,
    reader: Reader,
    style: Style,
    state: State,
    me: String,
    /// Lines typed while no input was wanted (a pipe reads ahead).
    queued: VecDeque<String>,
    /// The states of the last prompts shown, by number, for lines typed at
    /// a prompt that has changed since.
    shown: VecDeque<(u64, State)>,
    /// The input is a terminal: `exit` and the end of input act at once.
    interactive: bool,
    /// The last attempt to reach the coordinator failed.
    unreachable: bool,
    /// The input has ended.
    input_closed: bool,
    /// The chat partner who just signed out (their going offline is not
    /// told again).
    signed_out: Option<String>,
    /// The chat partner went offline at the coordinator while the chat
    /// was still up: told when the chat ends (unless it was a sign-out).
    offline_in_chat: Option<String>,
    /// ... and to be told right after the end of the chat.
    offline_after_chat: Option<String>,
    exit: Option<Exit>,
}

/// Lines the front end keeps for the terminal before it stops taking events.
const HELD_LINES: usize = 1024;

/// Runs the front end until the user leaves or the engine stops.
pub async fn run(
    engine: EngineHandle,
    mut events: mpsc::Receiver<Event>,
    terminal: bool,
    color: bool,
) -> Exit {
    let (reader, mut lines) = match Reader::start(terminal) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Cannot read input: {e}.");
            engine.shutdown().await;
            return Exit::Failed;
        }
    };
    let mut cli = Cli {
        engine,
        reader,
        style: Style { color },
        state: State::Connecting,
        me: String::new(),
        queued: VecDeque::new(),
        shown: VecDeque::new(),
        interactive: terminal,
        unreachable: false,
        input_closed: false,
        signed_out: None,
        offline_in_chat: None,
        offline_after_chat: None,
        exit: None,
    };
    cli.say(&cli.style.info(
        "Welcome to p2pchat. Type exit (or press Ctrl+C) at any prompt to sign out and quit.",
    ));
    cli.show_prompt();
    let mut stopping = false;
    // Installed once, so that a Ctrl+C between two turns of the loop is kept.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    loop {
        if !stopping {
            cli.drain_queued().await;
            if cli.exit.is_some() {
                stopping = true;
                let bye = if cli.me.is_empty() {
                    "Quitting..."
                } else {
                    "Signing out..."
                };
                cli.say(&cli.style.info(bye));
                // Ahead of anything queued: exit works at once.
                cli.engine.stop();
            }
        }
        let held = cli.reader.held();
        tokio::select! {
            // In this order when several are ready: Ctrl+C; printing (the
            // terminal is behind, so events wait); a line already read
            // before an event already come (it was typed before that event
            // was seen, so it belongs to the question it was typed at).
            biased;
            _ = async { match &mut sigint { Some(s) => { s.recv().await; } None => std::future::pending().await } }, if !stopping => {
                cli.exit = Some(Exit::Normal);
            }
            // The terminal is behind: printing comes first, and events wait
            // (the engine holds its messages until they are taken).
            _ = cli.reader.drain(), if held > 0 => {}
            // Lines kept beyond QUEUED_LINES wait in the pipe: reading stops,
            // so the writer of a large paste is slowed down, not buffered.
            input = lines.recv(), if !stopping && !cli.input_closed && cli.queued.len() < QUEUED_LINES => {
                cli.reader.taken();
                match input {
                    Some(Input::Line(line, at)) => cli.on_typed(line, at).await,
                    Some(Input::TooLong(n)) => cli.say(&cli.style.error(&format!(
                        "That line has {n} bytes; lines are limited to {} bytes. Nothing was sent.",
                        input::MAX_LINE_BYTES
                    ))),
                    Some(Input::Interrupted) => cli.exit = Some(Exit::Normal),
                    Some(Input::Eof) | None => cli.on_end_of_input().await,
                }
                cli.reader.resume();
            }
            ev = events.recv(), if held < HELD_LINES => match ev {
                None | Some(Event::Stopped) => break,
                Some(ev) => cli.on_event(ev).await,
            },
            // Kept lines wait while the engine's queue is full; this wakes
            // the loop when there is room (the CLI never blocks on a full
            // queue, so it keeps reading the engine's events). It is armed
            // whether or not there is room now: the engine takes commands
            // on another thread, and room that appeared after
            // `drain_queued` looked would otherwise wake nobody, leaving
            // kept lines for ever.
            _ = cli.engine.ready(), if !stopping && !cli.queued.is_empty() && !cli.state.waiting() => {}
        }
    }
    cli.say(&cli.style.info("Signed out."));
    cli.reader.close().await;
    cli.exit.unwrap_or(Exit::Normal)
}

impl Cli {
    /// Prints a line above the prompt (terminal) or on its own (pipe). An
    /// output that is gone (a closed pipe) ends the program.
    fn say(&mut self, line: &str) {
        if !self.reader.print(line) && self.exit.is_none() {
            self.exit = Some(Exit::Failed);
        }
    }

    /// A name or password that breaks a rule: the rule, and what to do.
    fn rule_broken(&mut self, e: &common::names::RuleError, next: &str) {
        let line = self.style.error(&format!("{} {next}", sentence(e)));
        self.say(&line);
    }

    fn say_all(&mut self, lines: Vec<String>) {
        for l in lines {
            self.say(&l);
        }
    }

    /// Shows the current question's prompt, remembering which state it
    /// belongs to.
    fn show_prompt(&mut self) {
        let at = self.reader.show(self.state.prompt(&self.me));
        if at != 0 {
            self.shown.push_back((at, self.state.clone()));
            while self.shown.len() > 16 {
                self.shown.pop_front();
            }
        }
    }

    /// A line from the reader, typed at prompt number `at`. On a terminal,
    /// a line typed at a question that has changed since is not taken as
    /// the answer to the new one: messages typed in a chat are still kept
    /// for that peer, lines typed during a wait are typed ahead, anything
    /// else is dropped with a notice.
    async fn on_typed(&mut self, line: String, at: u64) {
        let line = alias(line);
        let current = self.reader.current();
        if at == current || line.trim().eq_ignore_ascii_case("exit") {
            return self.on_input(line).await;
        }
        let typed_at = self
            .shown
            .iter()
            .find(|(n, _)| *n == at)
            .map(|(_, s)| s.clone());
        match typed_at {
            Some(State::Chatting { with: to }) | Some(State::Composing { to })
                if !line.trim().is_empty() && !line.starts_with('/') =>
            {
                if line.trim().eq_ignore_ascii_case("disconnect") {
                    return;
                }
                self.send(Command::Send { to, body: line }).await;
            }
            Some(s) if s.waiting() => self.on_input(line).await,
            _ if line.trim().is_empty() => {}
            Some(s) => {
                let question = s.prompt(&self.me).map(|(p, _)| p).unwrap_or_default();
                let notice = format!(
                    "Not used: {:?} was typed at {:?}, which is no longer the question.",
                    line.trim(),
                    question.trim_end()
                );
                self.say(&self.style.info(&notice));
            }
            None => {}
        }
    }

    /// The input ended: on a terminal (Ctrl+D) that is `exit` at once; from
    /// a pipe, `exit` after the lines before it, or at once when nothing
    /// can take them (the coordinator cannot be reached).
    async fn on_end_of_input(&mut self) {
        self.input_closed = true;
        if self.interactive || (self.unreachable && self.state == State::Connecting) {
            self.exit = Some(Exit::Normal);
        } else {
            self.on_input("exit".to_string()).await;
        }
    }

    /// Lines typed during a wait were typed for what should follow it;
    /// when the wait ends otherwise (a decline, a failed login), they are
    /// dropped with a notice instead of being taken for the new question.
    fn drop_typed_ahead(&mut self, from: &State, to: &State) {
        use State::*;
        let expected = match from {
            Connecting => matches!(to, Username),
            CheckingName => matches!(to, Password { .. } | NewPassword { .. }),
            LoggingIn { .. } => matches!(to, Who),
            Asking { .. } => matches!(to, Requesting { .. } | Joining { .. } | Chatting { .. }),
            Requesting { .. } | Joining { .. } => matches!(to, Joining { .. } | Chatting { .. }),
            _ => true,
        };
        if expected || self.queued.is_empty() {
            return;
        }
        let n = self.queued.len();
        self.queued.clear();
        let what = if n == 1 { "line" } else { "lines" };
        let notice = format!("{n} {what} typed ahead while waiting were not used.");
        self.say(&self.style.info(&notice));
    }

    /// Exits: at once on a terminal; from a pipe after the lines before it.
    fn wants_exit_now(&self) -> bool {
        self.interactive || self.queued.is_empty()
    }

    /// A line as typed: `exit` acts at once (after lines typed before it);
    /// while waiting, lines are kept.
    async fn on_input(&mut self, line: String) {
        let line = alias(line);
        let word = line.trim();
        let cancel = matches!(self.state, State::Requesting { .. })
            && word.eq_ignore_ascii_case("disconnect");
        if word.eq_ignore_ascii_case("exit") && self.wants_exit_now() {
            let n = self.queued.len();
            if n > 0 {
                let what = if n == 1 { "line" } else { "lines" };
                let notice = format!("{n} {what} typed before exit were not used.");
                self.say(&self.style.info(&notice));
            }
            self.exit = Some(Exit::Normal);
        } else if word.is_empty() && (self.state.waiting() || !self.queued.is_empty()) {
            // A blank line means nothing at any question; kept, it would
            // hold up an `exit` typed after it while nothing can go on
            // (a coordinator that does not answer, say).
        } else if (self.state.waiting()
            || !self.queued.is_empty()
            || !self.engine.can_take_command())
            && !cancel
        {
            self.queued.push_back(line);
        } else {
            self.on_line(line).await;
        }
    }

    /// Kept lines go to the engine as soon as it has room, whether or not a
    /// prompt is showing (a pipe's prompt stays printed until the state
    /// changes, so waiting for it would stall a paste for ever).
    async fn drain_queued(&mut self) {
        while self.exit.is_none() && !self.state.waiting() && self.engine.can_take_command() {
            match self.queued.pop_front() {
                Some(line) => self.on_line(line).await,
                None => break,
            }
        }
    }

    fn set(&mut self, state: State) {
        if self.state == state {
            return;
        }
        let old = std::mem::replace(&mut self.state, state);
        let new = self.state.clone();
        self.drop_typed_ahead(&old, &new);
        self.show_prompt();
    }

    async fn send(&mut self, cmd: Command) {
        if !self.engine.send(cmd).await {
            self.exit = Some(Exit::Failed);
        }
    }

    async fn on_line(&mut self, line: String) {
        let trimmed = line.trim();
        let secret = matches!(
            self.state,
            State::Password { .. }
                | State::NewPassword { .. }
                | State::RepeatPassword { .. }
                | State::OldPassword
                | State::ChosenPassword { .. }
                | State::RepeatChosen { .. }
        );
        if trimmed.eq_ignore_ascii_case("exit") {
            self.exit = Some(Exit::Normal);
            return;
        }
        if let (State::Chatting { with: to } | State::Composing { to }, Some(body)) =
            (&self.state, as_text(&line))
        {
            let cmd = Command::Send {
                to: to.clone(),
                body,
            };
            self.send(cmd).await;
            return;
        }
        if !secret && self.command(trimmed).await {
            return;
        }
        match self.state.clone() {
            State::Connecting
            | State::CheckingName
            | State::LoggingIn { .. }
            | State::Asking { .. } => {}
            State::Username => {
                if trimmed.is_empty() {
                    return;
                }
                match normalize_username(trimmed) {
                    Ok(_) => {
                        self.set(State::CheckingName);
                        self.send(Command::Username(trimmed.to_string())).await;
                    }
                    Err(e) => self.rule_broken(&e, "Try again."),
                }
            }
            State::Password { name } => {
                if line.is_empty() {
                    return;
                }
                self.set(State::LoggingIn { name, new: false });
                self.send(Command::Password(line)).await;
            }
            State::NewPassword { name } => match check_password(&line) {
                Ok(()) => self.set(State::RepeatPassword { name, first: line }),
                Err(e) => self.rule_broken(&e, "Choose another."),
            },
            State::RepeatPassword { name, first } => {
                if line == first {
                    self.set(State::LoggingIn { name, new: true });
                    self.send(Command::Password(line)).await;
                } else {
                    self.say(
                        &self
                            .style
                            .error("The passwords differ. Choose a password again."),
                    );
                    self.set(State::NewPassword { name });
                }
            }
            State::Who => {
                if trimmed.is_empty() {
                    return;
                }
                if trimmed.eq_ignore_ascii_case("help") {
                    self.say_all(render::help());
                    return;
                }
                match normalize_username(trimmed) {
                    Ok(name) if name == self.me => {
                        self.say(&self.style.error("That is you. Choose someone else."))
                    }
                    Ok(name) => {
                        self.set(State::Asking { name: name.clone() });
                        self.send(Command::Chat(name)).await;
                    }
                    Err(e) => self.rule_broken(&e, "Try again."),
                }
            }
            State::Requesting { name } => {
                self.send(Command::CancelRequest).await;
                self.say(&self.style.info(&format!("Request to {name} cancelled.")));
                self.set(State::Who);
            }
            State::Answering { from } => match trimmed.to_ascii_lowercase().as_str() {
                "y" | "yes" => {
                    self.set(State::Joining { with: from });
                    self.send(Command::Answer { accept: true }).await;
                }
                "n" | "no" => {
                    self.send(Command::Answer { accept: false }).await;
                    self.say(&self.style.info(&format!("You declined {from}.")));
                    self.set(State::Who);
                }
                _ => self.say(&self.style.info("Answer y or n.")),
            },
            State::Joining { .. } => {}
            State::Chatting { with } => {
                if trimmed.eq_ignore_ascii_case("disconnect") {
                    self.send(Command::Leave).await;
                } else if !line.is_empty() {
                    self.send(Command::Send {
                        to: with,
                        body: line,
                    })
                    .await;
                }
            }
            State::OldPassword if line.is_empty() => {
                self.say(&self.style.info("Password not changed."));
                self.set(State::Who);
            }
            State::OldPassword => self.set(State::ChosenPassword { old: line }),
            State::ChosenPassword { old } => match check_password(&line) {
                Ok(()) => self.set(State::RepeatChosen { old, new: line }),
                Err(e) => self.rule_broken(&e, "Choose another."),
            },
            State::RepeatChosen { old, new } => {
                if line == new {
                    self.send(Command::ChangePassword { old, new }).await;
                } else {
                    self.say(
                        &self
                            .style
                            .error("The passwords differ; password not changed."),
                    );
                }
                self.set(State::Who);
            }
            State::Composing { to } => {
                if trimmed.eq_ignore_ascii_case("disconnect") {
                    self.say(&self.style.info(&format!("Done keeping messages for {to}.")));
                    self.set(State::Who);
                } else if !line.is_empty() {
                    self.send(Command::Send { to, body: line }).await;
                }
            }
        }
    }

    /// Slash commands, available once logged in. True when `line` was one.
    async fn command(&mut self, line: &str) -> bool {
        if !line.starts_with('/') || self.me.is_empty() {
            return false;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("/help"), _) => self.say_all(render::help()),
            (Some("/online"), _) => self.send(Command::Online).await,
            (Some("/status"), _) => self.send(Command::Status).await,
            (Some("/password"), _) if self.state == State::Who => self.set(State::OldPassword),
            (Some("/password"), _) => self.say(
                &self
                    .style
                    .error("Change your password at the who-prompt (leave the chat first)."),
            ),
            (Some("/history"), Some(name)) => self.send(Command::History(name.to_string())).await,
            (Some("/history"), None) => self.say(&self.style.error("Usage: /history NAME")),
            (Some("/whois"), Some(name)) => self.send(Command::Whois(name.to_string())).await,
            (Some("/whois"), None) => self.say(&self.style.error("Usage: /whois NAME")),
            (Some(other), _) => self.say(
                &self
                    .style
                    .error(&format!("Unknown command {other}; /help lists them.")),
            ),
            (None, _) => return false,
        }
        true
    }

    async fn on_event(&mut self, ev: Event) {
        match &ev {
            Event::ConnectFailed { .. } => {
                self.unreachable = true;
                // Nothing typed can be taken, and nothing more will be.
                if self.input_closed && self.state == State::Connecting {
                    self.exit = Some(Exit::Failed);
                }
            }
            Event::Connected => self.unreachable = false,
            // One quit is told once: a partner's sign-out is said by the end
            // of the chat, whether the coordinator's word comes first (it
            // is held until the chat ends) or second (it is dropped).
            Event::Presence {
                name,
                online: false,
            } if self.signed_out.as_deref() == Some(name.as_str()) => {
                self.signed_out = None;
                return;
            }
            Event::Presence {
                name,
                online: false,
            } if self.state == (State::Chatting { with: name.clone() }) => {
                self.offline_in_chat = Some(name.clone());
                return;
            }
            Event::ChatEnded { with, reason } => {
                let held = self.offline_in_chat.take();
                if *reason == ChatEnd::PeerSignedOut {
                    if held.is_none() {
                        self.signed_out = Some(with.clone());
                    }
                } else if let Some(name) = held {
                    // Said after the end of the chat, below.
                    self.offline_after_chat = Some(name);
                }
            }
            _ => {}
        }
        if let Some(lines) = render::simple_event(&self.style, &ev) {
            self.say_all(lines);
            // Printed (stdout is flushed at each line): it may be marked shown.
            if let Event::Message { from, id, .. } = &ev {
                self.engine.shown(from.clone(), *id);
            }
            match ev {
                Event::Fatal(_) => self.exit = Some(Exit::Failed),
                // A request or an answer the engine could not act on: back
                // to the question instead of waiting for what will not come.
                Event::Refused { .. }
                    if matches!(self.state, State::Asking { .. } | State::Joining { .. }) =>
                {
                    self.set(State::Who)
                }
                _ => {}
            }
            return;
        }
        let info = |s: &Style, t: &str| s.info(t);
        match ev {
            Event::Connected => {
                self.say(&info(&self.style, "Connected to the coordinator."));
                self.set(State::Username);
            }
            Event::AccountStatus { name, exists: true } => self.set(State::Password { name }),
            Event::AccountStatus {
                name,
                exists: false,
            } => self.set(State::NewPassword { name }),
            Event::LoginFailed {
                reason,
                retry_after,
                bad_name,
            } => {
                let wait = if retry_after.is_zero() {
                    String::new()
                } else {
                    format!(
                        " Wait {} s before trying again.",
                        retry_after.as_secs().max(1)
                    )
                };
                let reason = render::login_failure_text(&reason);
                self.say(&self.style.error(&format!("Login failed: {reason}.{wait}")));
                let next = match (&self.state, bad_name) {
                    (_, true) => State::Username,
                    (State::LoggingIn { name, new: false }, _) => {
                        State::Password { name: name.clone() }
                    }
                    (State::LoggingIn { name, new: true }, _) => {
                        State::NewPassword { name: name.clone() }
                    }
                    (s, _) => s.clone(),
                };
                self.set(next);
            }
            Event::LoggedIn { name, online } => {
                self.me = name.clone();
                self.say(&info(&self.style, &format!("Logged in as {name}.")));
                let list = if online.is_empty() {
                    "Nobody else is online right now.".to_string()
                } else {
                    format!("Online now: {}", online.join(", "))
                };
                self.say(&info(&self.style, &list));
                self.say(&info(&self.style, "Type /help for commands."));
                self.set(State::Who);
            }
            Event::Requesting { name } => {
                self.say(&info(
                    &self.style,
                    &format!("Asking {name} to chat... (type disconnect to cancel)"),
                ));
                self.set(State::Requesting { name });
            }
            Event::RequestFailed { name, outcome } => {
                let (text, keep) = render::outcome_text(&name, outcome);
                self.say(&info(&self.style, &text));
                self.set(if keep {
                    State::Composing { to: name }
                } else {
                    State::Who
                });
            }
            Event::ChatFailed { with, reason } => {
                self.say(&self.style.error(&format!(
                    "Could not connect to {with}: {}.",
                    render::chat_failure_text(&reason)
                )));
                let (text, _) = render::outcome_text(&with, common::protocol::Outcome::Offline);
                let offer = text
                    .split_once(". ")
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or(text);
                self.say(&info(&self.style, &offer));
                self.set(State::Composing { to: with });
            }
            Event::IncomingRequest { from } => {
                self.say(&info(
                    &self.style,
                    &format!("{from} wants to chat with you. Accept? [y/n]"),
                ));
                self.set(State::Answering { from });
            }
            Event::IncomingWithdrawn { from, reason }
                if self.state == (State::Answering { from: from.clone() }) =>
            {
                self.say(&info(
                    &self.style,
                    &format!(
                        "{from}'s request is gone: {}.",
                        render::withdrawn_text(reason)
                    ),
                ));
                self.set(State::Who);
            }
            Event::ChatStarted { with, relayed } => {
                let path = if relayed {
                    "through the coordinator relay (no direct path worked; still end-to-end encrypted)"
                } else {
                    "directly"
                };
                self.say(&info(
                    &self.style,
                    &format!("You are now chatting with {with}, {path}. Type disconnect to leave the chat."),
                ));
                self.set(State::Chatting { with });
            }
            Event::ChatEnded { with, reason } => {
                self.say(&info(&self.style, &render::chat_end_text(&with, &reason)));
                if let Some(name) = self.offline_after_chat.take() {
                    self.say(&info(&self.style, &render::offline_text(&name)));
                }
                if reason != ChatEnd::YouLeft || matches!(self.state, State::Chatting { .. }) {
                    self.set(State::Who);
                }
            }
            _ => {}
        }
    }
}
