//! Shared checks of the fuzz targets: what every decoder of `common` must
//! hold for any input, beyond "does not panic".

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use common::wire::{self, WireError, MAX_FRAME_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `data` as one message body of `T`, as the frame body and through
/// the sans-I/O frame decoder and the async reader, and checks that:
/// - a decoded message encodes and decodes back to itself (no value that
///   decodes but cannot be sent back, no lossy decode);
/// - a body that does not decode reports the same hello version as
///   `peek_hello_version`;
/// - the sans-I/O decoder and `read_frame` agree on every frame of a stream.
pub fn check_decoder<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    match wire::decode::<T>(data) {
        Ok(msg) => round_trip(&msg),
        Err(WireError::Decode { hello_version }) => {
            assert_eq!(hello_version, wire::peek_hello_version(data));
        }
        Err(other) => panic!("decode gave a non-decode error: {other:?}"),
    }
    check_stream::<T>(data);
}

/// A decoded message re-encodes to a frame that decodes to the same message.
pub fn round_trip<T>(msg: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = match wire::encode(msg) {
        Ok(frame) => frame,
        // A message decoded from at most MAX_FRAME_LEN bytes may still encode
        // larger (varints); that is refused, never sent.
        Err(WireError::TooLarge { .. }) => return,
        Err(e) => panic!("a decoded message does not encode: {e:?}"),
    };
    let (again, used) = wire::decode_frame::<T>(&frame)
        .expect("an encoded frame decodes")
        .expect("an encoded frame is complete");
    assert_eq!(used, frame.len());
    assert_eq!(&again, msg);
}

/// Treats `data` as a byte stream of frames: `decode_frame` and `read_frame`
/// must see the same messages and fail at the same frame.
pub fn check_stream<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut sans_io = Vec::new();
    let mut rest = data;
    let sans_io_end = loop {
        match wire::decode_frame::<T>(rest) {
            Ok(Some((msg, used))) => {
                assert!(used >= 4 && used <= rest.len() && used - 4 <= MAX_FRAME_LEN);
                sans_io.push(msg);
                rest = &rest[used..];
            }
            Ok(None) => break if rest.is_empty() { "end" } else { "truncated" },
            Err(WireError::TooLarge { len }) => {
                assert!(len > MAX_FRAME_LEN);
                break "too large";
            }
            Err(WireError::Decode { .. }) => break "decode",
            Err(e) => panic!("decode_frame: unexpected error {e:?}"),
        }
    };

    let mut reader = data;
    let mut read = Vec::new();
    let read_end = loop {
        match block_on(wire::read_frame::<T, _>(&mut reader)) {
            Ok(Some(msg)) => read.push(msg),
            Ok(None) => break "end",
            Err(WireError::Truncated) => break "truncated",
            Err(WireError::TooLarge { .. }) => break "too large",
            Err(WireError::Decode { .. }) => break "decode",
            Err(e) => panic!("read_frame: unexpected error {e:?}"),
        }
    };
    assert_eq!(sans_io, read);
    assert_eq!(sans_io_end, read_end);
}

/// Runs a future that never waits (reading from a byte slice is always
/// ready) to completion without a runtime.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from a slice waited"),
    }
}
