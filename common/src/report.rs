//! How an error and its causes read as one sentence, for the binaries'
//! last words (`main` turns an error into this sentence and an exit code).
//!
//! Many errors print their cause in their own message *and* return it as
//! their `source()` (thiserror's `{source}` with a field of that name, or
//! `#[error("...: {0}")]` with `#[from]`), so printing the chain naively
//! says the cause twice: "cannot listen on X: Address already in use (os
//! error 98): Address already in use (os error 98)". [`sentence`] leaves
//! out a cause whose text the message before it already holds, starts with
//! a capital letter and ends with a full stop.

use std::error::Error;

/// The error and each cause not already stated, joined by ": ", as a
/// sentence.
pub fn sentence(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    let text = text.trim_end();
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return "Unknown error.".to_string(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:7070: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting the server")]
    struct Outer(#[source] Bind);

    #[test]
    fn a_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(98);
        let io_text = io.to_string();
        let err = Outer(Bind { source: io });
        let text = sentence(&err);
        assert_eq!(text.matches(&io_text).count(), 1, "{text}");
        assert!(
            text.starts_with("Starting the server: cannot listen on 127.0.0.1:7070: "),
            "{text}"
        );
        assert!(text.ends_with('.'), "{text}");
    }

    #[test]
    fn a_finished_sentence_is_left_alone() {
        let err = std::io::Error::other("Done.");
        assert_eq!(sentence(&err), "Done.");
    }
}
