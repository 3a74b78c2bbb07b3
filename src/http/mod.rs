//! The local HTTP API: the control plane for the CLI and apps, and the
//! stream endpoint players use.
//!
//! Listens on loopback only. Every request carries the node's token, as
//! `Authorization: Bearer TOKEN` or `?token=TOKEN` (for players that only
//! take a URL). JSON under `/api/…`; audio at `/stream/{track}` with HTTP
//! ranges on originals and finished transcodes, so mpv, ffplay, VLC and
//! browsers can seek.
//!
//! Must never: listen beyond loopback, answer without the token, or touch
//! the index, the mesh or files itself; everything goes through [`Node`].

mod catalog;
mod listen;
pub mod range;

pub use listen::{HEADER_TIMEOUT, MAX_CONNECTIONS};

use crate::node::{LibraryTrack, Node, NodeError};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    node: Node,
    token: blake3::Hash,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let code = match &e {
            NodeError::NotFound(_) => StatusCode::NOT_FOUND,
            NodeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            NodeError::Mesh(crate::mesh::MeshError::BadInput(_))
            | NodeError::Mesh(crate::mesh::MeshError::Ticket(_)) => StatusCode::BAD_REQUEST,
            NodeError::Mesh(crate::mesh::MeshError::Refused(_)) => StatusCode::FORBIDDEN,
            NodeError::Unavailable(_) | NodeError::Mesh(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Serve the API on `listener` until `cancel` fires. Streams still open
/// then are cut after a short grace period.
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    token: String,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let state = AppState {
        node,
        token: blake3::hash(token.as_bytes()),
    };
    let app = Router::new()
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}", delete(remove_device))
        .route("/api/invite", post(invite))
        .route("/api/join", post(join))
        .route("/stream/{id}", get(stream))
        .merge(catalog::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    listen::serve(listener, app, cancel).await
}

/// Bind the API's loopback listener (port 0 for any free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the API listens on loopback only, not {addr}"),
        ));
    }
    tokio::net::TcpListener::bind(addr).await
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
    });
    let ok = from_header
        .or(from_query)
        .is_some_and(|t| blake3::hash(t.as_bytes()) == s.token);
    if ok {
        next.run(req).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token (see api.json in the data dir)".into(),
        )
        .into_response()
    }
}

/// A track as the API shows it, serialised straight from the library
/// (no intermediate JSON tree: a 100k-track library is one pass).
#[derive(serde::Serialize)]
pub struct TrackView<'a> {
    id: &'a crate::model::TrackId,
    title: &'a str,
    artist: String,
    album: &'a str,
    track: Option<u32>,
    disc: Option<u32>,
    year: Option<u32>,
    duration_ms: u64,
    codec: &'a str,
    container: &'a str,
    sample_rate: u32,
    channels: u32,
    bitrate_kbps: Option<u32>,
    size: u64,
    /// The album's id (for `/api/albums/{id}`), when it names one.
    album_id: Option<crate::catalog::AlbumId>,
    sources: &'a [crate::node::Source],
    /// One of the sources is this device or online now.
    online: bool,
}

impl<'a> TrackView<'a> {
    pub fn of(t: &'a LibraryTrack) -> TrackView<'a> {
        let tr = &t.track;
        TrackView {
            id: &tr.id,
            title: &tr.tags.title,
            artist: tr.tags.artist(),
            album: &tr.tags.album,
            track: tr.tags.track,
            disc: tr.tags.disc,
            year: tr.tags.year,
            duration_ms: tr.audio.duration_ms,
            codec: &tr.audio.codec,
            container: &tr.audio.container,
            sample_rate: tr.audio.sample_rate,
            channels: tr.audio.channels,
            bitrate_kbps: tr.audio.bitrate_kbps,
            size: tr.size,
            album_id: t.album,
            sources: &t.sources,
            online: t.sources.iter().any(|s| s.online),
        }
    }
}

async fn status(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(s.node.status()).unwrap_or_default())
}

async fn peers(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(s.node.peers()).unwrap_or_default())
}

async fn devices(State(s): State<AppState>) -> Json<serde_json::Value> {
    let me = s.node.device_id().to_string();
    let v: Vec<serde_json::Value> = s
        .node
        .devices()
        .into_iter()
        .map(|d| {
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["this_device"] = json!(d.id == me);
            v
        })
        .collect();
    Json(json!(v))
}

async fn remove_device(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    s.node.remove_device(&id).await?;
    Ok(Json(json!({ "removed": id })))
}

#[derive(Deserialize)]
struct InviteQuery {
    ttl: Option<u64>,
}

async fn invite(
    State(s): State<AppState>,
    Query(q): Query<InviteQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let ttl = Duration::from_secs(
        q.ttl
            .unwrap_or(crate::mesh::DEFAULT_INVITE_TTL.as_secs())
            .clamp(10, 7 * 24 * 3600),
    );
    let ticket = s.node.invite(ttl)?;
    Ok(Json(
        json!({ "ticket": ticket, "expires_in_s": ttl.as_secs() }),
    ))
}

#[derive(Deserialize)]
struct JoinBody {
    ticket: String,
}

async fn join(
    State(s): State<AppState>,
    Json(b): Json<JoinBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let devices = s.node.join(&b.ticket).await?;
    Ok(Json(
        json!({ "mesh": s.node.status().mesh, "devices": devices }),
    ))
}

#[derive(Deserialize)]
struct StreamQuery {
    /// Opus kb/s, or "original" [default: 128].
    bitrate: Option<String>,
    /// Seconds into the track.
    start: Option<f64>,
}

async fn stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let kbps = match q.bitrate.as_deref() {
        None => 128,
        Some("original") => 0,
        Some(b) => b
            .parse::<u32>()
            .ok()
            .filter(|k| (crate::transcode::MIN_KBPS..=crate::transcode::MAX_KBPS).contains(k))
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("bitrate must be original or 16..=256 kb/s, not {b:?}"),
                )
            })?,
    };
    let start_ms = match q.start {
        Some(x) if x.is_finite() && x >= 0.0 => (x * 1000.0) as u64,
        Some(_) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "start must be ≥ 0 seconds".into(),
            ))
        }
        None => 0,
    };
    // Ranges apply to whole tracks whose length is final (originals and
    // finished transcodes); a live encode is sent whole, 200.
    let spec = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| start_ms == 0)
        .and_then(range::parse);
    let mut ns = s.node.open_stream(&id, kbps, start_ms, 0).await?;
    let total = ns.total_len.filter(|_| ns.complete);
    let answer = total.map_or(range::Answer::Whole, |len| range::resolve(spec, len));
    if let range::Answer::Part { first, .. } = answer {
        if first > 0 {
            ns = s.node.open_stream(&id, kbps, start_ms, first).await?;
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

/// What `serve` writes to the data dir so the CLI finds the API.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ApiInfo {
    pub url: String,
    pub token: String,
    pub device: String,
    pub pid: u32,
}

impl ApiInfo {
    pub const FILE: &'static str = "api.json";
}
