//! The coordinator client's state: reconnection with back-off (and, when
//! the coordinator has several addresses, away from the one just lost), the
//! login conversation, token resume, and presence. Sans I/O: it takes what
//! arrived and returns [`Action`]s.

use super::action::Action;
use super::api::{CommandKind, Event, Fatal, Refusal, Timings};
use super::connect::ConnectError;
use common::close::CloseCode;
use common::names::is_normal_username;
use common::protocol::{
    LoginFailure, Secret, SessionRequest, SessionResponse, Welcome, PROTOCOL_VERSION,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the login conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// No coordinator connection.
    Offline,
    /// Hello sent, waiting for its answer.
    Hello,
    /// Waiting for the user's name.
    Username,
    /// Name sent, waiting for the account status.
    AccountStatus,
    /// Password sent or to be sent.
    Password,
    /// Token sent, waiting for the result.
    Resume,
    /// Welcome received; the store and signaling stream are being opened.
    Opening,
    /// Logged in.
    Ready,
}

/// The coordinator client.
#[derive(Debug)]
pub(crate) struct Login {
    coordinator: String,
    retry_first: Duration,
    retry_max: Duration,
    stage: Stage,
    /// Generation of the current connection attempt; reports of older ones
    /// are ignored.
    gen: u64,
    retry: Duration,
    me: Option<String>,
    token: Option<Secret>,
    /// The welcome being acted on (resumed?, who was online).
    welcome: Option<(bool, Vec<String>)>,
    /// Who is online, as presence says.
    online: BTreeSet<String>,
    /// The address (the coordinator node) of the current connection.
    node: Option<SocketAddr>,
    /// The address of the last connection lost: the next rounds try it
    /// last, until a connection is made.
    avoid: Option<SocketAddr>,
}

impl Login {
    pub(crate) fn new(coordinator: String, timings: &Timings) -> Login {
        Login {
            coordinator,
            retry_first: timings.retry_first,
            retry_max: timings.retry_max,
            stage: Stage::Offline,
            gen: 0,
            retry: timings.retry_first,
            me: None,
            token: None,
            welcome: None,
            online: BTreeSet::new(),
            node: None,
            avoid: None,
        }
    }

    pub(crate) fn stage(&self) -> Stage {
        self.stage
    }

    pub(crate) fn gen(&self) -> u64 {
        self.gen
    }

    /// The logged-in account (kept across reconnects).
    pub(crate) fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.stage == Stage::Ready
    }

    pub(crate) fn is_online(&self, name: &str) -> bool {
        self.online.contains(name)
    }

    /// The address of the coordinator node connected to, if any.
    pub(crate) fn node(&self) -> Option<SocketAddr> {
        self.node
    }

    fn connect_after(&mut self, after: Duration) -> Action {
        self.gen += 1;
        Action::Connect {
            gen: self.gen,
            after,
            avoid: self.avoid,
        }
    }

    /// The first connection.
    pub(crate) fn start(&mut self) -> Vec<Action> {
        vec![self.connect_after(Duration::ZERO)]
    }

    pub(crate) fn on_attempting(&self) -> Vec<Action> {
        vec![Action::Emit(Event::Connecting {
            coordinator: self.coordinator.clone(),
        })]
    }

    /// Connected to `node`, one of `addresses`: say so when there was a
    /// choice, and say hello with our candidate addresses.
    pub(crate) fn on_connected(
        &mut self,
        addrs: Vec<SocketAddr>,
        node: SocketAddr,
        addresses: usize,
    ) -> Vec<Action> {
        self.stage = Stage::Hello;
        self.node = Some(node);
        self.avoid = None;
        let mut out = Vec::new();
        if addresses > 1 {
            out.push(Action::Emit(Event::CoordinatorReached {
                addr: node,
                addresses,
            }));
        }
        out.push(Action::Session(SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs,
        }));
        out
    }

    pub(crate) fn on_connect_failed(&mut self, e: ConnectError) -> Vec<Action> {
        if e.is_fatal() {
            return vec![Action::Emit(Event::Fatal(Fatal::Connect(e))), Action::Stop];
        }
        let wait = self.retry;
        self.retry = (self.retry * 2).min(self.retry_max);
        vec![
            Action::Emit(Event::ConnectFailed {
                coordinator: self.coordinator.clone(),
                reason: e,
                retry_in: wait,
            }),
            self.connect_after(wait),
        ]
    }

    /// The coordinator connection ended. `code` is its close code, if the
    /// coordinator closed it with one; `reason` the transport's words. A
    /// session replaced by a login elsewhere must not reconnect (it would
    /// replace that one in turn).
    pub(crate) fn on_gone(&mut self, code: Option<CloseCode>, reason: String) -> Vec<Action> {
        let was_ready = self.stage == Stage::Ready;
        self.stage = Stage::Offline;
        self.online.clear();
        // The next round starts with another address than this one.
        let lost = self.node.take();
        self.avoid = lost.or(self.avoid);
        let mut out = vec![Action::DropCoordinator(CloseCode::NORMAL)];
        if code == Some(CloseCode::REPLACED) {
            out.push(Action::Emit(Event::Fatal(Fatal::Replaced)));
            out.push(Action::Stop);
            return out;
        }
        if was_ready || self.welcome.is_some() {
            self.welcome = None;
            out.push(Action::Emit(Event::CoordinatorLost { reason }));
            let first = self.retry_first;
            out.push(self.connect_after(first));
        } else if code.is_some() {
            // The coordinator answered and said why it closed: its words,
            // not "cannot reach".
            out.extend(self.on_connect_failed(ConnectError::Closed(reason)));
        } else {
            out.extend(self.on_connect_failed(ConnectError::Unreachable {
                addr: lost.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                detail: reason,
            }));
        }
        out
    }

    pub(crate) fn username(&mut self, name: String) -> Vec<Action> {
        match self.stage {
            Stage::Username | Stage::Password => {
                self.stage = Stage::AccountStatus;
                vec![Action::Session(SessionRequest::Username { name })]
            }
            Stage::Offline | Stage::Hello => refuse(CommandKind::Username, Refusal::NotConnected),
            _ => refuse(CommandKind::Username, Refusal::OutOfTurn),
        }
    }

    pub(crate) fn password(&mut self, password: String) -> Vec<Action> {
        match self.stage {
            Stage::Password => vec![Action::Session(SessionRequest::Password {
                password: password.into(),
            })],
            Stage::Offline | Stage::Hello => refuse(CommandKind::Password, Refusal::NotConnected),
            _ => refuse(CommandKind::Password, Refusal::OutOfTurn),
        }
    }

    pub(crate) fn online_list(&mut self) -> Vec<Action> {
        if self.stage == Stage::Ready {
            vec![Action::Session(SessionRequest::ListOnline)]
        } else {
            refuse(CommandKind::Online, Refusal::NotConnected)
        }
    }

    /// A new password for the account logged in (the current one checked).
    pub(crate) fn change_password(&mut self, old: String, new: String) -> Vec<Action> {
        if self.stage == Stage::Ready {
            vec![Action::Session(SessionRequest::ChangePassword {
                old: old.into(),
                new: new.into(),
            })]
        } else {
            refuse(CommandKind::ChangePassword, Refusal::NotConnected)
        }
    }

    pub(crate) fn on_session(&mut self, msg: SessionResponse) -> Vec<Action> {
        match msg {
            SessionResponse::HelloOk => match (&self.me, &self.token) {
                (Some(name), Some(token)) => {
                    self.stage = Stage::Resume;
                    vec![Action::Session(SessionRequest::Resume {
                        name: name.clone(),
                        token: token.clone(),
                    })]
                }
                _ => {
                    self.stage = Stage::Username;
                    self.retry = self.retry_first;
                    vec![Action::Emit(Event::Connected)]
                }
            },
            SessionResponse::VersionMismatch { message, .. } => vec![
                Action::Emit(Event::Fatal(Fatal::VersionMismatch(message))),
                Action::Stop,
            ],
            SessionResponse::AccountStatus { name, exists } => {
                self.stage = Stage::Password;
                vec![Action::Emit(Event::AccountStatus { name, exists })]
            }
            SessionResponse::LoginFailed {
                reason,
                retry_after_secs,
            } => self.on_login_failed(reason, retry_after_secs),
            SessionResponse::Welcome(w) => self.on_welcome(w),
            // Names from the network are checked before they are shown or
            // kept: a lying coordinator cannot smuggle escapes or paths in.
            SessionResponse::Presence { name, .. } if !is_normal_username(&name) => {
                tracing::warn!(?name, "the coordinator announced an invalid name; ignored");
                Vec::new()
            }
            SessionResponse::Presence { name, online } => {
                if online {
                    self.online.insert(name.clone());
                } else {
                    self.online.remove(&name);
                }
                vec![Action::Emit(Event::Presence { name, online })]
            }
            SessionResponse::OnlineList { names } => {
                vec![Action::Emit(Event::OnlineList(only_valid(names)))]
            }
            SessionResponse::LookupResult { .. } => Vec::new(),
            SessionResponse::Error { message } => {
                vec![Action::Emit(Event::CoordinatorError { message })]
            }
            SessionResponse::PasswordChanged { token } => {
                // Earlier tokens are void: resume with this one.
                self.token = Some(token);
                vec![Action::Emit(Event::PasswordChanged)]
            }
            SessionResponse::PasswordNotChanged {
                reason,
                retry_after_secs,
            } => vec![Action::Emit(Event::PasswordNotChanged {
                reason,
                retry_after: Duration::from_secs(u64::from(retry_after_secs)),
            })],
        }
    }

    fn on_login_failed(&mut self, reason: LoginFailure, retry_after_secs: u32) -> Vec<Action> {
        if self.stage == Stage::Resume {
            self.me = None;
            self.token = None;
            self.stage = Stage::Username;
            return vec![
                Action::Emit(Event::ResumeRefused),
                Action::Emit(Event::Connected),
            ];
        }
        let bad_name = self.stage == Stage::AccountStatus;
        self.stage = if bad_name {
            Stage::Username
        } else {
            Stage::Password
        };
        vec![Action::Emit(Event::LoginFailed {
            reason,
            retry_after: Duration::from_secs(u64::from(retry_after_secs)),
            bad_name,
        })]
    }

    fn on_welcome(&mut self, w: Welcome) -> Vec<Action> {
        // The name becomes a file name: a coordinator (a spoofed one on
        // first use, say) must not be able to point it anywhere.
        if !is_normal_username(&w.name) {
            return vec![
                Action::Emit(Event::Fatal(Fatal::Connect(ConnectError::Setup(format!(
                    "the coordinator named this account {:?}, which is not a valid username",
                    w.name
                ))))),
                Action::Stop,
            ];
        }
        let resumed = self.stage == Stage::Resume;
        self.stage = Stage::Opening;
        self.me = Some(w.name.clone());
        self.token = Some(w.token);
        let online = only_valid(w.online);
        self.online = online.iter().cloned().collect();
        self.welcome = Some((resumed, online));
        vec![Action::OpenSession { name: w.name }]
    }

    /// The store and the signaling stream are open: logged in. Returns the
    /// actions and who was online at the welcome.
    pub(crate) fn on_session_open(&mut self) -> (Vec<Action>, Vec<String>) {
        let Some((resumed, online)) = self.welcome.take() else {
            return (Vec::new(), Vec::new());
        };
        self.stage = Stage::Ready;
        self.retry = self.retry_first;
        let name = self.me.clone().unwrap_or_default();
        let ev = if resumed {
            Event::Reconnected
        } else {
            Event::LoggedIn {
                name,
                online: online.clone(),
            }
        };
        (vec![Action::Emit(ev)], online)
    }
}

/// The names that are valid usernames; the others are dropped (and logged).
fn only_valid(names: Vec<String>) -> Vec<String> {
    let (valid, invalid): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| is_normal_username(n));
    if !invalid.is_empty() {
        tracing::warn!(?invalid, "the coordinator listed invalid names; ignored");
    }
    valid
}

fn refuse(command: CommandKind, reason: Refusal) -> Vec<Action> {
    vec![Action::Emit(Event::Refused { command, reason })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Welcome;

    fn login() -> Login {
        Login::new("c:1".into(), &Timings::default())
    }

    fn node(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 7070))
    }

    fn welcome(name: &str) -> SessionResponse {
        SessionResponse::Welcome(Welcome {
            name: name.into(),
            online: vec!["bob".into()],
            observed: SocketAddr::from(([127, 0, 0, 1], 5)),
            token: Secret::from("t0k3n".to_string()),
            token_valid_secs: 3600,
        })
    }

    fn emitted(actions: &[Action]) -> Vec<&Event> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn retries_back_off_and_a_pin_mismatch_stops() {
        let mut l = login();
        l.start();
        let e = || ConnectError::Resolve {
            coordinator: "c:1".into(),
            detail: "no".into(),
        };
        let waits: Vec<Duration> = (0..7)
            .map(|_| match &l.on_connect_failed(e())[..] {
                [Action::Emit(Event::ConnectFailed { retry_in, .. }), Action::Connect { after, .. }] => {
                    assert_eq!(retry_in, after);
                    *after
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits[0], Duration::from_secs(1));
        assert_eq!(waits[1], Duration::from_secs(2));
        assert_eq!(waits[6], Duration::from_secs(30), "capped");
        let fatal = l.on_connect_failed(ConnectError::BadAddress("x".into()));
        assert!(matches!(fatal.last(), Some(Action::Stop)));
    }

    #[test]
    fn a_close_with_a_reason_before_login_is_retried_with_that_reason() {
        let mut l = login();
        l.start();
        l.on_connected(Vec::new(), node(1), 1);
        let reason = CloseCode::UNAVAILABLE.describe().to_string();
        match &l.on_gone(Some(CloseCode::UNAVAILABLE), reason.clone())[..] {
            [Action::DropCoordinator(_), Action::Emit(Event::ConnectFailed { reason: r, .. }), Action::Connect { .. }] =>
            {
                assert_eq!(r, &ConnectError::Closed(reason));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lost_session_resumes_by_token_and_a_refused_token_asks_again() {
        let mut l = login();
        l.start();
        l.on_connected(Vec::new(), node(1), 1);
        assert_eq!(
            emitted(&l.on_session(SessionResponse::HelloOk)),
            [&Event::Connected]
        );
        l.username("alice".into());
        l.on_session(SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: true,
        });
        l.password("pw".into());
        let a = l.on_session(welcome("alice"));
        assert!(matches!(&a[..], [Action::OpenSession { name }] if name == "alice"));
        let (a, online) = l.on_session_open();
        assert_eq!(online, vec!["bob".to_string()]);
        assert!(matches!(emitted(&a)[..], [Event::LoggedIn { .. }]));
        assert!(l.is_online("bob"));

        // Lost: reconnect at once, then resume with the token.
        let a = l.on_gone(None, "timed out".into());
        assert!(matches!(emitted(&a)[..], [Event::CoordinatorLost { .. }]));
        assert!(!l.is_online("bob"));
        l.on_connected(Vec::new(), node(1), 1);
        let a = l.on_session(SessionResponse::HelloOk);
        assert!(
            matches!(&a[..], [Action::Session(SessionRequest::Resume { name, .. })] if name == "alice")
        );
        // A refused token: log in again.
        let a = l.on_session(SessionResponse::LoginFailed {
            reason: LoginFailure::BadToken,
            retry_after_secs: 0,
        });
        assert_eq!(emitted(&a), [&Event::ResumeRefused, &Event::Connected]);
        assert_eq!(l.stage(), Stage::Username);
        assert_eq!(l.me(), None);
    }

    fn avoided(actions: &[Action]) -> Option<Option<SocketAddr>> {
        actions.iter().find_map(|a| match a {
            Action::Connect { avoid, .. } => Some(*avoid),
            _ => None,
        })
    }

    #[test]
    fn a_lost_node_is_tried_last_until_a_connection_is_made_elsewhere() {
        let mut l = login();
        assert_eq!(
            avoided(&l.start()),
            Some(None),
            "the first round: no preference"
        );
        // Reached node 2 of 3: said, since there was a choice.
        let a = l.on_connected(Vec::new(), node(2), 3);
        assert_eq!(
            emitted(&a),
            [&Event::CoordinatorReached {
                addr: node(2),
                addresses: 3
            }]
        );
        assert_eq!(l.node(), Some(node(2)));
        l.on_session(SessionResponse::HelloOk);
        l.username("alice".into());
        l.on_session(SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: true,
        });
        l.on_session(welcome("alice"));
        l.on_session_open();

        // Node 2 is lost: the reconnection avoids it, and so do the rounds
        // after a failed one.
        let a = l.on_gone(None, "timed out".into());
        assert_eq!(avoided(&a), Some(Some(node(2))));
        assert_eq!(l.node(), None);
        let e = ConnectError::NoneAnswered {
            tried: vec![(node(3), "no answer within 4 s".into())],
            unresolved: Vec::new(),
        };
        assert_eq!(avoided(&l.on_connect_failed(e)), Some(Some(node(2))));

        // Connected to node 3, which closes before the welcome: now it is
        // the one to avoid, and the failure names it.
        l.on_connected(Vec::new(), node(3), 3);
        let a = l.on_gone(None, "reset".into());
        assert_eq!(avoided(&a), Some(Some(node(3))));
        assert!(matches!(
            emitted(&a)[..],
            [Event::ConnectFailed { reason: ConnectError::Unreachable { addr, .. }, .. }] if *addr == node(3)
        ));

        // One address only: nothing said about which.
        let a = l.on_connected(Vec::new(), node(1), 1);
        assert!(emitted(&a).is_empty());
        assert_eq!(l.node(), Some(node(1)));
    }

    #[test]
    fn a_welcome_naming_a_path_is_refused_before_anything_is_opened() {
        let mut l = login();
        l.start();
        l.on_connected(Vec::new(), node(1), 1);
        l.on_session(SessionResponse::HelloOk);
        l.username("alice".into());
        l.on_session(SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: true,
        });
        let a = l.on_session(welcome("../../../pwned/evil"));
        assert!(!a.iter().any(|a| matches!(a, Action::OpenSession { .. })));
        assert!(matches!(a.last(), Some(Action::Stop)));
    }

    #[test]
    fn names_from_the_coordinator_that_break_the_rules_are_never_shown() {
        let mut l = login();
        let evil = "\x1b]0;TITLE\x07\x1b[2J".to_string();
        let a = l.on_session(SessionResponse::Presence {
            name: evil.clone(),
            online: true,
        });
        assert!(a.is_empty());
        assert!(!l.is_online(&evil));
        let a = l.on_session(SessionResponse::OnlineList {
            names: vec!["bob".into(), evil, "../x".into()],
        });
        assert_eq!(emitted(&a), [&Event::OnlineList(vec!["bob".into()])]);
    }

    #[test]
    fn a_replaced_session_stops_instead_of_reconnecting() {
        let mut l = login();
        l.start();
        l.on_connected(Vec::new(), node(1), 1);
        l.on_session(SessionResponse::HelloOk);
        l.username("alice".into());
        l.on_session(SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: true,
        });
        l.on_session(welcome("alice"));
        l.on_session_open();
        let a = l.on_gone(Some(CloseCode::REPLACED), "replaced".into());
        assert!(emitted(&a).contains(&&Event::Fatal(Fatal::Replaced)));
        assert!(matches!(a.last(), Some(Action::Stop)));
        assert!(!a.iter().any(|a| matches!(a, Action::Connect { .. })));
    }

    #[test]
    fn commands_out_of_turn_are_refused_with_facts() {
        let mut l = login();
        let a = l.password("pw".into());
        assert_eq!(
            emitted(&a),
            [&Event::Refused {
                command: CommandKind::Password,
                reason: Refusal::NotConnected
            }]
        );
        l.start();
        l.on_connected(Vec::new(), node(1), 1);
        l.on_session(SessionResponse::HelloOk);
        let a = l.password("pw".into());
        assert_eq!(
            emitted(&a),
            [&Event::Refused {
                command: CommandKind::Password,
                reason: Refusal::OutOfTurn
            }]
        );
        // A refused name goes back to the username question.
        l.username("Bad Name".into());
        let a = l.on_session(SessionResponse::LoginFailed {
            reason: LoginFailure::Invalid("no".into()),
            retry_after_secs: 0,
        });
        assert!(matches!(
            emitted(&a)[..],
            [Event::LoginFailed { bad_name: true, .. }]
        ));
        assert_eq!(l.stage(), Stage::Username);
    }
}
