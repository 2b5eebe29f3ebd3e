//! The name and size rules of `common::names` on any text.
#![no_main]

use common::names::{
    check_message, check_password, normalize_username, sanitize_for_display, MAX_MESSAGE_BYTES,
    MAX_PASSWORD_BYTES, MAX_USERNAME_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(name) = normalize_username(&text) {
        // A valid name is short, plain ASCII, lower case, path-safe and
        // stable under normalisation.
        assert!(!name.is_empty() && name.len() <= MAX_USERNAME_LEN);
        assert!(name.bytes().all(|b| b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'-' | b'.')));
        assert!(name.as_bytes()[0].is_ascii_alphanumeric());
        assert!(!name.contains('/') && name != "." && name != "..");
        assert_eq!(normalize_username(&name).as_deref(), Ok(name.as_str()));
        assert_eq!(sanitize_for_display(&name), name);
    }

    if check_password(&text).is_ok() {
        assert!(text.len() <= MAX_PASSWORD_BYTES);
    }
    if check_message(&text).is_ok() {
        assert!(!text.is_empty() && text.len() <= MAX_MESSAGE_BYTES);
    }

    // Sanitised text holds no control character (no ESC, no CR, no BEL) and
    // none of the bidirectional overrides; text without them is unchanged.
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let shown = sanitize_for_display(&text);
    assert!(!shown.chars().any(unsafe_char));
    if !text.chars().any(unsafe_char) {
        assert_eq!(shown, text);
    }
});
