//! Byte streams of frames, read as every message type: the length prefix
//! and its cap, truncation, and bodies of any type in any stream.
#![no_main]

use common::protocol::{PeerMsg, SessionRequest, SessionResponse, SignalEvent, SignalRequest};
use libfuzzer_sys::fuzz_target;
use p2pchat_fuzz::check_stream;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the type, so one corpus covers every stream.
    let Some((which, stream)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => check_stream::<SessionRequest>(stream),
        1 => check_stream::<SessionResponse>(stream),
        2 => check_stream::<SignalRequest>(stream),
        3 => check_stream::<SignalEvent>(stream),
        _ => check_stream::<PeerMsg>(stream),
    }
});
