//! A member's stream request, answered from our files: head, chunks, end
//! marker (`mesh::audio`; a stream without the marker was cut).

use super::{Playback, CHUNK};
use crate::mesh::{MeshStream, StreamHead, StreamOpen};
use crate::stream::Bitrate;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

impl Playback {
    /// Serve `open` on `stream` until the end or until the member stops
    /// reading.
    pub async fn serve(&self, open: StreamOpen, mut stream: MeshStream) {
        let started = Instant::now();
        let ix = self.index.clone();
        let id = open.track;
        let track = match self.tasks.blocking(move || ix.track(&id)).await {
            Ok(Ok(Some(t))) => t,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "this device does not hold that track".into(),
                };
                let _ = stream.write_head(&refusal(why)).await;
                return;
            }
        };
        // A member's wire value: 0 is the original, others clamped.
        let bitrate = Bitrate::from_wire(open.kbps);
        let ps = match self
            .open_local(Arc::new(track), bitrate, open.start_ms, open.offset)
            .await
        {
            Ok(ps) => ps,
            Err(e) => {
                tracing::warn!("cannot serve: {e}");
                let _ = stream.write_head(&refusal(e.to_string())).await;
                return;
            }
        };
        let head = StreamHead {
            error: None,
            mime: ps.mime.clone(),
            total_len: ps.total_len,
            complete: ps.complete,
            via: ps.via.clone(),
        };
        if let Err(e) = stream.write_head(&head).await {
            tracing::info!("peer went away: {e}");
            return;
        }
        let mut reader = ps.reader;
        let mut out = stream.into_writer();
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("stream failed after {sent} bytes: {e}");
                    return; // no end marker: the receiver sees a cut stream
                }
            };
            if let Err(e) = out.send(Bytes::copy_from_slice(&buf[..n])).await {
                tracing::info!("peer stopped reading after {sent} bytes: {e}");
                return;
            }
            sent += n as u64;
        }
        let _ = out.finish().await;
        tracing::info!(bytes = sent, ms = started.elapsed().as_millis() as u64, via = %head.via, "stream served");
    }
}

fn refusal(why: String) -> StreamHead {
    StreamHead {
        error: Some(why),
        ..Default::default()
    }
}
