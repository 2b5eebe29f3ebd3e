//! The terminal front end in a pseudo-terminal: the real `peer` binary runs
//! inside a private tmux server (its own socket, killed on drop) against the
//! real `coordinator` binary, and a second `peer` is driven through pipes.
//!
//! Checked: a password is never shown while it is typed (only `*`s); a
//! message arriving while a line is half typed appears above the prompt and
//! leaves the prompt and the typed text intact; Ctrl+C at a prompt signs out
//! cleanly (exit status 0, the terminal's echo restored, the other side told);
//! colours follow `NO_COLOR`.
//!
//! Synchronisation is by polling the pane (every 100 ms, for at most
//! [`WAIT`]), never by fixed sleeps. tmux is required: without it these
//! tests fail with a sentence saying so (CI installs it).

use crate::e2e_support::coordinator_bin;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The longest wait for anything to appear.
const WAIT: Duration = Duration::from_secs(15);
/// How often the pane is polled.
const POLL: Duration = Duration::from_millis(100);
/// The password typed in these tests (long enough to spot anywhere).
const SECRET: &str = "Zebra-Quokka-4711";

/// Fails the test with a clear sentence when tmux is missing.
fn require_tmux() {
    let found = Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the terminal tests need tmux (not found on PATH); install it, e.g. `apt-get install tmux` (CI installs it)"
    );
}

/// Lines of a child's output, read by a thread into a channel.
fn line_reader(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line matching `pred` among `lines`, recording what it skips.
fn expect_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    who: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Err(_) => panic!(
                "{who}: no line with {what} within {WAIT:?}; output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// A real coordinator on 127.0.0.1 with its own data folder; killed on drop.
struct CoordinatorProcess {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl CoordinatorProcess {
    fn start() -> CoordinatorProcess {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut child = Command::new(coordinator_bin())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the coordinator");
        let lines = line_reader(child.stdout.take().expect("coordinator stdout"));
        let mut seen = Vec::new();
        let line = expect_line(&lines, &mut seen, "coordinator", "its address", |l| {
            l.starts_with("listening on ")
        });
        let addr = line["listening on ".len()..]
            .trim()
            .parse()
            .expect("the coordinator's address");
        // The reader thread keeps draining stdout until the child dies.
        CoordinatorProcess { child, addr, dir }
    }

    fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("tls").join(certs::CA_CERT_FILE)
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `peer` driven through pipes (plain lines in and out); killed on drop.
struct PipePeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    name: String,
    _dir: TempDir,
}

impl PipePeer {
    fn start(coord: &CoordinatorProcess, name: &str) -> PipePeer {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut child = Command::new(env!("CARGO_BIN_EXE_peer"))
            .arg("--coordinator")
            .arg(coord.addr.to_string())
            .arg("--ca-cert")
            .arg(coord.ca_cert())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the pipe peer");
        let lines = line_reader(child.stdout.take().expect("peer stdout"));
        let stdin = child.stdin.take();
        PipePeer {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            name: name.to_string(),
            _dir: dir,
        }
    }

    fn expect(&mut self, what: &str) -> String {
        let who = self.name.clone();
        expect_line(&self.lines, &mut self.seen, &who, what, |l| {
            l.contains(what)
        })
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("writing to the peer");
        stdin.flush().expect("flushing the peer's input");
    }

    /// Creates the account and logs in with [`SECRET`].
    fn register(&mut self) {
        self.expect("Username:");
        let name = self.name.clone();
        self.type_line(&name);
        self.expect("Choose a password:");
        self.type_line(SECRET);
        self.expect("Repeat the password:");
        self.type_line(SECRET);
        self.expect(&format!("Logged in as {name}."));
    }
}

impl Drop for PipePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private tmux server with one session running one shell command; the
/// server is killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: TempDir,
}

impl Tmux {
    /// Starts `script` (run by `sh -c`) in a detached 120x40 session.
    fn start(script: &str) -> Tmux {
        require_tmux();
        let dir = tempfile::tempdir().expect("temporary folder");
        let tmux = Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            "sh",
            "-c",
            script,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally (no Enter).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Presses a named key (`Enter`, `C-c`).
    fn press(&self, key: &str) {
        self.run(&["send-keys", "-t", "t", key]);
    }

    /// The visible pane, lines trimmed at the end, trailing blank lines dropped.
    fn screen(&self) -> Vec<String> {
        let text = self.run(&["capture-pane", "-p", "-t", "t"]);
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Everything the pane has shown (scroll-back included), with escapes
    /// for colours and attributes when `escapes`.
    fn everything(&self, escapes: bool) -> String {
        // -J: a line the terminal wrapped comes back whole.
        let mut args = vec!["capture-pane", "-p", "-J", "-t", "t", "-S", "-"];
        if escapes {
            args.push("-e");
        }
        self.run(&args)
    }

    /// Polls the screen until `pred` holds; `check` runs on every capture
    /// (for things that must never be seen). Returns the matching screen.
    fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
        check: impl Fn(&str),
    ) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            check(&self.everything(false));
            if pred(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the terminal did not show {what} within {WAIT:?}; the screen:\n{}",
                    screen.join("\n")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until some line of the screen contains `text`.
    fn wait_text(&self, text: &str) -> Vec<String> {
        self.wait_for(text, |s| s.iter().any(|l| l.contains(text)), |_| {})
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A single-quoted shell word.
fn quote(path: &Path) -> String {
    let s = path.display().to_string();
    assert!(!s.contains('\''), "unexpected quote in {s}");
    format!("'{s}'")
}

/// The shell script that runs the terminal peer, then reports its exit
/// status and keeps the pane open. `env` is a prefix such as `NO_COLOR=1`.
fn peer_script(coord: &CoordinatorProcess, data_dir: &Path, env: &str) -> String {
    peer_script_to(&coord.addr.to_string(), &coord.ca_cert(), data_dir, env)
}

/// As [`peer_script`], for a coordinator at `addr` (which may be down).
fn peer_script_to(addr: &str, ca: &Path, data_dir: &Path, env: &str) -> String {
    format!(
        "trap : INT; {env} RUST_LOG=error {} --coordinator {addr} --ca-cert {} --listen 127.0.0.1:0 --data-dir {} 2>/dev/null; echo EXIT=$?; sleep 60",
        quote(Path::new(env!("CARGO_BIN_EXE_peer"))),
        quote(ca),
        quote(data_dir),
    )
}

/// Panics if the pane ever shows the password.
fn never_the_secret(everything: &str) {
    assert!(
        !everything.contains(SECRET),
        "the password is visible in the terminal:\n{everything}"
    );
}

/// Types `text` one key at a time, as a person does, waiting after each key
/// until the last line shows `shown(typed so far)` at its end.
///
/// (A burst of keys is not used here: see
/// [`a_pasted_line_is_taken_whole`].)
fn type_slowly(tmux: &Tmux, text: &str, shown: impl Fn(&str) -> String) {
    let mut typed = String::new();
    for c in text.chars() {
        typed.push(c);
        tmux.type_text(&c.to_string());
        // The pane does not keep trailing blanks.
        let want = shown(&typed).trim_end().to_string();
        tmux.wait_for(
            &format!("{want:?} at the end of the last line"),
            |s| s.last().is_some_and(|l| l.ends_with(&want)),
            never_the_secret,
        );
    }
}

/// Types [`SECRET`] at the prompt `prompt`: after every key the prompt
/// line must show the prompt and one `*` per key, nothing else; then Enter.
fn type_secret(tmux: &Tmux, prompt: &str) {
    tmux.wait_for(
        prompt,
        |s| s.last().is_some_and(|l| l.ends_with(prompt)),
        never_the_secret,
    );
    let mut typed = 0;
    for c in SECRET.chars() {
        tmux.type_text(&c.to_string());
        typed += 1;
        let want = format!("{prompt} {}", "*".repeat(typed));
        let screen = tmux.wait_for(
            &format!("{typed} stars"),
            |s| {
                s.last()
                    .is_some_and(|l| l.ends_with(&format!(" {}", "*".repeat(typed))))
            },
            never_the_secret,
        );
        let last = screen.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.ends_with(&want),
            "the password line must show only stars: {last:?}"
        );
    }
    tmux.press("Enter");
}

/// Creates `name` in the terminal, checking the password stays hidden.
fn register_in_terminal(tmux: &Tmux, name: &str) {
    // Wait for the connection, not for "Username:": see
    // `the_username_prompt_is_shown_once_connected`.
    tmux.wait_text("Connected to the coordinator.");
    type_slowly(tmux, name, |typed| typed.to_string());
    tmux.press("Enter");
    type_secret(tmux, "Choose a password:");
    type_secret(tmux, "Repeat the password:");
    tmux.wait_for(
        "the login",
        |s| {
            s.iter()
                .any(|l| l.contains(&format!("Logged in as {name}.")))
        },
        never_the_secret,
    );
    never_the_secret(&tmux.everything(false));
}

#[test]
fn a_password_is_shown_as_stars_only_and_colours_are_on_by_default() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "env -u NO_COLOR"));
    register_in_terminal(&tmux, "alice");
    tmux.wait_text("Who do you want to chat with?");
    let painted = tmux.everything(true);
    assert!(
        painted.contains('\x1b'),
        "without NO_COLOR the notices are coloured:\n{painted}"
    );
}

#[test]
fn no_color_turns_colours_off() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    register_in_terminal(&tmux, "alice");
    tmux.wait_text("Who do you want to chat with?");
    let plain = tmux.everything(true);
    assert!(
        !plain.contains('\x1b'),
        "NO_COLOR=1 must print no escape sequences:\n{plain:?}"
    );
}

#[test]
fn a_message_arriving_while_typing_keeps_the_prompt_and_ctrl_c_signs_out() {
    let coord = CoordinatorProcess::start();
    let mut bob = PipePeer::start(&coord, "bob");
    bob.register();
    bob.expect("Who do you want to chat with?");

    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "env -u NO_COLOR"));
    register_in_terminal(&tmux, "alice");
    tmux.wait_text("Who do you want to chat with?");
    type_slowly(&tmux, "bob", |t| format!("chat with? {t}"));
    tmux.press("Enter");
    bob.expect("alice wants to chat with you");
    bob.type_line("y");
    bob.expect("You are now chatting with alice");
    tmux.wait_text("You are now chatting with bob");
    // The chat prompt is there at once, without a key (issue 8).
    let prompt = "alice → bob>";
    tmux.wait_for(
        "the chat prompt",
        |s| s.last().is_some_and(|l| l == prompt),
        |_| {},
    );

    // A half-typed line, then a message from bob.
    type_slowly(&tmux, "half-typ", |typed| format!("{prompt} {typed}"));
    let typed = format!("{prompt} half-typ");
    bob.type_line("hello from bob");
    tmux.wait_for(
        "bob's message",
        |s| s.iter().any(|l| l.contains("bob: hello from bob")),
        |_| {},
    );
    // The last line settles on the prompt with the typed text, below the message.
    let now = tmux.wait_for(
        "the prompt redrawn below the message",
        |s| s.last().is_some_and(|l| *l == typed),
        |_| {},
    );
    let msg_at = now
        .iter()
        .position(|l| l.contains("bob: hello from bob"))
        .expect("the message is on the screen");
    assert_eq!(
        now.last().map(String::as_str),
        Some(typed.as_str()),
        "the prompt and the typed text must survive the message:\n{}",
        now.join("\n")
    );
    assert!(
        msg_at < now.len() - 1,
        "the message must be above the prompt:\n{}",
        now.join("\n")
    );
    assert!(
        !now[..now.len() - 1].iter().any(|l| l.contains("half-typ")),
        "the typed text must not be smeared into the lines above:\n{}",
        now.join("\n")
    );

    // Enter sends the whole line.
    type_slowly(&tmux, "ed line", |t| format!("half-typ{t}"));
    tmux.press("Enter");
    bob.expect("alice: half-typed line");

    // Ctrl+C at the prompt signs out.
    tmux.wait_for(
        "a fresh prompt",
        |s| s.last().is_some_and(|l| l == prompt),
        |_| {},
    );
    tmux.press("C-c");
    let screen = tmux.wait_text("EXIT=");
    assert!(
        screen.iter().any(|l| l.contains("Signed out.")),
        "{}",
        screen.join("\n")
    );
    assert!(
        screen.iter().any(|l| l.trim() == "EXIT=0"),
        "Ctrl+C is a normal exit:\n{}",
        screen.join("\n")
    );
    // Told once, as the end of the chat (not also as "went offline").
    bob.expect("alice signed out.");

    // The shell got its terminal back with echo on.
    tmux.type_text("echo-is-back");
    tmux.wait_text("echo-is-back");
}

#[test]
fn the_username_prompt_is_shown_once_connected() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    tmux.wait_text("Connected to the coordinator.");
    let screen = tmux.wait_for(
        "the Username: prompt",
        |s| s.last().is_some_and(|l| l == "Username:"),
        |_| {},
    );
    assert!(screen.len() > 1);
}

#[test]
fn a_pasted_line_is_taken_whole() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    register_in_terminal(&tmux, "alice");
    tmux.wait_for(
        "the chat partner prompt",
        |s| {
            s.last()
                .is_some_and(|l| l == "Who do you want to chat with?")
        },
        |_| {},
    );
    // A paste: the keys arrive in one burst, Enter included.
    tmux.type_text("/online\r");
    tmux.wait_text("Nobody else is online.");
}

/// A block of many lines pasted into the chat reaches the other side whole
/// and in order (the line editor used to drop what it had read ahead of
/// the first line, losing most of a paste).
#[test]
fn a_pasted_block_of_many_lines_reaches_the_chat_whole() {
    const N: usize = 300;
    let coord = CoordinatorProcess::start();
    let mut bob = PipePeer::start(&coord, "bob");
    bob.register();
    bob.expect("Who do you want to chat with?");
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    register_in_terminal(&tmux, "alice");
    tmux.wait_text("Who do you want to chat with?");
    type_slowly(&tmux, "bob", |t| format!("chat with? {t}"));
    tmux.press("Enter");
    bob.expect("alice wants to chat with you");
    bob.type_line("y");
    bob.expect("You are now chatting with alice");
    tmux.wait_text("You are now chatting with bob");

    let block: String = (0..N).map(|i| format!("pasted {i:03}\n")).collect();
    let file = data.path().join("paste.txt");
    std::fs::write(&file, block).unwrap();
    tmux.run(&["load-buffer", &file.display().to_string()]);
    tmux.run(&["paste-buffer", "-t", "t"]);
    for i in 0..N {
        bob.expect(&format!("alice: pasted {i:03}"));
    }
}

#[test]
fn a_password_stays_hidden_on_a_dumb_terminal() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "TERM=dumb NO_COLOR=1"));
    tmux.wait_text("Connected to the coordinator.");
    tmux.type_text("alice");
    tmux.press("Enter");
    tmux.wait_text("Choose a password:");
    tmux.type_text(SECRET);
    tmux.press("Enter");
    tmux.wait_text("Repeat the password:");
    never_the_secret(&tmux.everything(false));
}

/// Waits until the last line of the screen is exactly `line`.
fn wait_last(tmux: &Tmux, line: &str) -> Vec<String> {
    tmux.wait_for(
        &format!("{line:?} as the last line"),
        |s| s.last().is_some_and(|l| l == line),
        |_| {},
    )
}

/// Every question's prompt appears in place the moment the question
/// changes, with no key pressed: the username on the prompt's line, an
/// incoming request replacing the who-prompt, the chat prompt at the start
/// of a chat, the who-prompt after leaving and after the other side quits.
#[test]
fn every_question_shows_its_prompt_in_place() {
    let coord = CoordinatorProcess::start();
    let mut alice = PipePeer::start(&coord, "alice");
    alice.register();
    alice.expect("Who do you want to chat with?");
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    tmux.wait_text("Connected to the coordinator.");
    type_slowly(&tmux, "bob", |t| format!("Username: {t}"));
    tmux.press("Enter");
    type_secret(&tmux, "Choose a password:");
    type_secret(&tmux, "Repeat the password:");
    let who = "Who do you want to chat with?";
    wait_last(&tmux, who);

    // A request: the question changes in place; the answer goes with it.
    alice.type_line("bob");
    wait_last(&tmux, "Chat with alice? [y/n]");
    tmux.type_text("y");
    tmux.press("Enter");
    let chat = "bob → alice>";
    wait_last(&tmux, chat);
    alice.expect("You are now chatting with bob");
    let all = tmux.everything(false);
    assert!(all.contains("Username: bob"), "{all}");
    assert!(all.contains("Chat with alice? [y/n] y"), "{all}");
    assert!(!all.contains(&format!("{who} y")), "{all}");

    // Leaving: the who-prompt, at once.
    type_slowly(&tmux, "disconnect", |t| format!("{chat} {t}"));
    tmux.press("Enter");
    wait_last(&tmux, who);
    alice.expect("bob left the chat");

    // The other side quits mid-chat: the who-prompt, at once.
    alice.expect("Who do you want to chat with?");
    alice.type_line("bob");
    wait_last(&tmux, "Chat with alice? [y/n]");
    tmux.type_text("y");
    tmux.press("Enter");
    wait_last(&tmux, chat);
    alice.expect("You are now chatting with bob");
    alice.type_line("exit");
    tmux.wait_text("alice signed out.");
    wait_last(&tmux, who);

    tmux.type_text("exit");
    tmux.press("Enter");
    tmux.wait_text("EXIT=0");
}

/// `exit`, Ctrl+D and Ctrl+C end the program in every state, at once:
/// while the coordinator is being retried, at a password prompt, and
/// while waiting for an answer that does not come.
#[test]
fn exit_ends_the_program_in_every_state() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();

    // Connecting to a coordinator that is not there.
    let down = crate::e2e_support::free_udp_addr().to_string();
    let tmux = Tmux::start(&peer_script_to(
        &down,
        &coord.ca_cert(),
        data.path(),
        "NO_COLOR=1",
    ));
    tmux.wait_text("Connecting to the coordinator");
    tmux.type_text("exit");
    tmux.press("Enter");
    tmux.wait_text("EXIT=0");
    let all = tmux.everything(false);
    assert!(all.contains("Quitting..."), "{all}");
    drop(tmux);

    // At the password prompt: Ctrl+D.
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    tmux.wait_text("Connected to the coordinator.");
    type_slowly(&tmux, "carol", |t| format!("Username: {t}"));
    tmux.press("Enter");
    tmux.wait_text("Choose a password:");
    tmux.press("C-d");
    tmux.wait_text("EXIT=0");
    drop(tmux);

    // Waiting for an answer that does not come: exit.
    let mut alice = PipePeer::start(&coord, "alice");
    alice.register();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    register_in_terminal(&tmux, "bob");
    wait_last(&tmux, "Who do you want to chat with?");
    tmux.type_text("alice");
    tmux.press("Enter");
    tmux.wait_text("Asking alice to chat");
    alice.expect("Chat with bob? [y/n]");
    tmux.type_text("exit");
    tmux.press("Enter");
    tmux.wait_text("EXIT=0");
    drop(tmux);

    // In a chat: Ctrl+C.
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    tmux.wait_text("Connected to the coordinator.");
    type_slowly(&tmux, "bob", |t| format!("Username: {t}"));
    tmux.press("Enter");
    type_secret(&tmux, "Password for bob:");
    wait_last(&tmux, "Who do you want to chat with?");
    tmux.press("C-c");
    tmux.wait_text("EXIT=0");
}

/// The README's walkthrough, followed in two real terminals: every line it
/// quotes in a block marked `<!-- walkthrough: NAME -->` appears on that
/// user's screen (times and port numbers may differ; a line ending in `…`
/// is a prefix; `/tmp/NAME` is the user's data folder).
#[test]
fn the_readme_walkthrough_is_what_the_terminal_shows() {
    const PASSWORD: &str = "kestrel9"; // eight stars, as in the README
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let coord = CoordinatorProcess::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // As in the README: no --ca-cert, so the coordinator is pinned on first use.
    let script = |dir: &Path| {
        format!(
            "NO_COLOR=1 RUST_LOG=error {} --coordinator {} --listen 127.0.0.1:0 --data-dir {} 2>/dev/null; echo EXIT=$?; sleep 60",
            quote(Path::new(env!("CARGO_BIN_EXE_peer"))),
            coord.addr,
            quote(dir),
        )
    };
    let register = |tmux: &Tmux, name: &str| {
        tmux.wait_text("Connected to the coordinator.");
        tmux.type_text(name);
        tmux.press("Enter");
        for prompt in ["Choose a password:", "Repeat the password:"] {
            tmux.wait_for(
                prompt,
                |s| s.last().is_some_and(|l| l.ends_with(prompt)),
                |_| {},
            );
            tmux.type_text(PASSWORD);
            tmux.press("Enter");
        }
        tmux.wait_text(&format!("Logged in as {name}."));
    };
    let say = |tmux: &Tmux, line: &str| {
        tmux.type_text(line);
        tmux.press("Enter");
    };
    let alice = Tmux::start(&script(da.path()));
    register(&alice, "alice");
    wait_last(&alice, "Who do you want to chat with?");
    let bob = Tmux::start(&script(db.path()));
    register(&bob, "bob");
    alice.wait_text("bob is online.");

    say(&alice, "bob");
    bob.wait_text("alice wants to chat with you. Accept? [y/n]");
    wait_last(&bob, "Chat with alice? [y/n]");
    say(&bob, "y");
    wait_last(&alice, "alice → bob>");
    wait_last(&bob, "bob → alice>");
    say(&alice, "hi bob");
    bob.wait_text("alice: hi bob");
    say(&bob, "hello alice");
    alice.wait_text("bob: hello alice");
    say(&alice, "disconnect");
    bob.wait_text("alice left the chat.");
    say(&bob, "exit");
    bob.wait_text("EXIT=0");
    alice.wait_text("bob went offline.");
    wait_last(&alice, "Who do you want to chat with?");
    say(&alice, "bob");
    wait_last(&alice, "alice → bob (kept)>");
    say(&alice, "see you tomorrow");
    alice.wait_text("(kept for bob)");
    say(&alice, "disconnect");
    wait_last(&alice, "Who do you want to chat with?");
    let bob_first = bob.everything(false);
    drop(bob);
    let bob = Tmux::start(&script(db.path()));
    bob.wait_text("Connected to the coordinator.");
    say(&bob, "bob");
    bob.wait_for(
        "the password prompt",
        |s| s.last().is_some_and(|l| l.ends_with("Password for bob:")),
        |_| {},
    );
    say(&bob, PASSWORD);
    bob.wait_text("alice: see you tomorrow");
    alice.wait_text("1 kept message delivered to bob.");

    let screens = [
        ("alice", da.path(), alice.everything(false)),
        (
            "bob",
            db.path(),
            format!("{bob_first}\n{}", bob.everything(false)),
        ),
    ];
    let digits = |s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                if !out.ends_with('#') {
                    out.push('#');
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut checked = 0;
    let mut blocks = readme.split("<!-- walkthrough: ").skip(1);
    for block in blocks.by_ref() {
        let (who, rest) = block.split_once(" -->").expect("a walkthrough marker");
        let (_, dir, screen) = screens
            .iter()
            .find(|(name, _, _)| *name == who)
            .expect("a walkthrough user");
        let body = rest
            .split_once("```console\n")
            .and_then(|(_, b)| b.split_once("\n```"))
            .map(|(b, _)| b)
            .expect("a console block after the marker");
        let shown: Vec<String> = screen.lines().map(|l| digits(l.trim_end())).collect();
        for line in body.lines().filter(|l| !l.starts_with("$ ")) {
            let line = line.replace(&format!("/tmp/{who}"), &dir.display().to_string());
            let want = digits(&line);
            let found = match want.split_once('…') {
                Some((prefix, _)) => shown.iter().any(|l| l.starts_with(prefix)),
                None => shown.contains(&want),
            };
            assert!(
                found,
                "{who}'s screen lacks the README's line {line:?}:\n{screen}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} README lines were checked");
}

/// A refused password (too short) and a mismatched repeat: the question
/// comes again and every try stays hidden; what went wrong is said, as a
/// sentence, above the prompt.
#[test]
fn a_refused_password_and_every_later_try_stay_hidden() {
    let coord = CoordinatorProcess::start();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(&peer_script(&coord, data.path(), "NO_COLOR=1"));
    tmux.wait_text("Connected to the coordinator.");
    type_slowly(&tmux, "al ice", |t| format!("Username: {t}"));
    tmux.press("Enter");
    tmux.wait_text("A username may only hold");
    type_slowly(&tmux, "dave", |t| format!("Username: {t}"));
    tmux.press("Enter");
    tmux.wait_text("Choose a password:");
    tmux.type_text("short");
    tmux.press("Enter");
    tmux.wait_text("A password has at least 8");
    type_secret(&tmux, "Choose a password:");
    tmux.wait_text("Repeat the password:");
    tmux.type_text("Not-The-Same-1");
    tmux.press("Enter");
    tmux.wait_text("The passwords differ.");
    type_secret(&tmux, "Choose a password:");
    type_secret(&tmux, "Repeat the password:");
    tmux.wait_text("Logged in as dave.");
    let all = tmux.everything(false);
    never_the_secret(&all);
    for typed in ["short", "Not-The-Same-1"] {
        assert!(!all.contains(typed), "{typed:?} is visible:\n{all}");
    }
}
