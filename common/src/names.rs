//! Name, password and message size rules, applied the same way on both sides.
//!
//! Usernames are 1 to 32 characters from `a-z`, `0-9`, `_`, `-` and `.`, and
//! start with a letter or digit. They are case-insensitive: ASCII letters are
//! folded to lower case by [`normalize_username`] before any comparison,
//! storage or lookup, everywhere.

use thiserror::Error;

/// Longest username, in characters.
pub const MAX_USERNAME_LEN: usize = 32;
/// Shortest password, in characters.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password, in bytes (a bound against long-password denial of service).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Longest chat message body, in bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 4000;

/// Why a name, password or message was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The username is empty.
    #[error("a username cannot be empty")]
    EmptyName,
    /// The username is longer than [`MAX_USERNAME_LEN`].
    #[error("a username has at most {MAX_USERNAME_LEN} characters")]
    NameTooLong,
    /// The username holds a character outside the allowed set.
    #[error("a username may only hold letters a-z, digits, '_', '-' and '.', and must start with a letter or digit")]
    NameCharacters,
    /// The password is shorter than [`MIN_PASSWORD_LEN`].
    #[error("a password has at least {MIN_PASSWORD_LEN} characters")]
    PasswordTooShort,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("a password has at most {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    /// The message is empty.
    #[error("a message cannot be empty")]
    EmptyMessage,
    /// The message is longer than [`MAX_MESSAGE_BYTES`].
    #[error("a message has at most {MAX_MESSAGE_BYTES} bytes (this one has {0})")]
    MessageTooLong(usize),
}

/// Checks a username and returns its normalised (lower-case) form.
pub fn normalize_username(name: &str) -> Result<String, RuleError> {
    if name.is_empty() {
        return Err(RuleError::EmptyName);
    }
    if name.chars().count() > MAX_USERNAME_LEN {
        return Err(RuleError::NameTooLong);
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !name.chars().all(ok_char) {
        return Err(RuleError::NameCharacters);
    }
    Ok(name.to_ascii_lowercase())
}

/// True when `name` is a username exactly as the rules write it (valid and
/// already lower case): what a name from the network must be before it is
/// shown, compared or used in a path.
pub fn is_normal_username(name: &str) -> bool {
    normalize_username(name).is_ok_and(|n| n == name)
}

/// Checks a password against the length rules (no composition rules).
pub fn check_password(password: &str) -> Result<(), RuleError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(RuleError::PasswordTooLong);
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(RuleError::PasswordTooShort);
    }
    Ok(())
}

/// Checks a chat message body.
pub fn check_message(body: &str) -> Result<(), RuleError> {
    if body.is_empty() {
        return Err(RuleError::EmptyMessage);
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(RuleError::MessageTooLong(body.len()));
    }
    Ok(())
}

/// Makes received text safe to print: control characters (including escape
/// sequences' ESC) become visible `\u{..}` escapes.
pub fn sanitize_for_display(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_folded() {
        assert_eq!(normalize_username("Alice").as_deref(), Ok("alice"));
        assert_eq!(normalize_username("b.o-b_9").as_deref(), Ok("b.o-b_9"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(normalize_username(""), Err(RuleError::EmptyName));
        assert_eq!(
            normalize_username(&"a".repeat(33)),
            Err(RuleError::NameTooLong)
        );
        assert!(normalize_username(&"a".repeat(32)).is_ok());
        for bad in [
            "al ice",
            "al\u{1b}[31mice",
            "-bob",
            ".x",
            "ålice",
            "bob\n",
            "a/b",
            "é",
        ] {
            assert_eq!(
                normalize_username(bad),
                Err(RuleError::NameCharacters),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn password_bounds() {
        assert_eq!(check_password("short"), Err(RuleError::PasswordTooShort));
        assert!(check_password("eight ch").is_ok());
        assert_eq!(
            check_password(&"x".repeat(257)),
            Err(RuleError::PasswordTooLong)
        );
        assert!(check_password(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn message_bounds() {
        assert_eq!(check_message(""), Err(RuleError::EmptyMessage));
        assert!(check_message(&"x".repeat(MAX_MESSAGE_BYTES)).is_ok());
        assert_eq!(
            check_message(&"x".repeat(MAX_MESSAGE_BYTES + 1)),
            Err(RuleError::MessageTooLong(MAX_MESSAGE_BYTES + 1))
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let shown = sanitize_for_display("hi \u{1b}[2J\u{7}there\r\n");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.starts_with("hi \\u{1b}[2J"));
        assert_eq!(sanitize_for_display("plain ünïcode ✓"), "plain ünïcode ✓");
    }
}
