//! Writes the committed seed corpus (`fuzz/corpus/TARGET/seed-*`): one
//! valid message of every variant, as a body (decoder targets) and as a
//! stream of frames (`frames`), plus names and fingerprints. Run it after a
//! protocol change:
//!
//! ```sh
//! P2PCHAT_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --test seeds
//! ```
//!
//! Without the variable it only checks that every seed decodes.

use std::net::SocketAddr;
use std::path::PathBuf;

use common::ids::MessageId;
use common::protocol::*;
use common::tls::Fingerprint;
use common::wire;

fn addrs() -> Vec<SocketAddr> {
    vec![
        "203.0.113.7:7071".parse().expect("v4"),
        "[2001:db8::1]:7071".parse().expect("v6"),
    ]
}

fn fp() -> Fingerprint {
    Fingerprint([0xab; 32])
}

fn session_requests() -> Vec<SessionRequest> {
    vec![
        SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs: addrs(),
        },
        SessionRequest::Username {
            name: "alice".into(),
        },
        SessionRequest::Password {
            password: "correct horse".into(),
        },
        SessionRequest::Resume {
            name: "alice".into(),
            token: "t0ken".into(),
        },
        SessionRequest::Lookup { name: "bob".into() },
        SessionRequest::ListOnline,
        SessionRequest::ChangePassword {
            old: "correct horse".into(),
            new: "battery staple".into(),
        },
    ]
}

fn session_responses() -> Vec<SessionResponse> {
    vec![
        SessionResponse::HelloOk,
        SessionResponse::VersionMismatch {
            supported: 1,
            message: "upgrade the peer".into(),
        },
        SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: true,
        },
        SessionResponse::LoginFailed {
            reason: LoginFailure::WrongPassword,
            retry_after_secs: 0,
        },
        SessionResponse::LoginFailed {
            reason: LoginFailure::Invalid("bad name".into()),
            retry_after_secs: 4,
        },
        SessionResponse::Welcome(Welcome {
            name: "alice".into(),
            online: vec!["bob".into(), "carol".into()],
            observed: addrs()[0],
            token: "t0ken".into(),
            token_valid_secs: 604_800,
        }),
        SessionResponse::Presence {
            name: "bob".into(),
            online: false,
        },
        SessionResponse::LookupResult {
            name: "bob".into(),
            exists: true,
            online: true,
        },
        SessionResponse::OnlineList {
            names: vec!["bob".into()],
        },
        SessionResponse::Error {
            message: "slow down".into(),
        },
        SessionResponse::PasswordChanged {
            token: "t0ken".into(),
        },
        SessionResponse::PasswordNotChanged {
            reason: LoginFailure::TooManyAttempts,
            retry_after_secs: 8,
        },
    ]
}

fn signal_requests() -> Vec<SignalRequest> {
    vec![
        SignalRequest::Open,
        SignalRequest::Request {
            id: 1,
            to: "bob".into(),
            kind: RequestKind::Chat,
        },
        SignalRequest::Answer {
            id: 7,
            answer: Answer::Accept,
        },
        SignalRequest::Cancel { id: u64::MAX },
    ]
}

fn signal_events() -> Vec<SignalEvent> {
    vec![
        SignalEvent::Incoming {
            id: 2,
            from: "alice".into(),
            kind: RequestKind::Deliver,
        },
        SignalEvent::Outcome {
            id: 1,
            outcome: Outcome::Declined,
        },
        SignalEvent::Withdrawn {
            id: 2,
            reason: Withdrawal::TimedOut,
        },
        SignalEvent::Connect {
            id: 1,
            peer: "bob".into(),
            kind: RequestKind::Chat,
            role: Role::Dialer,
            fingerprint: fp(),
            addrs: addrs(),
        },
        SignalEvent::Error {
            message: "unknown request".into(),
        },
    ]
}

fn peer_msgs() -> Vec<PeerMsg> {
    let id = MessageId(0x0192_3456_789a_0001_0123_4567_89ab_cdef);
    vec![
        PeerMsg::Hello {
            version: PROTOCOL_VERSION,
            from: "alice".into(),
            kind: RequestKind::Chat,
        },
        PeerMsg::HelloOk,
        PeerMsg::Message(ChatMessage {
            id,
            sent_at_ms: 1_700_000_000_000,
            held: true,
            body: "hi bob \u{1b}[2J".into(),
        }),
        PeerMsg::Ack { id },
        PeerMsg::Flushed,
        PeerMsg::Refused {
            reason: "not vouched".into(),
        },
    ]
}

struct Seeds {
    dir: Option<PathBuf>,
}

impl Seeds {
    fn new() -> Seeds {
        let dir = std::env::var_os("P2PCHAT_WRITE_SEEDS")
            .map(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
        Seeds { dir }
    }

    fn put(&self, target: &str, n: usize, bytes: &[u8]) {
        if let Some(dir) = &self.dir {
            let dir = dir.join(target);
            std::fs::create_dir_all(&dir).expect("corpus folder");
            std::fs::write(dir.join(format!("seed-{n:02}")), bytes).expect("seed file");
        }
    }

    /// Each message as a body for `target`, and all of them as one stream for
    /// `frames` (whose first byte picks the type).
    fn messages<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        &self,
        target: &str,
        selector: u8,
        msgs: &[T],
    ) {
        let mut stream = vec![selector];
        for (n, msg) in msgs.iter().enumerate() {
            let frame = wire::encode(msg).expect("seed encodes");
            let body = &frame[4..];
            assert_eq!(&wire::decode::<T>(body).expect("seed decodes"), msg);
            self.put(target, n, body);
            stream.extend_from_slice(&frame);
        }
        self.put("frames", selector as usize, &stream);
    }
}

#[test]
fn seeds() {
    let s = Seeds::new();
    s.messages("session_request", 0, &session_requests());
    s.messages("session_response", 1, &session_responses());
    s.messages("signal_request", 2, &signal_requests());
    s.messages("signal_event", 3, &signal_events());
    s.messages("peer_msg", 4, &peer_msgs());

    // A frame announcing more than the cap, and a truncated one.
    s.put("frames", 10, &[0, 0, 1, 0, 1, 0]);
    s.put("frames", 11, &[4, 0, 0, 0, 9, 0]);

    let hello = wire::encode(&SessionRequest::Hello {
        version: 2,
        addrs: vec![],
    })
    .expect("hello");
    s.put("hello_peek", 0, &hello[4..]);
    let peer_hello = wire::encode(&peer_msgs()[0]).expect("peer hello");
    s.put("hello_peek", 1, &peer_hello[4..]);
    s.put("hello_peek", 2, &[0, 0xff, 0xff, 0xff, 0xff, 0x0f]);

    for (n, name) in [
        "alice",
        "Bob.Smith-2",
        "../../etc/passwd",
        "a\u{1b}]0;x\u{7}",
        "é",
        "",
    ]
    .iter()
    .enumerate()
    {
        s.put("names", n, name.as_bytes());
    }

    s.put("fingerprint", 0, fp().to_string().as_bytes());
    s.put("fingerprint", 1, &"ab".repeat(32).into_bytes());
    s.put("fingerprint", 2, &fp().0);
    s.put("fingerprint", 3, b"sha256:zz");
}
