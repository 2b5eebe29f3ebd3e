//! `peek_hello_version`: never panics, and agrees with the full decoders on
//! every body that is a current hello (coordinator and peer streams).
#![no_main]

use common::protocol::{PeerMsg, SessionRequest};
use common::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peeked = wire::peek_hello_version(data);
    if let Ok(SessionRequest::Hello { version, .. }) = wire::decode::<SessionRequest>(data) {
        assert_eq!(peeked, Some(version));
    }
    if let Ok(PeerMsg::Hello { version, .. }) = wire::decode::<PeerMsg>(data) {
        assert_eq!(peeked, Some(version));
    }
    // (Whether a body peeks as a hello is not decided by its first byte:
    // postcard accepts overlong varints, so [0x80, 0x00] is variant 0 too.
    // The full decoders read them the same way, which is what matters.)
});
