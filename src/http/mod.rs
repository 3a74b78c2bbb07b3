//! The local HTTP API: the control plane for the CLI and apps, and the
//! stream endpoint players use.
//!
//! Listens on loopback only. Every request carries the node's token, as
//! `Authorization: Bearer TOKEN` or `?token=TOKEN` (for players that only
//! take a URL). JSON under `/api/…`; audio at `/stream/{track}` with HTTP
//! ranges on originals and finished transcodes, so mpv, ffplay, VLC and
//! browsers can seek.
//!
//! By role: [`auth`] (the token check), [`dto`] (every JSON shape, shared
//! with clients), `routes` (the node's JSON endpoints), `catalog` (the
//! library: tracks, albums, artists, search, covers), `stream` (`/stream/{id}`),
//! `listen` (the accept loop) and [`range`] (byte ranges). The web player
//! (`http/web`) and the OpenSubsonic API (`http/subsonic`) come next, as
//! sibling modules with their own routers merged in [`serve`].
//!
//! Must never: listen beyond loopback, answer without the token, or touch
//! the index, the mesh or files itself; everything goes through [`Node`].

pub mod auth;
mod catalog;
pub mod dto;
mod listen;
pub mod range;
mod routes;
mod stream;

pub use listen::{HEADER_TIMEOUT, MAX_CONNECTIONS};

use crate::node::state::ApiToken;
use crate::node::{Node, NodeError};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// What every handler gets: the node, and the token's hash to check
/// requests against.
#[derive(Clone)]
struct AppState {
    node: Node,
    token: blake3::Hash,
}

/// A failed request: a status and a message for the client (no paths).
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(dto::ErrorView { error: self.1 })).into_response()
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
    token: ApiToken,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let state = AppState {
        node,
        token: blake3::hash(token.as_str().as_bytes()),
    };
    let app = Router::new()
        .route("/api/status", get(routes::status))
        .route("/api/peers", get(routes::peers))
        .route("/api/devices", get(routes::devices))
        .route("/api/devices/{id}", delete(routes::remove_device))
        .route("/api/invite", post(routes::invite))
        .route("/api/join", post(routes::join))
        .route("/stream/{id}", get(stream::stream))
        .merge(catalog::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth::auth))
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
