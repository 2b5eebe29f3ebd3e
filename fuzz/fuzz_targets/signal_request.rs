//! `common::protocol::SignalRequest` through every decoder of `common::wire`.
#![no_main]

use common::protocol::SignalRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2pchat_fuzz::check_decoder::<SignalRequest>(data);
});
