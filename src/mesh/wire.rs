//! Framing of the mesh protocols: one length-prefixed protobuf message
//! (varint length, then the bytes) per frame, with a size limit checked
//! before anything is allocated. The only place that encodes or decodes
//! mesh wire messages; the rest of the mesh speaks domain types.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message;

/// Largest control request (a join, an announcement with the member list,
/// a batch of record ids).
pub const MAX_CTL_REQUEST: usize = 256 << 10;
/// Largest control response (a trie node with up to a thousand records).
pub const MAX_CTL_RESPONSE: usize = 8 << 20;
/// Largest stream request or stream head.
pub const MAX_STREAM_HEAD: usize = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("message of {len} bytes is over the {limit}-byte limit")]
    TooBig { len: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("the peer closed the stream before sending a message")]
    Closed,
    #[error("the peer sent no complete message in time")]
    Timeout,
}

/// Bytes a message of `len` bytes takes as a frame (length prefix included).
pub fn framed_len(len: usize) -> usize {
    prost::length_delimiter_len(len) + len
}

/// Read one frame and decode it as `M`, refusing frames over `limit` bytes.
pub async fn read<M, R>(r: &mut R, limit: usize) -> Result<M, WireError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    // A length is a varint of at most 10 bytes; collect it, let prost decode.
    let mut len_buf = Vec::with_capacity(10);
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b).await? == 0 {
            return Err(if len_buf.is_empty() {
                WireError::Closed
            } else {
                WireError::Malformed("stream ended inside a length prefix".into())
            });
        }
        len_buf.push(b[0]);
        if b[0] & 0x80 == 0 {
            break;
        }
        if len_buf.len() == 10 {
            return Err(WireError::Malformed("length prefix too long".into()));
        }
    }
    let len = prost::decode_length_delimiter(len_buf.as_slice())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if len > limit {
        return Err(WireError::TooBig { len, limit });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Malformed(format!("stream ended inside a {len}-byte message"))
        } else {
            WireError::Io(e)
        }
    })?;
    M::decode(buf.as_slice()).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Encode `msg` as one frame and write it (flushed).
pub async fn write<M, W>(w: &mut W, msg: &M, limit: usize) -> Result<(), WireError>
where
    M: Message,
    W: AsyncWrite + Unpin,
{
    let len = msg.encoded_len();
    if len > limit {
        return Err(WireError::TooBig { len, limit });
    }
    w.write_all(&msg.encode_length_delimited_to_vec()).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn round_trip_and_limits() {
        let msg = proto::StreamOpen {
            track: vec![7; 32],
            kbps: 96,
            start_ms: 1500,
            offset: 10,
            ..Default::default()
        };
        let mut buf = Vec::new();
        run(write(&mut buf, &msg, MAX_STREAM_HEAD)).unwrap();
        let back: proto::StreamOpen = run(read(&mut buf.as_slice(), MAX_STREAM_HEAD)).unwrap();
        assert_eq!(back, msg);
        // Over the reader's limit: refused from the prefix alone.
        let err = run(read::<proto::StreamOpen, _>(&mut buf.as_slice(), 8)).unwrap_err();
        assert!(matches!(err, WireError::TooBig { .. }), "{err}");
    }

    #[test]
    fn malformed_frames_are_errors() {
        // A prefix claiming 4 GiB: refused without allocating it.
        let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let e = run(read::<proto::StreamOpen, _>(
            &mut &huge[..],
            MAX_CTL_RESPONSE,
        ))
        .unwrap_err();
        assert!(matches!(e, WireError::TooBig { .. }), "{e}");
        // Truncated body.
        let e = run(read::<proto::StreamOpen, _>(&mut &[5u8, 1, 2][..], 100)).unwrap_err();
        assert!(matches!(e, WireError::Malformed(_)), "{e}");
        // Garbage body (a field with wire type 7 does not exist).
        let e = run(read::<proto::StreamOpen, _>(
            &mut &[2u8, 0x0f, 0x01][..],
            100,
        ))
        .unwrap_err();
        assert!(matches!(e, WireError::Malformed(_)), "{e}");
        // Empty stream.
        let e = run(read::<proto::StreamOpen, _>(&mut &[][..], 100)).unwrap_err();
        assert!(matches!(e, WireError::Closed), "{e}");
        // Endless length prefix.
        let e = run(read::<proto::StreamOpen, _>(&mut &[0x80u8; 12][..], 100)).unwrap_err();
        assert!(matches!(e, WireError::Malformed(_)), "{e}");
    }
}
