//! The local HTTP API: the control plane for the CLI and apps, and the
//! stream endpoint players use.
//!
//! Listens on loopback, and on the LAN only when asked (`--web`). On
//! loopback a request carries the node's token, as `Authorization: Bearer
//! TOKEN` or `?token=TOKEN` (for players that only take a URL), or the
//! session cookie of a logged-in browser; on the LAN only the cookie
//! counts. JSON under `/api/…`; audio at `/stream/{track}` with HTTP
//! ranges on originals and finished transcodes, so mpv, ffplay, VLC and
//! browsers can seek; the web player at `/`.
//!
//! By role: [`guard`] (Host, Origin and security headers, before all),
//! [`auth`] (who a request acts for), [`dto`] (every JSON shape, shared
//! with clients), `routes` (the node's JSON endpoints), `catalog` (the
//! library: tracks, albums, artists, search, covers), `stream`
//! (`/stream/{id}`), [`web`] (the player's files, login, sessions),
//! `listen` (the accept loop) and [`range`] (byte ranges). The
//! OpenSubsonic API (`http/subsonic`) comes next, as a sibling with its
//! own router merged in [`serve`].
//!
//! Must never: answer a Host it does not serve, let a cookie change
//! anything from another origin, answer without auth (the player's shell
//! and login aside), or touch the index, the mesh or files itself;
//! everything goes through [`Node`].

pub mod auth;
mod catalog;
pub mod dto;
pub mod guard;
mod listen;
mod offline;
pub mod range;
mod routes;
mod stream;
mod subsonic;
mod user;
pub mod web;

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

/// What every handler gets: the node, the token's hash to check requests
/// against, the sessions, and which listener the request came in on.
#[derive(Clone)]
struct AppState {
    node: Node,
    token: blake3::Hash,
    web: std::sync::Arc<web::Web>,
    listener: guard::Listener,
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

/// The web player's listener on the LAN (`--web`).
pub struct LanListener {
    /// Bound by [`bind_lan`].
    pub listener: tokio::net::TcpListener,
    /// Host names it answers besides IP literals (`--web-host`).
    pub names: Vec<String>,
}

/// Serve the API on `api` (loopback), and the player on `lan` when given,
/// until `cancel` fires. Streams still open then are cut after a short
/// grace period.
pub async fn serve(
    node: Node,
    api: tokio::net::TcpListener,
    lan: Option<LanListener>,
    token: ApiToken,
    accounts: crate::accounts::Accounts,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let web = std::sync::Arc::new(web::Web::new(accounts));
    let state = AppState {
        node,
        token: blake3::hash(token.as_str().as_bytes()),
        web: web.clone(),
        listener: guard::Listener::Loopback,
    };
    let lan_task = lan.map(|l| {
        let names = l.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let state = AppState {
            listener: guard::Listener::Lan(std::sync::Arc::new(names)),
            ..state.clone()
        };
        tokio::spawn(listen::serve(l.listener, router(state), cancel.clone()))
    });
    let r = listen::serve(api, router(state), cancel).await;
    if let Some(t) = lan_task {
        let _ = t.await;
    }
    web.tasks.shutdown().await;
    r
}

/// Every route, behind the guard and auth, for one listener.
fn router(state: AppState) -> Router {
    let owner = Router::new()
        .route("/api/devices/{id}", delete(routes::remove_device))
        .route("/api/invite", post(routes::invite))
        .route("/api/join", post(routes::join))
        .merge(web::owner_routes())
        .route_layer(middleware::from_fn(auth::owner_only));
    Router::new()
        .route("/api/status", get(routes::status))
        .route("/api/peers", get(routes::peers))
        .route("/api/devices", get(routes::devices))
        .route("/stream/{id}", get(stream::stream))
        .merge(catalog::routes())
        .merge(user::routes())
        .merge(offline::routes())
        .merge(owner)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::auth))
        .merge(web::public_routes())
        // Subsonic apps carry their own credentials (checked per request).
        .merge(subsonic::routes())
        .fallback(web::fallback)
        .layer(middleware::from_fn_with_state(
            state.listener.clone(),
            guard::guard,
        ))
        .with_state(state)
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

/// Bind the web player's LAN listener (`--web`): any address.
pub async fn bind_lan(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
