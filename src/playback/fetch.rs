//! A remote stream: the best online holder first (lowest round trip), the
//! others as fallbacks and for resuming.

use super::resume::{resuming, Resume};
use super::verify::Verify;
use super::{PlayStream, Playback, PlaybackError};
use crate::mesh::{DeviceId, StreamOpen};
use crate::model::Track;
use crate::stream::Bitrate;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// Holders ordered by round trip, unknown ones last (stable otherwise).
pub fn by_round_trip(mut holders: Vec<DeviceId>, rtt_ms: &HashMap<DeviceId, f64>) -> Vec<DeviceId> {
    holders.sort_by(|a, b| {
        let ra = rtt_ms.get(a).copied().unwrap_or(f64::MAX);
        let rb = rtt_ms.get(b).copied().unwrap_or(f64::MAX);
        ra.total_cmp(&rb)
    });
    holders
}

impl Playback {
    /// Stream `track` from the first of `holders` (online members, best
    /// first) that serves it. The original is checked against the track id
    /// as it arrives.
    pub async fn fetch(
        &self,
        track: Arc<Track>,
        holders: Vec<DeviceId>,
        bitrate: Bitrate,
        start_ms: u64,
        offset: u64,
    ) -> Result<PlayStream, PlaybackError> {
        if holders.is_empty() {
            return Err(PlaybackError::Unavailable(format!(
                "no device holding {} is online",
                track.id
            )));
        }
        let open = StreamOpen {
            track: track.id,
            kbps: bitrate.wire(),
            start_ms,
            offset,
            blob: None,
        };
        let mut errors = vec![];
        for &d in &holders {
            let (head, stream) = match self.client.open_stream(&d, &open).await {
                Ok(x) => x,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            if let Some(e) = head.error {
                errors.push(format!("{d}: {e}"));
                continue;
            }
            // The serving device first, then the other holders.
            let order = std::iter::once(d)
                .chain(holders.iter().copied().filter(|h| *h != d))
                .collect();
            let framed = tokio_util::io::StreamReader::new(resuming(Resume {
                client: self.client.clone(),
                open: open.clone(),
                received: 0,
                at_last_resume: None,
                fruitless: 0,
                holders: order,
                chunks: Box::pin(stream),
                closed: Some(self.client.watch_closed()),
                cancel: self.tasks.cancel_token().clone(),
            }));
            let reader: Pin<Box<dyn AsyncRead + Send>> =
                if bitrate == Bitrate::Original && offset == 0 {
                    Box::pin(Verify::new(framed, track.id, track.size))
                } else {
                    Box::pin(framed)
                };
            return Ok(PlayStream {
                track,
                mime: head.mime,
                total_len: head.total_len,
                complete: head.complete,
                via: head.via,
                source: d.to_string(),
                reader,
            });
        }
        Err(PlaybackError::Unavailable(format!(
            "cannot stream {}: {}",
            track.id,
            errors.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u8) -> DeviceId {
        let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        b.extend([n; 32]);
        DeviceId::from_bytes(&b).unwrap()
    }

    #[test]
    fn nearest_holder_first_and_unknown_round_trips_last() {
        let (a, b, c) = (dev(1), dev(2), dev(3));
        let rtt = HashMap::from([(a, 40.0), (c, 3.5)]);
        assert_eq!(by_round_trip(vec![a, b, c], &rtt), vec![c, a, b]);
        assert_eq!(by_round_trip(vec![b], &rtt), vec![b]);
    }
}
