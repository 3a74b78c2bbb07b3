//! The local pump: a stream of the streamer (blocking reads) as an async
//! reader, one chunk per blocking job.

use super::{PlayStream, Playback, PlaybackError, CHUNK};
use crate::model::Track;
use crate::stream::{Bitrate, StreamRequest, Via};
use bytes::Bytes;
use std::io::Read;
use std::sync::Arc;
use tokio::sync::mpsc;

impl Playback {
    /// Open a track this device holds. Reads run one chunk at a time on
    /// the blocking pool and are handed over through a small channel
    /// (back-pressure: nothing is read while the reader is slow).
    pub async fn open_local(
        &self,
        track: Arc<Track>,
        bitrate: Bitrate,
        start_ms: u64,
        offset: u64,
    ) -> Result<PlayStream, PlaybackError> {
        let streamer = self.streamer.clone();
        let t = track.clone();
        let opened = self
            .tasks
            .blocking(move || {
                let mut req = StreamRequest::new(bitrate);
                req.start = start_ms as f64 / 1000.0;
                req.offset = offset;
                streamer.open(&t, &req).map_err(|e| {
                    tracing::warn!(track = %t.id, "cannot stream: {e}");
                    e.public_message()
                })
            })
            .await?
            .map_err(PlaybackError::Unavailable)?;
        let complete =
            opened.is_complete() || matches!(opened.via, Via::Original | Via::Passthrough);
        let (mime, len, via) = (
            opened.mime.to_string(),
            opened.len,
            format!("{:?}", opened.via).to_lowercase(),
        );
        // A paused player holds a task and a channel slot, never a
        // blocking-pool thread.
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let pump = self.tasks.clone();
        self.tasks.spawn(async move {
            let mut s = Some((opened, vec![0u8; CHUNK]));
            while let Some((mut st, mut buf)) = s.take() {
                let read = pump
                    .blocking(move || {
                        let r = st.read(&mut buf).map(|n| Bytes::copy_from_slice(&buf[..n]));
                        (st, buf, r)
                    })
                    .await;
                let Ok((st, buf, r)) = read else { break };
                let more = matches!(&r, Ok(b) if !b.is_empty());
                if matches!(&r, Ok(b) if b.is_empty()) || tx.send(r).await.is_err() {
                    break;
                }
                if more {
                    s = Some((st, buf));
                }
            }
        });
        let body =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        Ok(PlayStream {
            track,
            mime,
            total_len: len,
            complete,
            via,
            source: "local".into(),
            reader: Box::pin(tokio_util::io::StreamReader::new(body)),
        })
    }
}
