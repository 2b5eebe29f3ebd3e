//! `common::protocol::SignalEvent` through every decoder of `common::wire`.
#![no_main]

use common::protocol::SignalEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2pchat_fuzz::check_decoder::<SignalEvent>(data);
});
