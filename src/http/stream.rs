//! `/stream/{id}`: audio for players, from whichever device holds the
//! track, with byte ranges on originals and finished transcodes.
//!
//! Owns: the stream query (`bitrate`, `start`), the response headers
//! (`x-tunemesh-track`, `-source`, `-via`), and mapping a range onto the
//! node's stream (a range that starts later reopens the stream there).
//!
//! Must never: buffer a track whole, or answer a range on a stream whose
//! length is not final (a live encode is sent whole, 200).

use super::{range, ApiError, ApiResult, AppState};
use crate::stream::Bitrate;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

/// Longest wait for a transcode to finish so a resume range can be
/// answered (a 10-minute track encodes in a few seconds here).
const RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    /// Opus kb/s, or "original" [default: 128].
    bitrate: Option<String>,
    /// Seconds into the track.
    start: Option<f64>,
}

impl StreamQuery {
    /// The bitrate asked for (`original`, or Opus kb/s) [default: 128].
    fn bitrate(&self) -> ApiResult<Bitrate> {
        match self.bitrate.as_deref() {
            None => Ok(Bitrate::DEFAULT),
            Some(b) => b.parse().map_err(|e: crate::stream::BitrateError| {
                ApiError(StatusCode::BAD_REQUEST, e.to_string())
            }),
        }
    }

    /// Where to start, in ms.
    fn start_ms(&self) -> ApiResult<u64> {
        match self.start {
            Some(x) if x.is_finite() && x >= 0.0 => Ok((x * 1000.0) as u64),
            Some(_) => Err(ApiError(
                StatusCode::BAD_REQUEST,
                "start must be ≥ 0 seconds".into(),
            )),
            None => Ok(0),
        }
    }
}

pub(super) async fn stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let bitrate = q.bitrate()?;
    let start_ms = q.start_ms()?;
    respond(&s.node, &id, bitrate, start_ms, &headers, Length::AsItComes).await
}

/// Whether the answer must say its length (`Content-Length`) even for a
/// transcode still being encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Length {
    /// Stream at once; the length only when it is already known.
    AsItComes,
    /// Wait (up to [`RESUME_WAIT`]) for the encode to finish, then answer
    /// with the exact length (Subsonic's `estimateContentLength`).
    Exact,
}

/// Serve track `id` at `bitrate` from `start_ms`, honouring a `Range` in
/// `headers` on a stream whose length is final (also `/rest/stream`).
pub(super) async fn respond(
    node: &crate::node::Node,
    id: &str,
    bitrate: Bitrate,
    start_ms: u64,
    headers: &HeaderMap,
    length: Length,
) -> ApiResult<Response> {
    // Ranges apply to whole tracks whose length is final (originals and
    // finished transcodes); a live encode is sent whole, 200.
    let spec = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| start_ms == 0)
        .and_then(range::parse);
    let mut ns = node.open_stream(id, bitrate, start_ms, 0).await?;
    // A resume into a transcode still being encoded (DSub asks
    // `bytes=N-` for the rest of a cached file): encodes run many times
    // faster than real time, so wait for this one to finish and answer the
    // range exactly, rather than send it whole from byte 0. `bytes=0-`
    // (every browser's first request) never waits.
    let resumes = matches!(spec, Some(range::Spec::From { first, .. }) if first > 0)
        || matches!(spec, Some(range::Spec::Suffix(_)));
    if (resumes || length == Length::Exact) && !ns.complete {
        let deadline = tokio::time::Instant::now() + RESUME_WAIT;
        while !ns.complete && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            ns = node.open_stream(id, bitrate, start_ms, 0).await?;
        }
    }
    let total = ns.total_len.filter(|_| ns.complete);
    let answer = total.map_or(range::Answer::Whole, |len| range::resolve(spec, len));
    if let range::Answer::Part { first, .. } = answer {
        if first > 0 {
            ns = node.open_stream(id, bitrate, start_ms, first).await?;
        }
    }
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, ns.mime.as_str())
        .header("x-tunemesh-track", ns.track.id.to_hex())
        .header("x-tunemesh-source", ns.source.as_str())
        .header("x-tunemesh-via", ns.via.as_str())
        .header(header::CACHE_CONTROL, "no-store");
    if ns.complete {
        resp = resp.header(header::ACCEPT_RANGES, "bytes");
    }
    let (status, body) = match (answer, total) {
        (range::Answer::Unsatisfiable, Some(total)) => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                .body(Body::empty())
                .unwrap_or_default());
        }
        (range::Answer::Part { first, last }, Some(total)) => {
            let len = answer.part_len().unwrap_or(0);
            resp = resp
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {first}-{last}/{total}"),
                )
                .header(header::CONTENT_LENGTH, len);
            let r = ns.reader.take(len);
            (
                StatusCode::PARTIAL_CONTENT,
                Body::from_stream(ReaderStream::new(r)),
            )
        }
        _ => {
            if let Some(t) = total {
                resp = resp.header(header::CONTENT_LENGTH, t);
            }
            (
                StatusCode::OK,
                Body::from_stream(ReaderStream::new(ns.reader)),
            )
        }
    };
    resp.status(status)
        .body(body)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
