//! Originals are checked as they arrive: the bytes must be the track.

use crate::model::TrackId;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// Passes an original file through while hashing it; at the end, fails
/// unless the bytes are exactly the track (blake3 = id, same length).
pub struct Verify<R> {
    inner: R,
    hasher: blake3::Hasher,
    id: TrackId,
    len: u64,
    seen: u64,
}

impl<R> Verify<R> {
    /// Pass `inner` through, expecting `len` bytes hashing to `id`.
    pub fn new(inner: R, id: TrackId, len: u64) -> Verify<R> {
        Verify {
            inner,
            hasher: blake3::Hasher::new(),
            id,
            len,
            seen: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Verify<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if got.is_empty() {
                    let h: TrackId = this.hasher.finalize().into();
                    if h != this.id || this.seen != this.len {
                        return std::task::Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the file received ({} bytes, blake3 {h}) is not track {}",
                                this.seen, this.id
                            ),
                        )));
                    }
                } else {
                    this.seen += got.len() as u64;
                    this.hasher.update(got);
                }
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(data: &'static [u8], id: TrackId, len: u64) -> std::io::Result<Vec<u8>> {
        let mut out = vec![];
        Verify::new(data, id, len).read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn the_right_bytes_pass_and_others_fail_at_the_end() {
        let id = TrackId::of(b"track bytes");
        assert_eq!(
            read_all(b"track bytes", id, 11).await.unwrap(),
            b"track bytes"
        );
        let e = read_all(b"track byteZ", id, 11).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            read_all(b"track", id, 11).await.is_err(),
            "a short file is not the track"
        );
    }
}
