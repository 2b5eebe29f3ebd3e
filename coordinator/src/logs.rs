//! Log lines that stay few when events come in floods.
//!
//! A line that can repeat once per user or per connection (came online,
//! went offline, a wrong password, a slow client closed) goes through a
//! [`Repeats`]: the first few in each [`WINDOW`] are written, the rest are
//! counted, and one summary line says how many were left out
//! ("… and 4812 more \"offline\" in the last 10 s", with the count also in
//! the `suppressed` field for log shippers). A mass departure of thousands
//! of sessions thus writes a handful of lines, not thousands.
//!
//! The counters are per process (statics), like the log they protect. The
//! server's sweep calls [`flush`] so that the summary of a burst that has
//! stopped is written without waiting for the next occurrence.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a window of repeats lasts.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The level of a repeated line (and of its summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `info`.
    Info,
    /// `warn`.
    Warn,
}

/// One kind of repeated line and its counts.
#[derive(Debug)]
pub struct Repeats {
    what: &'static str,
    level: Level,
    per_window: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    shown: u32,
    suppressed: u64,
}

impl Repeats {
    /// Lines that read `what`, at `level`, at most `per_window` per window.
    pub const fn new(what: &'static str, level: Level, per_window: u32) -> Repeats {
        Repeats {
            what,
            level,
            per_window,
            window: Mutex::new(Window {
                start: None,
                shown: 0,
                suppressed: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Should this occurrence be written? Counts it either way, and writes
    /// the previous window's summary first if that window has ended.
    pub fn admit(&self) -> bool {
        self.admit_at(Instant::now())
    }

    /// [`Repeats::admit`] at `now`.
    pub fn admit_at(&self, now: Instant) -> bool {
        let mut w = self.lock();
        let summary = w.end_if_over(now);
        w.start.get_or_insert(now);
        let show = w.shown < self.per_window;
        if show {
            w.shown += 1;
        } else {
            w.suppressed += 1;
        }
        drop(w);
        if let Some(n) = summary {
            self.summarise(n);
        }
        show
    }

    /// Writes the summary of a window that has ended.
    pub fn flush_at(&self, now: Instant) {
        let summary = self.lock().end_if_over(now);
        if let Some(n) = summary {
            self.summarise(n);
        }
    }

    fn summarise(&self, n: u64) {
        let what = self.what;
        let secs = WINDOW.as_secs();
        match self.level {
            Level::Info => tracing::info!(
                repeated = what,
                suppressed = n,
                "… and {n} more \"{what}\" in the last {secs} s"
            ),
            Level::Warn => tracing::warn!(
                repeated = what,
                suppressed = n,
                "… and {n} more \"{what}\" in the last {secs} s"
            ),
        }
    }
}

impl Window {
    /// Ends the window if it is over: how many it left out, if any.
    fn end_if_over(&mut self, now: Instant) -> Option<u64> {
        let start = self.start?;
        if now.saturating_duration_since(start) < WINDOW {
            return None;
        }
        let n = std::mem::take(&mut self.suppressed);
        self.start = None;
        self.shown = 0;
        (n > 0).then_some(n)
    }
}

/// A user came online.
pub static ONLINE: Repeats = Repeats::new("online", Level::Info, 5);
/// A user went offline.
pub static OFFLINE: Repeats = Repeats::new("offline", Level::Info, 5);
/// A second login replaced a session.
pub static REPLACED: Repeats =
    Repeats::new("second login replaces the first session", Level::Info, 5);
/// An account was created.
pub static CREATED: Repeats = Repeats::new("account created", Level::Info, 5);
/// A wrong password.
pub static WRONG_PASSWORD: Repeats = Repeats::new("wrong password", Level::Info, 5);
/// A session's outbound queue was full.
pub static QUEUE_FULL: Repeats =
    Repeats::new("outbound queue full; closing slow client", Level::Warn, 3);
/// The coordinator closed a connection (a protocol error, a limit, …).
pub static CLOSING: Repeats = Repeats::new("closing connection", Level::Info, 5);
/// A handshake failed or timed out.
pub static HANDSHAKE: Repeats = Repeats::new("handshake failed", Level::Info, 5);
/// The accounts database could not be reached (PostgreSQL down).
pub static DATABASE: Repeats = Repeats::new("accounts database unreachable", Level::Warn, 3);

/// Something about the cluster (NATS, other nodes).
pub static CLUSTER: Repeats = Repeats::new("cluster", Level::Warn, 5);

static ALL: [&Repeats; 10] = [
    &ONLINE,
    &OFFLINE,
    &REPLACED,
    &CREATED,
    &WRONG_PASSWORD,
    &QUEUE_FULL,
    &CLOSING,
    &HANDSHAKE,
    &CLUSTER,
    &DATABASE,
];

/// Writes the summaries of every window that has ended.
pub fn flush(now: Instant) {
    for r in ALL {
        r.flush_at(now);
    }
}

/// Writes a `tracing` event at `info` or `warn` if `repeats` admits it.
///
/// ```text
/// limited!(logs::OFFLINE, info, user = name, "offline");
/// ```
macro_rules! limited {
    ($repeats:expr, $level:ident, $($arg:tt)+) => {
        if $repeats.admit() {
            tracing::$level!($($arg)+);
        }
    };
}
pub(crate) use limited;

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(r: &Repeats) -> (u32, u64) {
        let w = r.lock();
        (w.shown, w.suppressed)
    }

    #[test]
    fn a_burst_shows_a_few_and_counts_the_rest_until_the_window_ends() {
        let r = Repeats::new("test", Level::Info, 3);
        let t0 = Instant::now();
        let shown = (0..1000).filter(|_| r.admit_at(t0)).count();
        assert_eq!(shown, 3);
        assert_eq!(counts(&r), (3, 997));
        r.flush_at(t0 + WINDOW / 2);
        assert_eq!(counts(&r), (3, 997), "the window is not over yet");
        r.flush_at(t0 + WINDOW);
        assert_eq!(counts(&r), (0, 0), "the summary took the count");
        assert!(r.admit_at(t0 + WINDOW * 3), "a new window shows again");
    }
}
