//! Reading lines and showing prompts: on a terminal with a live line editor
//! (rustyline-async), whose prompt changes in place the moment the question
//! does and which prints arriving lines above it; on a terminal that cannot
//! be driven (`TERM=dumb`): plain reads on request, passwords without echo;
//! from a pipe: plain lines read ahead, each prompt printed on its own line.
//!
//! Every line comes back tagged with the prompt it was typed at, so the front
//! end never takes a line typed for one question as the answer to another.

use crossterm::event::{Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use rustyline_async::{Readline, ReadlineEvent, SharedWriter};
use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::sync::mpsc as std_mpsc;
use tokio::sync::{mpsc, oneshot};

/// Longest line read, in bytes; longer lines are refused whole.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Lines to print that the live terminal holds before the front end waits.
const PRINT_QUEUE: usize = 256;

/// What the reader hands the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending, and the prompt number it was typed
    /// at (see [`Reader::show`]; 0 where lines are read ahead).
    Line(String, u64),
    /// A line over [`MAX_LINE_BYTES`], dropped.
    TooLong(usize),
    /// Ctrl+C at the prompt.
    Interrupted,
    /// End of input (Ctrl+D, or the pipe closed).
    Eof,
}

/// A request to read one line (the plain terminal).
pub struct ReadRequest {
    prompt: String,
    secret: bool,
}

/// What the front end tells the live terminal.
pub enum ToTerminal {
    /// Show this prompt now, in place of the current one.
    Prompt {
        /// The prompt.
        text: String,
        /// Typing is hidden.
        secret: bool,
        /// Its number.
        gen: u64,
    },
    /// Print a line above the prompt.
    Print(String),
    /// Print what is left, take the prompt away and give the terminal back.
    Close(oneshot::Sender<()>),
}

/// The line source.
pub enum Reader {
    /// A terminal with a live line editor, driven by its own task.
    Live {
        /// Prompts and lines to print, to the terminal task.
        tx: mpsc::Sender<ToTerminal>,
        /// Prints and prompts waiting while `tx` is full, in order.
        held: VecDeque<ToTerminal>,
        /// The number of the prompt showing.
        gen: u64,
    },
    /// A terminal line editing cannot drive (`TERM=dumb`, say): lines are
    /// read on request, passwords without echo.
    Basic {
        /// Read requests to the reading thread.
        requests: std_mpsc::Sender<ReadRequest>,
        /// A read is in progress, with this prompt.
        reading: Option<String>,
        /// The prompt that is wanted.
        want: Option<(String, bool)>,
    },
    /// A pipe or file: lines are read ahead continuously.
    Plain,
}

impl Reader {
    /// Starts the reader for a terminal (`terminal`) or a pipe. Must run
    /// inside the tokio runtime.
    pub fn start(terminal: bool) -> Result<(Reader, mpsc::Receiver<Input>), String> {
        let (tx, rx) = mpsc::channel(256);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map(drop)
                .map_err(|e| e.to_string())
        };
        if !terminal {
            spawn("stdin", Box::new(move || read_plain(tx)))?;
            return Ok((Reader::Plain, rx));
        }
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb" || t.is_empty());
        match (!dumb).then(|| Readline::new(String::new())) {
            Some(Ok((editor, writer))) => {
                let (ctl_tx, ctl_rx) = mpsc::channel(PRINT_QUEUE);
                tokio::spawn(run_live(editor, writer, ctl_rx, tx));
                Ok((
                    Reader::Live {
                        tx: ctl_tx,
                        held: VecDeque::new(),
                        gen: 0,
                    },
                    rx,
                ))
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::info!(error = %e, "no line editing on this terminal");
                }
                let (req_tx, req_rx) = std_mpsc::channel::<ReadRequest>();
                spawn("terminal", Box::new(move || read_basic(req_rx, tx)))?;
                Ok((
                    Reader::Basic {
                        requests: req_tx,
                        reading: None,
                        want: None,
                    },
                    rx,
                ))
            }
        }
    }

    /// Shows the prompt of a new question (`None`: no question, a wait).
    /// On the live terminal it replaces the prompt in place; a plain
    /// terminal asks for a line, or prints the question above a read in
    /// progress; a pipe prints it on a line of its own. Returns the
    /// prompt's number, which lines typed at it carry.
    pub fn show(&mut self, prompt: Option<(String, bool)>) -> u64 {
        match self {
            Reader::Live { gen, .. } => {
                *gen += 1;
                let (text, secret) = prompt.unwrap_or_default();
                let gen = *gen;
                // After the lines printed before it, and never dropped.
                self.queue(ToTerminal::Prompt { text, secret, gen });
                gen
            }
            Reader::Basic {
                requests,
                reading,
                want,
            } => {
                *want = prompt.clone();
                match (reading.as_deref(), prompt) {
                    (None, Some((text, secret))) => {
                        let _ = requests.send(ReadRequest {
                            prompt: text.clone(),
                            secret,
                        });
                        *reading = Some(text);
                    }
                    (Some(current), Some((text, _))) if current != text && !text.is_empty() => {
                        println!("{}", text.trim_end());
                    }
                    _ => {}
                }
                0
            }
            Reader::Plain => {
                if let Some((text, _)) = prompt.filter(|(t, _)| !t.is_empty()) {
                    println!("{}", text.trim_end());
                }
                0
            }
        }
    }

    /// A line came back: the plain terminal's read is over.
    pub fn taken(&mut self) {
        if let Reader::Basic { reading, .. } = self {
            *reading = None;
        }
    }

    /// After a line was handled: the plain terminal asks for the next one,
    /// with the prompt of the question now wanted.
    pub fn resume(&mut self) {
        if let Reader::Basic {
            requests,
            reading: reading @ None,
            want: Some((text, secret)),
        } = self
        {
            let _ = requests.send(ReadRequest {
                prompt: text.clone(),
                secret: *secret,
            });
            *reading = Some(text.clone());
        }
    }

    /// The number of the prompt showing (0 where lines are read ahead).
    pub fn current(&self) -> u64 {
        match self {
            Reader::Live { gen, .. } => *gen,
            _ => 0,
        }
    }

    /// Prints a line: above the prompt on the live terminal, else plainly.
    /// False when the output is gone (a closed pipe).
    pub fn print(&mut self, line: &str) -> bool {
        match self {
            Reader::Live { .. } => self.queue(ToTerminal::Print(line.to_string())),
            _ => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
            }
        }
    }

    /// Hands `msg` to the live terminal, or holds it (in order) while the
    /// terminal's queue is full; false when the terminal is gone.
    fn queue(&mut self, msg: ToTerminal) -> bool {
        let Reader::Live { tx, held, .. } = self else {
            return true;
        };
        if !held.is_empty() {
            held.push_back(msg);
            return true;
        }
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(msg)) => {
                held.push_back(msg);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Prints and prompts waiting for the live terminal.
    pub fn held(&self) -> usize {
        match self {
            Reader::Live { held, .. } => held.len(),
            _ => 0,
        }
    }

    /// Waits until the oldest held message can go on to the terminal, and
    /// hands it over (call when [`Reader::held`] is not zero).
    pub async fn drain(&mut self) {
        if let Reader::Live { tx, held, .. } = self {
            if let Some(msg) = held.pop_front() {
                if tx.send(msg).await.is_err() {
                    held.clear();
                }
            }
        }
    }

    /// Prints what is left and gives the terminal back (a live terminal's
    /// raw mode ends here).
    pub async fn close(&mut self) {
        if let Reader::Live { tx, held, .. } = self {
            while let Some(msg) = held.pop_front() {
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            let (done_tx, done_rx) = oneshot::channel();
            if tx.send(ToTerminal::Close(done_tx)).await.is_ok() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), done_rx).await;
            }
        }
    }
}

/// The live terminal: one task owns the line editor; prompts change in
/// place and lines print above the line being typed. Passwords are read
/// here key by key and shown as stars; the terminal stays in that mode
/// until the front end shows another prompt, so nothing typed after a
/// password (a second try, say) is ever echoed.
async fn run_live(
    editor: Readline,
    writer: SharedWriter,
    mut ctl: mpsc::Receiver<ToTerminal>,
    tx: mpsc::Sender<Input>,
) {
    let mut live = Live {
        editor,
        writer,
        unprinted: VecDeque::new(),
        stuck: false,
        secret: None,
    };
    let mut gen = 0;
    let mut keys: Option<EventStream> = None;
    let mut ended = false;
    loop {
        live.pump();
        let cmd = if ended {
            // The input is over; prints still go out until the front end
            // closes.
            ctl.recv().await
        } else if let Some(pw) = live.secret.as_mut() {
            let keys = keys.get_or_insert_with(EventStream::new);
            tokio::select! {
                cmd = ctl.recv() => cmd,
                key = keys.next() => {
                    let item = match key {
                        Some(Ok(ev)) => pw.key(ev),
                        _ => Some(Input::Eof),
                    };
                    if let Some(item) = item {
                        if let Input::Line(..) = item {
                            // The same question, on the next line, until
                            // the front end asks another.
                            let again = Secret::start(pw.prompt.clone());
                            again.render();
                            live.secret = Some(again);
                        }
                        ended = send_input(&tx, item, gen).await;
                    }
                    continue;
                }
            }
        } else {
            tokio::select! {
                biased;
                // The editor passes printed lines on while it reads; this
                // comes back for those it had no room for.
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)), if live.stuck => continue,
                cmd = ctl.recv(), if live.unprinted.len() < PRINT_QUEUE => cmd,
                read = live.editor.readline() => {
                    let item = match read {
                        Ok(ReadlineEvent::Line(line)) if line.len() > MAX_LINE_BYTES => Input::TooLong(line.len()),
                        Ok(ReadlineEvent::Line(line)) => {
                            if !line.trim().is_empty() {
                                live.editor.add_history_entry(line.clone());
                            }
                            Input::Line(line, 0)
                        }
                        Ok(ReadlineEvent::Interrupted) => Input::Interrupted,
                        Ok(ReadlineEvent::Eof) | Err(_) => Input::Eof,
                    };
                    ended = send_input(&tx, item, gen).await;
                    continue;
                }
            }
        };
        match cmd {
            None => break,
            Some(ToTerminal::Print(line)) => live.print(line),
            Some(ToTerminal::Prompt {
                text,
                secret,
                gen: g,
            }) => {
                gen = g;
                live.prompt(text, secret);
            }
            Some(ToTerminal::Close(done)) => {
                live.close();
                let _ = done.send(());
                break;
            }
        }
    }
}

/// Hands a read item to the front end, tagged with the prompt's number;
/// true when input is over (the end, Ctrl+C, or nobody listens).
async fn send_input(tx: &mpsc::Sender<Input>, item: Input, gen: u64) -> bool {
    let item = match item {
        Input::Line(line, _) => Input::Line(line, gen),
        other => other,
    };
    let end = matches!(item, Input::Eof | Input::Interrupted);
    tx.send(item).await.is_err() || end
}

/// The live terminal's screen: the editor, or a password being typed.
struct Live {
    editor: Readline,
    writer: SharedWriter,
    /// Lines the editor's writer had no room for yet.
    unprinted: VecDeque<String>,
    /// The writer holds a line it could not pass on yet.
    stuck: bool,
    /// A password is being typed (the editor is not read meanwhile).
    secret: Option<Secret>,
}

impl Live {
    /// Passes held lines on to the editor, as far as it takes them.
    fn pump(&mut self) {
        if self.stuck {
            self.stuck = !offer(&mut self.writer, b"");
        }
        while !self.stuck {
            let Some(line) = self.unprinted.pop_front() else {
                break;
            };
            self.stuck = !offer(&mut self.writer, format!("{line}\n").as_bytes());
        }
    }

    fn print(&mut self, line: String) {
        match &self.secret {
            Some(pw) => pw.print_above(&line),
            None => self.unprinted.push_back(line),
        }
    }

    /// Prints whatever the editor holds, and takes its prompt away: it
    /// is not read (nor drawn) until it gets a prompt again.
    fn settle(&mut self) {
        let _ = self.editor.update_prompt("");
        let _ = self.editor.flush();
        let mut out = std::io::stdout().lock();
        for line in self.unprinted.drain(..) {
            let _ = write!(out, "\r\x1b[2K{line}\r\n");
        }
        let _ = out.flush();
    }

    fn prompt(&mut self, text: String, secret: bool) {
        if let Some(mut pw) = self.secret.take() {
            pw.leave();
        }
        if secret {
            self.settle();
            let pw = Secret::start(text);
            pw.render();
            self.secret = Some(pw);
        } else {
            let _ = self.editor.update_prompt(&text);
        }
    }

    fn close(&mut self) {
        if let Some(mut pw) = self.secret.take() {
            pw.leave();
        }
        self.settle();
    }
}

/// Hands a line to the editor's writer; false when the writer kept it for
/// later (its queue is full: offer an empty line to push it on).
fn offer(writer: &mut SharedWriter, bytes: &[u8]) -> bool {
    matches!(writer.write(bytes), Ok(n) if n == bytes.len())
}

/// A password being typed on the live terminal: stars only.
struct Secret {
    prompt: String,
    typed: String,
    /// Enter was pressed: the line is finished and the cursor below it.
    done: bool,
}

impl Secret {
    fn start(prompt: String) -> Secret {
        Secret {
            prompt,
            typed: String::new(),
            done: false,
        }
    }

    fn render(&self) {
        if self.done {
            return;
        }
        let stars = "*".repeat(self.typed.chars().count());
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{}{stars}", self.prompt);
        let _ = out.flush();
    }

    fn print_above(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{line}\r\n");
        let _ = out.flush();
        drop(out);
        self.render();
    }

    /// The password line is left on the screen; the cursor goes below it.
    fn leave(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\n");
        let _ = out.flush();
    }

    /// A key: the password when Enter ends it.
    fn key(&mut self, ev: TermEvent) -> Option<Input> {
        let TermEvent::Key(k) = ev else {
            return None;
        };
        if self.done {
            return None;
        }
        if k.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Char('c') if ctrl => return Some(Input::Interrupted),
            KeyCode::Char('d') if ctrl && self.typed.is_empty() => return Some(Input::Eof),
            KeyCode::Char('u') if ctrl => self.typed.clear(),
            KeyCode::Char(c) if !ctrl => {
                if self.typed.len() < MAX_LINE_BYTES {
                    self.typed.push(c)
                }
            }
            KeyCode::Backspace => {
                self.typed.pop();
            }
            KeyCode::Enter => {
                // The stars stay; the next prompt takes the line below.
                self.leave();
                return Some(Input::Line(std::mem::take(&mut self.typed), 0));
            }
            _ => return None,
        }
        self.render();
        None
    }
}

/// Reads on request without line editing; passwords are read with echo off.
fn read_basic(requests: std_mpsc::Receiver<ReadRequest>, tx: mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    while let Ok(req) = requests.recv() {
        print!("{}", req.prompt);
        let _ = std::io::stdout().flush();
        let item = if req.secret {
            match rpassword::read_password() {
                Ok(line) => Input::Line(line, 0),
                Err(_) => Input::Eof,
            }
        } else {
            read_bounded_line(&mut stdin.lock())
        };
        let end = item == Input::Eof;
        if tx.blocking_send(item).is_err() || end {
            return;
        }
    }
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; a longer line is consumed
/// to its end and reported as too long. Invalid UTF-8 is replaced, not fatal.
fn read_bounded_line(reader: &mut impl BufRead) -> Input {
    let mut buf = Vec::new();
    match reader
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut buf)
    {
        Ok(0) | Err(_) => return Input::Eof,
        Ok(_) => {}
    }
    let ended = buf.ends_with(b"\n");
    let text_len = buf.len() - usize::from(ended);
    if text_len > MAX_LINE_BYTES || (!ended && buf.len() > MAX_LINE_BYTES) {
        let mut skipped = buf.len();
        let mut rest = Vec::new();
        // (A line that ended within the limit never gets here.)
        loop {
            rest.clear();
            match reader
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut rest)
            {
                Ok(0) | Err(_) => break,
                Ok(n) => skipped += n,
            }
            if rest.ends_with(b"\n") {
                break;
            }
        }
        return Input::TooLong(skipped);
    }
    let line = String::from_utf8_lossy(&buf);
    Input::Line(line.trim_end_matches(['\n', '\r']).to_string(), 0)
}

fn read_plain(tx: mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    loop {
        let item = read_bounded_line(&mut lock);
        let end = item == Input::Eof;
        if tx.blocking_send(item).is_err() || end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_the_rest_of_a_long_line_is_skipped() {
        let exact = "x".repeat(MAX_LINE_BYTES);
        let long = "y".repeat(MAX_LINE_BYTES * 2 + 5);
        let text = format!("hi\r\n{exact}\n{long}\nafter\n\u{e9}\u{ff}tail");
        let mut reader = std::io::Cursor::new(text.into_bytes());
        let line = |s: &str| Input::Line(s.to_string(), 0);
        assert_eq!(read_bounded_line(&mut reader), line("hi"));
        assert_eq!(read_bounded_line(&mut reader), line(&exact));
        assert_eq!(
            read_bounded_line(&mut reader),
            Input::TooLong(MAX_LINE_BYTES * 2 + 6)
        );
        assert_eq!(read_bounded_line(&mut reader), line("after"));
        assert_eq!(read_bounded_line(&mut reader), line("é\u{ff}tail"));
        assert_eq!(read_bounded_line(&mut reader), Input::Eof);
    }

    #[tokio::test]
    async fn a_prompt_is_never_dropped_behind_a_full_print_queue() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut r = Reader::Live {
            tx,
            held: VecDeque::new(),
            gen: 0,
        };
        assert!(r.print("a"));
        assert!(r.print("b"));
        let gen = r.show(Some(("Who? ".into(), false)));
        assert_eq!(r.held(), 2, "b and the prompt wait, in order");
        assert!(matches!(rx.recv().await, Some(ToTerminal::Print(l)) if l == "a"));
        r.drain().await;
        assert!(matches!(rx.recv().await, Some(ToTerminal::Print(l)) if l == "b"));
        r.drain().await;
        assert!(matches!(
            rx.recv().await,
            Some(ToTerminal::Prompt { text, secret: false, gen: g }) if text == "Who? " && g == gen
        ));
        drop(rx);
        assert!(!r.print("gone"), "a terminal that is gone is said");
    }

    #[test]
    fn a_password_is_typed_edited_and_ended_with_enter() {
        use crossterm::event::KeyEvent;
        let key = |code, m| TermEvent::Key(KeyEvent::new(code, m));
        let mut pw = Secret::start("Password: ".into());
        assert_eq!(pw.key(key(KeyCode::Char('a'), KeyModifiers::NONE)), None);
        assert_eq!(pw.key(key(KeyCode::Char('x'), KeyModifiers::NONE)), None);
        assert_eq!(pw.key(key(KeyCode::Backspace, KeyModifiers::NONE)), None);
        assert_eq!(pw.key(key(KeyCode::Char('b'), KeyModifiers::SHIFT)), None);
        assert_eq!(
            pw.key(key(KeyCode::Enter, KeyModifiers::NONE)),
            Some(Input::Line("ab".into(), 0))
        );
        let mut pw = Secret::start("Password: ".into());
        assert_eq!(
            pw.key(key(KeyCode::Char('d'), KeyModifiers::CONTROL)),
            Some(Input::Eof)
        );
        let mut pw = Secret::start("Password: ".into());
        assert_eq!(
            pw.key(key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Input::Interrupted)
        );
    }
}
