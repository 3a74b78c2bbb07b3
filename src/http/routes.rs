//! The JSON endpoints under `/api/…`: status, peers, devices, invitations,
//! joining, the merged library and search.
//!
//! Owns: query parameters and their defaults; each answer is a [`dto`]
//! type converted from what the node returns.
//!
//! Must never: serialise a node or mesh type directly (the DTOs are the
//! API's shape), or do the node's work itself.

use super::dto::{
    DeviceView, InviteView, JoinRequest, JoinView, PeerView, RemovedView, StatusView,
};
use super::{ApiResult, AppState};
use axum::extract::{Path, Query, State};

use axum::Json;
use serde::Deserialize;
use std::time::Duration;

pub(super) async fn status(State(s): State<AppState>) -> Json<StatusView> {
    Json(StatusView::from(&s.node.status()))
}

pub(super) async fn peers(State(s): State<AppState>) -> Json<Vec<PeerView>> {
    Json(s.node.peers().iter().map(PeerView::from).collect())
}

pub(super) async fn devices(State(s): State<AppState>) -> Json<Vec<DeviceView>> {
    Json(device_views(&s, s.node.devices()))
}

fn device_views(s: &AppState, devices: Vec<crate::mesh::Device>) -> Vec<DeviceView> {
    let me = s.node.device_id().to_string();
    devices.iter().map(|d| DeviceView::new(d, &me)).collect()
}

pub(super) async fn remove_device(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RemovedView>> {
    s.node.remove_device(&id).await?;
    Ok(Json(RemovedView { removed: id }))
}

#[derive(Deserialize)]
pub(super) struct InviteQuery {
    /// Seconds the ticket is valid [default: the mesh's default].
    ttl: Option<u64>,
}

pub(super) async fn invite(
    State(s): State<AppState>,
    Query(q): Query<InviteQuery>,
) -> ApiResult<Json<InviteView>> {
    let ttl = Duration::from_secs(
        q.ttl
            .unwrap_or(crate::mesh::DEFAULT_INVITE_TTL.as_secs())
            .clamp(10, 7 * 24 * 3600),
    );
    let ticket = s.node.invite(ttl)?;
    Ok(Json(InviteView {
        ticket: ticket.to_string(),
        expires_in_s: ttl.as_secs(),
    }))
}

pub(super) async fn join(
    State(s): State<AppState>,
    Json(b): Json<JoinRequest>,
) -> ApiResult<Json<JoinView>> {
    let devices = s.node.join(&b.ticket).await?;
    Ok(Json(JoinView {
        mesh: s.node.status().mesh,
        devices: device_views(&s, devices),
    }))
}
