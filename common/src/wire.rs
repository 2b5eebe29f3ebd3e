//! The one module that knows byte layouts.
//!
//! A frame is a `u32` big-endian length followed by that many bytes of one
//! postcard-encoded message. The length is checked against [`MAX_FRAME_LEN`]
//! before anything is allocated. The codec (postcard) is used only here, so
//! that it stays replaceable.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body accepted or sent, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
const LEN_BYTES: usize = 4;

/// What went wrong reading or writing a frame.
#[derive(Debug, Error)]
pub enum WireError {
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced a body over the cap.
    #[error("frame of {len} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// The body is not a valid message of the expected type.
    #[error("frame does not decode")]
    Decode {
        /// When the body looks like a hello, the version it states: lets the
        /// receiver answer a version mismatch instead of a decode error.
        hello_version: Option<u32>,
    },
    /// The message could not be encoded (it should never happen for our types).
    #[error("message does not encode: {0}")]
    Encode(String),
}

/// Encodes `msg` as a whole frame: length prefix and body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; LEN_BYTES];
    out = postcard::to_extend(msg, out).map_err(|e| WireError::Encode(e.to_string()))?;
    let body_len = out.len() - LEN_BYTES;
    if body_len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge { len: body_len });
    }
    out[..LEN_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one message body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(|_| WireError::Decode {
        hello_version: peek_hello_version(body),
    })
}

/// Decodes the first frame in `buf`, sans I/O. `Ok(None)` means more bytes
/// are needed; `Ok(Some((msg, used)))` gives the message and the bytes used.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, WireError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let end = LEN_BYTES + len;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((decode(&buf[LEN_BYTES..end])?, end)))
}

/// The body length announced by the prefix in `buf`, once four bytes are there.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..LEN_BYTES) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; LEN_BYTES];
    len_bytes.copy_from_slice(prefix);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge { len });
    }
    Ok(Some(len))
}

/// Reads the version from a body that starts like a hello (variant 0, then a
/// `u32` version), whatever follows. `None` when it does not.
pub fn peek_hello_version(body: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    enum HelloPrefix {
        Hello(u32),
    }
    match postcard::take_from_bytes::<HelloPrefix>(body) {
        Ok((HelloPrefix::Hello(v), _)) => Some(v),
        Err(_) => None,
    }
}

/// Reads one frame. `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<T, R>(reader: &mut R) -> Result<Option<T>, WireError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LEN_BYTES];
    let mut got = 0;
    while got < LEN_BYTES {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::Truncated)
            };
        }
        got += n;
    }
    let Some(len) = frame_len(&prefix)? else {
        return Err(WireError::Truncated);
    };
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Truncated
        } else {
            WireError::Io(e)
        }
    })?;
    decode(&body).map(Some)
}

/// Writes one frame.
pub async fn write_frame<T, W>(writer: &mut W, msg: &T) -> Result<(), WireError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let frame = encode(msg)?;
    writer.write_all(&frame).await?;
    Ok(())
}

/// Reads frames from `reader` and hands each one to `tx`, wrapped by
/// `wrap`, then the end (`Ok(None)`) or the error, and stops; it also stops
/// when the receiver is gone. Run as a task beside a `select!` loop, it keeps
/// partial reads out of the loop (reading a frame is not cancel-safe).
pub async fn forward_frames<T, R, M, F>(mut reader: R, tx: tokio::sync::mpsc::Sender<M>, wrap: F)
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
    F: Fn(Result<Option<T>, WireError>) -> M,
{
    loop {
        let frame = read_frame::<T, _>(&mut reader).await;
        let last = !matches!(frame, Ok(Some(_)));
        if tx.send(wrap(frame)).await.is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PeerMsg, RequestKind, SessionRequest, PROTOCOL_VERSION};

    fn hello() -> SessionRequest {
        SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs: vec!["127.0.0.1:5000".parse().unwrap()],
        }
    }

    #[test]
    fn round_trip() {
        let frame = encode(&hello()).unwrap();
        let (back, used) = decode_frame::<SessionRequest>(&frame).unwrap().unwrap();
        assert_eq!(back, hello());
        assert_eq!(used, frame.len());
    }

    #[test]
    fn truncated_input_asks_for_more() {
        let frame = encode(&hello()).unwrap();
        for cut in 0..frame.len() {
            assert!(decode_frame::<SessionRequest>(&frame[..cut])
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn over_cap_is_refused_from_the_prefix_alone() {
        let prefix = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_frame::<SessionRequest>(&prefix),
            Err(WireError::TooLarge { len }) if len == MAX_FRAME_LEN + 1
        ));
        let huge = PeerMsg::Refused {
            reason: "x".repeat(MAX_FRAME_LEN),
        };
        assert!(matches!(encode(&huge), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn garbage_does_not_decode() {
        let mut frame = 3u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_frame::<SessionRequest>(&frame),
            Err(WireError::Decode {
                hello_version: None
            })
        ));
    }

    #[test]
    fn a_future_hello_still_shows_its_version() {
        #[derive(serde::Serialize)]
        enum FutureRequest {
            Hello {
                version: u32,
                extra: String,
                more: [u8; 3],
            },
        }
        let frame = encode(&FutureRequest::Hello {
            version: 7,
            extra: "new field".into(),
            more: [1, 2, 3],
        })
        .unwrap();
        match decode_frame::<SessionRequest>(&frame) {
            Err(WireError::Decode { hello_version }) => assert_eq!(hello_version, Some(7)),
            other => panic!("unexpected {other:?}"),
        }
        // A hello of the peer protocol is read the same way.
        let peer_hello = encode(&PeerMsg::Hello {
            version: 9,
            from: "a".into(),
            kind: RequestKind::Chat,
        })
        .unwrap();
        assert_eq!(peek_hello_version(&peer_hello[4..]), Some(9));
    }

    #[tokio::test]
    async fn stream_read_and_write() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &hello()).await.unwrap();
        write_frame(&mut a, &SessionRequest::ListOnline)
            .await
            .unwrap();
        drop(a);
        assert_eq!(
            read_frame::<SessionRequest, _>(&mut b).await.unwrap(),
            Some(hello())
        );
        assert_eq!(
            read_frame::<SessionRequest, _>(&mut b).await.unwrap(),
            Some(SessionRequest::ListOnline)
        );
        assert_eq!(read_frame::<SessionRequest, _>(&mut b).await.unwrap(), None);
    }

    #[tokio::test]
    async fn stream_cut_inside_a_frame_is_truncated() {
        let frame = encode(&hello()).unwrap();
        let mut reader: &[u8] = &frame[..frame.len() - 1];
        assert!(matches!(
            read_frame::<SessionRequest, _>(&mut reader).await,
            Err(WireError::Truncated)
        ));
        let mut reader: &[u8] = &frame[..2];
        assert!(matches!(
            read_frame::<SessionRequest, _>(&mut reader).await,
            Err(WireError::Truncated)
        ));
    }

    #[tokio::test]
    async fn stream_over_cap_reads_no_body() {
        let mut data = (u32::MAX).to_be_bytes().to_vec();
        data.extend_from_slice(b"tiny");
        let mut reader: &[u8] = &data;
        assert!(matches!(
            read_frame::<SessionRequest, _>(&mut reader).await,
            Err(WireError::TooLarge { .. })
        ));
    }
}
