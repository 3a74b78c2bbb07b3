//! The offline mirror over HTTP: pins, the budget, the policy, the status.
//! Changes are durable when the answer comes.

use super::dto::{
    BudgetRequest, OfflineStatusView, PinListView, PinRequest, PinsView, PolicyRequest,
};
use super::{ApiError, ApiResult, AppState};
use crate::mirror::{self, PinKind, Policy};
use crate::stream::Bitrate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/offline/pins", get(pins).post(add))
        .route("/api/offline/pins/remove", post(remove))
        .route("/api/offline/budget", put(budget))
        .route("/api/offline/policy", put(policy))
        .route("/api/offline/status", get(status))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn kind(k: &str) -> Result<PinKind, ApiError> {
    PinKind::parse(k).ok_or_else(|| {
        bad(format!(
            "unknown kind {k:?}: track, album, artist, playlist, starred or library"
        ))
    })
}

async fn pins(State(st): State<AppState>) -> Json<PinsView> {
    let pins = st.node.offline_pins().iter().map(PinListView::of).collect();
    Json(PinsView { pins })
}

async fn add(State(st): State<AppState>, Json(r): Json<PinRequest>) -> ApiResult<Json<PinsView>> {
    let bitrate = match r.bitrate.as_deref() {
        None | Some("") => Bitrate::Opus(crate::transcode::Kbps::clamped(mirror::DEFAULT_KBPS)),
        Some(b) => b.parse::<Bitrate>().map_err(|e| bad(e.to_string()))?,
    };
    st.node
        .offline_add(kind(&r.kind)?, r.id.as_deref(), bitrate)
        .await?;
    Ok(pins(State(st)).await)
}

async fn remove(
    State(st): State<AppState>,
    Json(r): Json<PinRequest>,
) -> ApiResult<Json<PinsView>> {
    st.node
        .offline_remove(kind(&r.kind)?, r.id.as_deref())
        .await?;
    Ok(pins(State(st)).await)
}

async fn budget(
    State(st): State<AppState>,
    Json(r): Json<BudgetRequest>,
) -> ApiResult<Json<OfflineStatusView>> {
    let bytes = mirror::parse_size(&r.budget).map_err(bad)?;
    st.node.offline_budget(bytes).await?;
    Ok(status(State(st)).await)
}

async fn policy(
    State(st): State<AppState>,
    Json(r): Json<PolicyRequest>,
) -> ApiResult<Json<OfflineStatusView>> {
    let p = Policy::parse(&r.policy)
        .ok_or_else(|| bad(format!("unknown policy {:?}: lan, direct or any", r.policy)))?;
    st.node.offline_policy(p).await?;
    Ok(status(State(st)).await)
}

async fn status(State(st): State<AppState>) -> Json<OfflineStatusView> {
    Json(OfflineStatusView::from(&st.node.offline_status()))
}
