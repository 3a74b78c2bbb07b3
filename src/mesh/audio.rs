//! The audio protocol, `/tunemesh/stream/1`, whole: one stream per
//! substream. The asker sends a [`StreamOpen`]; the server answers a
//! [`StreamHead`] (both length-prefixed protobuf frames, `wire.rs`), then
//! the bytes as chunks, each a 4-byte big-endian length and that many bytes
//! (at most [`MAX_CHUNK`]), then an empty chunk: the end marker. A stream
//! that ends without it was cut; one that sends nothing for [`STALL`] has
//! failed.
//!
//! Must never: hand a reader the end of a stream that lacked its end
//! marker, or wait on a silent server longer than [`STALL`].

use super::types::{BlobWant, StreamHead, StreamOpen};
use super::wire;
use super::MeshError;
use crate::model::{Hash32, TrackId};
use crate::proto;
use bytes::Bytes;
use futures::{AsyncWriteExt, SinkExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};

/// The protocol name.
pub(super) const AUDIO: StreamProtocol = StreamProtocol::new("/tunemesh/stream/1");
/// The largest chunk either side accepts.
pub const MAX_CHUNK: usize = 128 << 10;
/// A stream that sends nothing for this long has failed.
pub const STALL: Duration = Duration::from_secs(30);
/// Most group ranges one blob request may name (the request frame is
/// 4 KiB: 16 bytes a range at most).
pub const MAX_GROUP_RANGES: usize = 200;
/// Most groups a blob request may have in flight beyond the last one
/// acknowledged.
pub const MAX_WINDOW: u32 = 64;
/// Longest wait for the head after asking.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a peer may take to send its request on a new substream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_CHUNK)
        .new_codec()
}

/// The serving side of one audio substream: write the head, then the
/// chunks through [`MeshStream::into_writer`].
pub struct MeshStream(Compat<libp2p::Stream>);

impl MeshStream {
    /// Send the head of a stream (before the chunks; alone when it carries
    /// an error).
    pub async fn write_head(&mut self, head: &StreamHead) -> Result<(), MeshError> {
        let msg = proto::StreamHead {
            error: head.error.clone().unwrap_or_default(),
            mime: head.mime.clone(),
            total_len: head.total_len.unwrap_or(0),
            complete: head.complete,
            via: head.via.clone(),
        };
        wire::write(self.0.get_mut(), &msg, wire::MAX_STREAM_HEAD)
            .await
            .map_err(|e| MeshError::Refused(e.to_string()))
    }

    /// The chunk writer, once the head is sent.
    pub fn into_writer(self) -> ChunkWriter {
        ChunkWriter(FramedWrite::new(Box::new(self.0), codec()))
    }

    /// For a blob: the chunk writer and the reader of the asker's
    /// acknowledgements (see [`Acks`]).
    pub fn into_blob_writer(self) -> (ChunkWriter, Acks) {
        let (r, w) = futures::AsyncReadExt::split(self.0.into_inner());
        let w = FramedWrite::new(Box::new(w.compat_write()) as Box<Writer>, codec());
        (ChunkWriter(w), Acks(r))
    }
}

type Writer = dyn tokio::io::AsyncWrite + Send + Unpin;

/// Writes a stream's chunks; [`ChunkWriter::finish`] sends the end marker.
/// Dropped without it, the reader sees a cut stream.
pub struct ChunkWriter(FramedWrite<Box<Writer>, LengthDelimitedCodec>);

/// The serving side of a blob's flow control: how many groups the asker
/// has stored (a u64, big-endian, sent after each write). The server sends
/// a group only while fewer than the window are unacknowledged, so a cut
/// asker loses at most the window.
pub struct Acks(futures::io::ReadHalf<libp2p::Stream>);

impl Acks {
    /// The next acknowledgement: groups stored so far in this stream. An
    /// asker silent for [`STALL`] has failed.
    pub async fn next(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        match tokio::time::timeout(
            STALL,
            futures::AsyncReadExt::read_exact(&mut self.0, &mut b),
        )
        .await
        {
            Ok(r) => r.map(|()| u64::from_be_bytes(b)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the asker stopped acknowledging",
            )),
        }
    }
}

/// The asking side of a blob's flow control: [`Acker::ack`] after each
/// write says how many groups of this stream are stored.
pub struct Acker(futures::io::WriteHalf<libp2p::Stream>);

impl Acker {
    /// Say that `groups` groups of this stream are stored.
    pub async fn ack(&mut self, groups: u64) -> std::io::Result<()> {
        futures::AsyncWriteExt::write_all(&mut self.0, &groups.to_be_bytes()).await?;
        futures::AsyncWriteExt::flush(&mut self.0).await
    }
}

impl ChunkWriter {
    /// Send one chunk (at most [`MAX_CHUNK`] bytes; an empty one is
    /// skipped, as it would read as the end).
    pub async fn send(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.0.send(chunk).await
    }

    /// Send the end marker and close the substream.
    pub async fn finish(mut self) -> std::io::Result<()> {
        self.0.send(Bytes::new()).await?;
        SinkExt::<Bytes>::close(&mut self.0).await
    }
}

type Body = Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The receiving side: the chunks of a stream until its end marker. A
/// stream that ends without it, or stalls for [`STALL`], yields an error
/// (and nothing after it).
pub struct ChunkReader(Body);

impl ChunkReader {
    fn new(stream: libp2p::Stream) -> ChunkReader {
        ChunkReader::from_io(stream.compat())
    }

    fn from_io<R: tokio::io::AsyncRead + Send + Unpin + 'static>(io: R) -> ChunkReader {
        let frames = FramedRead::new(io, codec());
        let body = futures::stream::unfold((frames, false), |(mut f, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(STALL, f.next()).await {
                Ok(Some(Ok(b))) if b.is_empty() => None,
                Ok(Some(Ok(b))) => Some((Ok(b.freeze()), (f, false))),
                Ok(Some(Err(e))) => Some((Err(e), (f, true))),
                Ok(None) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the serving device stopped before the end of the stream",
                    )),
                    (f, true),
                )),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the serving device stopped sending",
                    )),
                    (f, true),
                )),
            }
        });
        ChunkReader(Box::pin(body))
    }
}

impl futures::Stream for ChunkReader {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// Ask `peer` for a stream: the head, then its chunks. The substream is
/// opened again (three tries) when the remote drops it unaccepted.
pub(super) async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    open: &StreamOpen,
) -> Result<(StreamHead, ChunkReader), MeshError> {
    let (head, s) = open_raw(control, peer, open).await?;
    Ok((head, ChunkReader::new(s)))
}

/// Ask `peer` for a blob's groups: the head, the chunks (one group each),
/// and the writer of acknowledgements, which the server waits for: it
/// sends at most `open.blob.window` groups beyond the last acknowledged.
pub(super) async fn open_blob(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    open: &StreamOpen,
) -> Result<(StreamHead, ChunkReader, Acker), MeshError> {
    let (head, s) = open_raw(control, peer, open).await?;
    let (r, w) = futures::AsyncReadExt::split(s);
    Ok((head, ChunkReader::from_io(r.compat()), Acker(w)))
}

async fn open_raw(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    open: &StreamOpen,
) -> Result<(StreamHead, libp2p::Stream), MeshError> {
    let device = super::DeviceId(peer);
    let msg = proto::StreamOpen {
        track: open.track.as_bytes().to_vec(),
        kbps: open.kbps,
        start_ms: open.start_ms,
        offset: open.offset,
        blob: open
            .blob
            .as_ref()
            .map(|b| b.hash.0.to_vec())
            .unwrap_or_default(),
        groups: open
            .blob
            .iter()
            .flat_map(|b| b.groups.iter().flat_map(|r| [r.start, r.end]))
            .collect(),
        window: open.blob.as_ref().map_or(0, |b| b.window),
    };
    let perr = |reason: String| MeshError::Protocol {
        peer: device,
        reason,
    };
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let mut s = match control.open_stream(peer, AUDIO).await {
            Ok(s) => s,
            Err(e) => {
                last = Some(MeshError::Unreachable {
                    peer: device,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if let Err(e) = wire::write(&mut s, &msg, wire::MAX_STREAM_HEAD).await {
            last = Some(perr(e.to_string()));
            continue;
        }
        let read = wire::read::<proto::StreamHead, _>(&mut s, wire::MAX_STREAM_HEAD);
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read).await {
            Ok(Ok(h)) => h,
            // Dropped by the remote's accept queue: try again.
            Ok(Err(wire::WireError::Closed)) => {
                last = Some(perr("the stream was closed before its head".into()));
                continue;
            }
            Ok(Err(e)) => return Err(perr(e.to_string())),
            Err(_) => return Err(perr("no answer to a stream request".into())),
        };
        let head = StreamHead {
            error: (!head.error.is_empty()).then_some(head.error),
            mime: head.mime,
            total_len: (head.total_len > 0).then_some(head.total_len),
            complete: head.complete,
            via: head.via,
        };
        return Ok((head, s));
    }
    Err(last.unwrap_or(MeshError::Closed))
}

/// Read a member's stream request from an inbound substream; `None` when
/// it is malformed (answered with an error head where possible).
pub(super) async fn accept(
    peer: PeerId,
    mut s: libp2p::Stream,
) -> Option<(StreamOpen, MeshStream)> {
    let read = tokio::time::timeout(OPEN_TIMEOUT, wire::read(&mut s, wire::MAX_STREAM_HEAD));
    let open: proto::StreamOpen = match read.await.unwrap_or(Err(wire::WireError::Timeout)) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(%peer, "bad stream request: {e}");
            return None;
        }
    };
    let Some(track) = TrackId::from_slice(&open.track) else {
        tracing::warn!(%peer, "stream request without a valid track id");
        let head = proto::StreamHead {
            error: "bad track id".into(),
            ..Default::default()
        };
        let _ = wire::write(&mut s, &head, wire::MAX_STREAM_HEAD).await;
        let _ = s.close().await;
        return None;
    };
    let blob = match blob_want(&open) {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(%peer, "bad blob request: {why}");
            let head = proto::StreamHead {
                error: why.into(),
                ..Default::default()
            };
            let _ = wire::write(&mut s, &head, wire::MAX_STREAM_HEAD).await;
            let _ = s.close().await;
            return None;
        }
    };
    let open = StreamOpen {
        track,
        kbps: open.kbps,
        start_ms: open.start_ms,
        offset: open.offset,
        blob,
    };
    Some((open, MeshStream(s.compat())))
}

/// The blob part of a stream request: a hash and sorted, disjoint,
/// non-empty group ranges (at most [`MAX_GROUP_RANGES`]).
fn blob_want(open: &proto::StreamOpen) -> Result<Option<BlobWant>, &'static str> {
    if open.blob.is_empty() {
        return Ok(None);
    }
    let hash = Hash32::from_slice(&open.blob).ok_or("bad blob hash")?;
    if !open.groups.len().is_multiple_of(2) || open.groups.len() / 2 > MAX_GROUP_RANGES {
        return Err("bad group ranges");
    }
    let mut groups = Vec::with_capacity(open.groups.len() / 2);
    let mut end = 0;
    for p in open.groups.chunks_exact(2) {
        if p[0] >= p[1] || p[0] < end {
            return Err("group ranges must be sorted, disjoint and non-empty");
        }
        end = p[1];
        groups.push(p[0]..p[1]);
    }
    let window = open.window.clamp(1, MAX_WINDOW);
    Ok(Some(BlobWant {
        hash,
        groups,
        window,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &'static [u8]) -> Vec<std::io::Result<Bytes>> {
        ChunkReader::from_io(bytes).collect().await
    }

    #[tokio::test]
    async fn chunks_end_at_the_marker_and_a_cut_stream_is_an_error() {
        // Two chunks, the end marker, and bytes after it (never read).
        let whole = read_all(b"\0\0\0\x03abc\0\0\0\x01d\0\0\0\0junk").await;
        let got: Vec<Bytes> = whole.into_iter().map(|c| c.unwrap()).collect();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"d")]
        );
        // No end marker: the chunks, then an error, then nothing.
        let cut = read_all(b"\0\0\0\x03abc").await;
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].as_ref().unwrap(), &Bytes::from_static(b"abc"));
        let e = cut[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        // Cut inside a chunk, or a chunk over the limit: an error too.
        assert!(read_all(b"\0\0\0\x09abc").await[0].is_err());
        assert!(read_all(b"\0\x03\0\x01").await[0].is_err());
    }
}
