//! Saving and restoring the terminal's settings, so that leaving while a line
//! is being read (raw mode) never leaves the user's shell without echo.

use nix::sys::termios::{tcgetattr, tcsetattr, SetArg, Termios};

/// The terminal settings at start, if stdin is a terminal.
pub struct Saved(Option<Termios>);

/// Saves stdin's terminal settings.
pub fn save() -> Saved {
    Saved(tcgetattr(std::io::stdin()).ok())
}

/// Puts the saved settings back.
pub fn restore(saved: Saved) {
    if let Some(t) = saved.0 {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
    }
}
