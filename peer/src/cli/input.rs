//! Reading lines: from a terminal with rustyline (line editing, history,
//! masked passwords, and an external printer that keeps the prompt intact
//! while messages arrive), from a terminal rustyline cannot drive (plain
//! lines, passwords without echo), or plain lines from a pipe.
//!
//! Both run on a dedicated thread, since reading blocks; lines come back
//! through a bounded channel.

use rustyline::completion::Completer;
use rustyline::config::Configurer;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, Editor, ExternalPrinter, Helper};
use std::borrow::Cow;
use std::io::{BufRead, Read};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use tokio::sync::mpsc;

/// Longest line read, in bytes; longer lines are refused whole.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// What the reader hands the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// A line over [`MAX_LINE_BYTES`], dropped.
    TooLong(usize),
    /// Ctrl+C at the prompt.
    Interrupted,
    /// End of input (Ctrl+D, or the pipe closed).
    Eof,
}

/// A request to read one line.
pub struct ReadRequest {
    prompt: String,
    secret: bool,
}

/// Hides what is typed while a password is read.
struct Masking {
    on: Arc<AtomicBool>,
}

impl Helper for Masking {}
impl Completer for Masking {
    type Candidate = String;
}
impl Hinter for Masking {
    type Hint = String;
}
impl Validator for Masking {}
impl Highlighter for Masking {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.on.load(Ordering::Relaxed) {
            Cow::Owned("*".repeat(line.chars().count()))
        } else {
            Cow::Borrowed(line)
        }
    }
    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        kind != CmdKind::MoveCursor && self.on.load(Ordering::Relaxed)
    }
}

/// The line source.
pub enum Reader {
    /// A terminal with line editing: lines are read on request.
    Editor {
        /// Read requests to the editor thread.
        requests: std_mpsc::Sender<ReadRequest>,
        /// Prints above the prompt while a line is being read.
        printer: Box<dyn ExternalPrinter + Send>,
    },
    /// A terminal line editing cannot drive (`TERM=dumb`, say): lines are
    /// read on request, passwords without echo.
    Basic {
        /// Read requests to the reading thread.
        requests: std_mpsc::Sender<ReadRequest>,
    },
    /// A pipe or file: lines are read ahead continuously.
    Plain,
}

impl Reader {
    /// Starts the reader for a terminal (`terminal`) or a pipe.
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
        let (req_tx, req_rx) = std_mpsc::channel::<ReadRequest>();
        match editor() {
            Ok((editor, masking, printer)) => {
                spawn(
                    "terminal",
                    Box::new(move || read_terminal(editor, masking, req_rx, tx)),
                )?;
                Ok((
                    Reader::Editor {
                        requests: req_tx,
                        printer,
                    },
                    rx,
                ))
            }
            Err(e) => {
                tracing::info!(error = %e, "no line editing on this terminal");
                spawn("terminal", Box::new(move || read_basic(req_rx, tx)))?;
                Ok((Reader::Basic { requests: req_tx }, rx))
            }
        }
    }

    /// True when lines are read on request (a terminal), false when read
    /// ahead (a pipe).
    pub fn on_request(&self) -> bool {
        !matches!(self, Reader::Plain)
    }

    /// Asks the terminal for a line (no effect for a pipe, which reads ahead).
    pub fn request(&self, prompt: &str, secret: bool) {
        if let Reader::Editor { requests, .. } | Reader::Basic { requests } = self {
            let _ = requests.send(ReadRequest {
                prompt: prompt.to_string(),
                secret,
            });
        }
    }

    /// Prints a line: above the prompt while the editor reads, else plainly.
    pub fn print(&mut self, line: &str, reading: bool) {
        match self {
            Reader::Editor { printer, .. } if reading => {
                let _ = printer.print(format!("{line}\n"));
            }
            _ => println!("{line}"),
        }
    }
}

type Ready = (
    Editor<Masking, DefaultHistory>,
    Arc<AtomicBool>,
    Box<dyn ExternalPrinter + Send>,
);

fn editor() -> Result<Ready, String> {
    let masking = Arc::new(AtomicBool::new(false));
    let mut editor: Editor<Masking, DefaultHistory> = Editor::new().map_err(|e| e.to_string())?;
    editor.set_helper(Some(Masking {
        on: masking.clone(),
    }));
    editor.set_auto_add_history(false);
    // Masking is done by the highlighter: it must run even where colours
    // are off (NO_COLOR, a monochrome terminal), or a password would show.
    editor.set_color_mode(ColorMode::Forced);
    let printer = editor
        .create_external_printer()
        .map_err(|e| e.to_string())?;
    Ok((editor, masking, Box::new(printer)))
}

/// Reads on request without line editing; passwords are read with echo off.
fn read_basic(requests: std_mpsc::Receiver<ReadRequest>, tx: mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    while let Ok(req) = requests.recv() {
        print!("{}", req.prompt);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let item = if req.secret {
            match rpassword::read_password() {
                Ok(line) => Input::Line(line),
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
    Input::Line(line.trim_end_matches(['\n', '\r']).to_string())
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

fn read_terminal(
    mut editor: Editor<Masking, DefaultHistory>,
    masking: Arc<AtomicBool>,
    requests: std_mpsc::Receiver<ReadRequest>,
    tx: mpsc::Sender<Input>,
) {
    while let Ok(req) = requests.recv() {
        masking.store(req.secret, Ordering::Relaxed);
        let item = match editor.readline(&req.prompt) {
            Ok(line) if line.len() > MAX_LINE_BYTES => Input::TooLong(line.len()),
            Ok(line) => {
                if !req.secret && !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                Input::Line(line)
            }
            Err(rustyline::error::ReadlineError::Interrupted) => Input::Interrupted,
            Err(_) => Input::Eof,
        };
        masking.store(false, Ordering::Relaxed);
        let end = matches!(item, Input::Eof | Input::Interrupted);
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
        assert_eq!(read_bounded_line(&mut reader), Input::Line("hi".into()));
        assert_eq!(read_bounded_line(&mut reader), Input::Line(exact));
        assert_eq!(
            read_bounded_line(&mut reader),
            Input::TooLong(MAX_LINE_BYTES * 2 + 6)
        );
        assert_eq!(read_bounded_line(&mut reader), Input::Line("after".into()));
        assert_eq!(
            read_bounded_line(&mut reader),
            Input::Line("é\u{ff}tail".into())
        );
        assert_eq!(read_bounded_line(&mut reader), Input::Eof);
    }
}
