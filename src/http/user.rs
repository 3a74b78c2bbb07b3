//! The owner's shared state over HTTP: stars, ratings, plays, playlists
//! and the play queue. Every change is durable (and on its way to the
//! other members) when the answer comes.

use super::dto::{
    AbsentItem, AddEntries, CreatePlaylist, EditPlaylist, ItemsChanged, MoveEntry, PlayEventView,
    PlayRequest, PlayedView, PlaylistEntryView, PlaylistPage, PlaylistSummary, PlaysView,
    QueueRequest, QueueView, RateRequest, RemoveEntries, StarRequest, StarredView, TrackView,
};
use super::{ApiError, ApiResult, AppState};
use crate::model::TrackId;
use crate::node::{LibraryTrack, Node, NodeError};
use crate::userdata::{EntryId, Item, Play, PlaylistView, Queue};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::HashMap;

/// Most ids one request may name.
const MAX_IDS: usize = 5000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/star", post(star))
        .route("/api/unstar", post(unstar))
        .route("/api/starred", get(starred))
        .route("/api/rate", post(rate))
        .route("/api/plays", get(plays).post(add_play))
        .route("/api/playlists", get(playlists).post(create_playlist))
        .route(
            "/api/playlists/{id}",
            get(playlist).patch(edit_playlist).delete(delete_playlist),
        )
        .route("/api/playlists/{id}/entries", post(add_entries))
        .route("/api/playlists/{id}/move", post(move_entry))
        .route("/api/playlists/{id}/remove", post(remove_entries))
        .route("/api/queue", get(queue).put(set_queue))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn too_many(n: usize) -> Result<(), ApiError> {
    if n > MAX_IDS {
        return Err(bad(format!("at most {MAX_IDS} ids at once")));
    }
    Ok(())
}

/// The text form of an item (`track:…`, `album:…`, `artist:…`).
pub(super) fn item_text(i: &Item) -> String {
    match i {
        Item::Track(t) => format!("track:{t}"),
        Item::Album(a) => format!("album:{a}"),
        Item::Artist(a) => format!("artist:{a}"),
    }
}

fn resolve_all(node: &Node, ids: &[String]) -> Result<Vec<Item>, ApiError> {
    too_many(ids.len())?;
    ids.iter()
        .map(|i| node.resolve_item(i).map_err(ApiError::from))
        .collect()
}

fn resolve_tracks(node: &Node, ids: &[String]) -> Result<Vec<TrackId>, ApiError> {
    too_many(ids.len())?;
    ids.iter()
        .map(|i| node.resolve_track_id(i).map_err(ApiError::from))
        .collect()
}

/// The tracks of the merged library among `ids`, labelled.
async fn labelled(
    node: &Node,
    ids: &[TrackId],
) -> Result<HashMap<TrackId, LibraryTrack>, NodeError> {
    let cat: Vec<_> = ids
        .iter()
        .filter_map(|id| node.catalog().track(id))
        .collect();
    Ok(node
        .label(cat)
        .await?
        .into_iter()
        .map(|t| (t.track.id, t))
        .collect())
}

async fn star_or_unstar(
    s: AppState,
    req: StarRequest,
    starred: bool,
) -> ApiResult<Json<ItemsChanged>> {
    let items = resolve_all(&s.node, &req.ids)?;
    s.node.star(items.clone(), starred).await?;
    Ok(Json(ItemsChanged {
        items: items.iter().map(item_text).collect(),
    }))
}

async fn star(
    State(s): State<AppState>,
    Json(req): Json<StarRequest>,
) -> ApiResult<Json<ItemsChanged>> {
    star_or_unstar(s, req, true).await
}

async fn unstar(
    State(s): State<AppState>,
    Json(req): Json<StarRequest>,
) -> ApiResult<Json<ItemsChanged>> {
    star_or_unstar(s, req, false).await
}

async fn rate(
    State(s): State<AppState>,
    Json(req): Json<RateRequest>,
) -> ApiResult<Json<ItemsChanged>> {
    let item = s.node.resolve_item(&req.id)?;
    s.node.rate(item, req.rating).await?;
    Ok(Json(ItemsChanged {
        items: vec![item_text(&item)],
    }))
}

async fn starred(State(s): State<AppState>) -> ApiResult<Response> {
    let all = s.node.user_state(|v| v.starred());
    let tracks: Vec<TrackId> = all
        .iter()
        .filter_map(|(i, _)| match i {
            Item::Track(t) => Some(*t),
            _ => None,
        })
        .collect();
    let held = labelled(&s.node, &tracks).await?;
    let mut out = StarredView {
        tracks: vec![],
        albums: vec![],
        artists: vec![],
        absent: vec![],
    };
    for (item, at) in &all {
        let absent = || AbsentItem {
            item: item_text(item),
            starred_at_ms: Some(*at),
        };
        match item {
            Item::Track(t) => match held.get(t) {
                Some(lt) => out.tracks.push(TrackView::of(lt)),
                None => out.absent.push(absent()),
            },
            Item::Album(a) => match s.node.catalog().album(a) {
                Some((info, _)) => out.albums.push(super::catalog::album_view(&s.node, info)),
                None => out.absent.push(absent()),
            },
            Item::Artist(a) => match s.node.catalog().artist(a) {
                Some((info, _)) => out.artists.push(super::catalog::artist_view(&s.node, info)),
                None => out.absent.push(absent()),
            },
        }
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn plays(State(s): State<AppState>, Query(q): Query<LimitQuery>) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(50).min(1000);
    let (most, recent, total) = s
        .node
        .user_state(|v| (v.most_played(limit), v.recent_plays(limit), v.play_count()));
    let ids: Vec<TrackId> = most
        .iter()
        .map(|(t, _)| *t)
        .chain(recent.iter().map(|(_, p)| p.track))
        .collect();
    let held = labelled(&s.node, &ids).await?;
    Ok(Json(PlaysView {
        most: most
            .iter()
            .map(|(t, st)| PlayedView {
                id: *t,
                count: st.count,
                last_played_ms: st.last_ms,
                total_ms: st.total_ms,
                track: held.get(t).map(TrackView::of),
            })
            .collect(),
        recent: recent
            .iter()
            .map(|(id, p)| PlayEventView {
                id: p.track,
                started_ms: p.started_ms,
                ms_played: p.ms_played,
                device: id.device.to_string(),
                track: held.get(&p.track).map(TrackView::of),
            })
            .collect(),
        total,
    })
    .into_response())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn add_play(State(s): State<AppState>, Json(req): Json<PlayRequest>) -> ApiResult<Response> {
    let track = s.node.resolve_track_id(&req.id)?;
    let now = now_ms();
    let started_ms = req.started_at_ms.unwrap_or(now);
    if started_ms > now + 60_000 {
        return Err(bad("a play cannot start in the future"));
    }
    let ms_played = match req.ms_played {
        Some(ms) => ms,
        None => labelled(&s.node, &[track])
            .await?
            .get(&track)
            .map_or(0, |t| {
                u32::try_from(t.track.audio.duration_ms).unwrap_or(u32::MAX)
            }),
    };
    s.node
        .record_plays(vec![Play {
            track,
            started_ms,
            ms_played,
        }])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ItemsChanged {
            items: vec![item_text(&Item::Track(track))],
        }),
    )
        .into_response())
}

fn summary(p: &PlaylistView) -> PlaylistSummary {
    PlaylistSummary {
        id: p.id.to_string(),
        name: p.name.clone(),
        comment: p.comment.clone(),
        entry_count: p.entries.len(),
        created_ms: p.created_ms,
        changed_ms: p.changed_ms,
    }
}

async fn playlists(State(s): State<AppState>) -> Json<Vec<PlaylistSummary>> {
    Json(s.node.playlists().iter().map(summary).collect())
}

async fn playlist_page(node: &Node, p: PlaylistView) -> ApiResult<Response> {
    let ids: Vec<TrackId> = p.entries.iter().map(|e| e.track).collect();
    let held = labelled(node, &ids).await?;
    let entries: Vec<PlaylistEntryView<'_>> = p
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| PlaylistEntryView {
            entry: e.id.to_string(),
            position: i + 1,
            id: e.track,
            track: held.get(&e.track).map(TrackView::of),
        })
        .collect();
    let duration_ms = entries
        .iter()
        .filter_map(|e| e.track.as_ref())
        .map(|t| t.duration_ms)
        .sum();
    Ok(Json(PlaylistPage {
        playlist: summary(&p),
        duration_ms,
        entries,
    })
    .into_response())
}

async fn playlist(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let p = s.node.playlist(&id)?;
    playlist_page(&s.node, p).await
}

async fn create_playlist(
    State(s): State<AppState>,
    Json(req): Json<CreatePlaylist>,
) -> ApiResult<Response> {
    let tracks = resolve_tracks(&s.node, &req.ids)?;
    let p = s.node.create_playlist(&req.name, tracks).await?;
    let mut r = playlist_page(&s.node, p).await?;
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

async fn edit_playlist(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<EditPlaylist>,
) -> ApiResult<Response> {
    let p = s.node.edit_playlist(&id, req.name, req.comment).await?;
    playlist_page(&s.node, p).await
}

async fn delete_playlist(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PlaylistSummary>> {
    let p = s.node.playlist(&id)?;
    s.node.delete_playlist(&p.id.to_string()).await?;
    Ok(Json(summary(&p)))
}

async fn add_entries(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<AddEntries>,
) -> ApiResult<Response> {
    let tracks = resolve_tracks(&s.node, &req.ids)?;
    let p = s.node.add_to_playlist(&id, tracks, req.at).await?;
    playlist_page(&s.node, p).await
}

async fn move_entry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<MoveEntry>,
) -> ApiResult<Response> {
    let p = match (req.from, req.entry) {
        (Some(from), None) => s.node.move_in_playlist(&id, from, req.to).await?,
        (None, Some(e)) => {
            let e: EntryId = e.parse().map_err(bad)?;
            s.node.move_entry_to(&id, e, req.to).await?
        }
        _ => {
            return Err(bad(
                "give `from` (a position) or `entry` (an entry id), not both",
            ))
        }
    };
    playlist_page(&s.node, p).await
}

async fn remove_entries(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<RemoveEntries>,
) -> ApiResult<Response> {
    too_many(req.positions.len() + req.entries.len())?;
    let entries: Vec<EntryId> = req
        .entries
        .iter()
        .map(|e| e.parse().map_err(bad))
        .collect::<Result<_, _>>()?;
    let p = s
        .node
        .remove_from_playlist(&id, &req.positions, &entries)
        .await?;
    playlist_page(&s.node, p).await
}

async fn queue(State(s): State<AppState>) -> ApiResult<Response> {
    let (stamp, q) = match s.node.queue() {
        Some((st, q)) => (Some(st), q),
        None => (None, Queue::default()),
    };
    let held = labelled(&s.node, &q.tracks).await?;
    Ok(Json(QueueView {
        ids: q.tracks.iter().map(|t| t.to_hex()).collect(),
        current: q.current,
        position_ms: q.position_ms,
        changed_ms: stamp.map_or(0, |st| st.at.ms()),
        changed_by: stamp.map(|st| st.device.to_string()).unwrap_or_default(),
        tracks: q
            .tracks
            .iter()
            .filter_map(|t| held.get(t))
            .map(TrackView::of)
            .collect(),
    })
    .into_response())
}

async fn set_queue(
    State(s): State<AppState>,
    Json(req): Json<QueueRequest>,
) -> ApiResult<StatusCode> {
    let tracks = resolve_tracks(&s.node, &req.ids)?;
    if !tracks.is_empty() && req.current as usize >= tracks.len() {
        return Err(bad("`current` is past the end of the queue"));
    }
    s.node
        .set_queue(Queue {
            tracks,
            current: req.current,
            position_ms: req.position_ms,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
