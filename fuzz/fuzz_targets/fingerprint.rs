//! `Fingerprint` parsing (the form in `known_coordinators` and in logs) and
//! its wire form.
#![no_main]

use common::tls::Fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(fp) = text.parse::<Fingerprint>() {
            // Display gives the canonical form, which parses back to it.
            let shown = fp.to_string();
            assert!(shown.starts_with("sha256:") && shown.len() == 7 + 64);
            assert_eq!(shown.parse::<Fingerprint>().ok(), Some(fp));
        }
    }
    p2pchat_fuzz::check_decoder::<Fingerprint>(data);
});
