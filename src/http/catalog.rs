//! The catalog's endpoints: tracks, albums, artists, search, covers, and
//! the whole library streamed a page at a time.
//!
//! Every listing is paged (`offset`, `limit`) and answered from the
//! in-memory catalog; the whole library (`/api/library`) is written as it
//! is read, never built whole. Each track and album names the devices
//! that hold it and whether one of them is online now.

use super::dto::{AlbumPage, AlbumView, ArtistPage, ArtistView, PageView, SearchView, TrackView};
use super::{ApiError, ApiResult, AppState};
use crate::catalog::{AlbumId, AlbumInfo, AlbumSort, ArtistId, ArtistInfo, Page};
use crate::node::{LibraryTrack, Node};
use crate::userdata::Item;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;

/// Most items one page may hold.
const MAX_LIMIT: usize = 1000;
/// Tracks per chunk of the streamed `/api/library`.
const STREAM_PAGE: usize = 512;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/library", get(library))
        .route("/api/tracks", get(tracks))
        .route("/api/albums", get(albums))
        .route("/api/albums/{id}", get(album))
        .route("/api/artists", get(artists))
        .route("/api/artists/{id}", get(artist))
        .route("/api/search", get(search))
        .route("/api/cover/{id}", get(cover))
}

/// `offset` and `limit` of a listing.
#[derive(Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

impl PageQuery {
    fn page(&self, default: usize) -> Page {
        Page {
            offset: self.offset.unwrap_or(0),
            limit: self.limit.unwrap_or(default).min(MAX_LIMIT),
        }
    }
}

/// An album labelled with its holders and the owner's star and rating.
pub(super) fn album_view(node: &Node, a: AlbumInfo) -> AlbumView {
    let sources = node.sources(&a.holders);
    let mine = node.mine(&Item::Album(a.id));
    let mut v = AlbumView::new(a, &sources);
    v.starred_at_ms = mine.starred_at;
    v.rating = mine.rating;
    v
}

/// An artist with the owner's star and rating.
pub(super) fn artist_view(node: &Node, a: ArtistInfo) -> ArtistView {
    let mine = node.mine(&Item::Artist(a.id));
    let mut v = ArtistView::from(a);
    v.starred_at_ms = mine.starred_at;
    v.rating = mine.rating;
    v
}

fn views(t: &[LibraryTrack]) -> Vec<TrackView<'_>> {
    t.iter().map(TrackView::of).collect()
}

async fn tracks(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult<Response> {
    let page = q.page(100);
    let p = s.node.tracks(page).await?;
    Ok(Json(PageView {
        total: p.total,
        offset: page.offset,
        items: views(&p.items),
    })
    .into_response())
}

#[derive(Deserialize)]
struct AlbumsQuery {
    /// name (default), artist, year or added.
    sort: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn albums(State(s): State<AppState>, Query(q): Query<AlbumsQuery>) -> ApiResult<Response> {
    let sort = match q.sort.as_deref().unwrap_or("name") {
        "name" => AlbumSort::Name,
        "artist" => AlbumSort::Artist,
        "year" => AlbumSort::Year,
        "added" => AlbumSort::Added,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("sort must be name, artist, year or added, not {other:?}"),
            ))
        }
    };
    let page = PageQuery {
        offset: q.offset,
        limit: q.limit,
    }
    .page(100);
    let p = s.node.catalog().albums(sort, page);
    Ok(Json(PageView {
        total: p.total,
        offset: page.offset,
        items: p
            .items
            .into_iter()
            .map(|a| album_view(&s.node, a))
            .collect(),
    })
    .into_response())
}

fn parse_id<T: std::str::FromStr>(id: &str, what: &str) -> ApiResult<T> {
    id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an {what} id"),
        )
    })
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no {what} {id} in the library"),
    )
}

async fn album(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let aid: AlbumId = parse_id(&id, "album")?;
    let (info, tracks) = s
        .node
        .catalog()
        .album(&aid)
        .ok_or_else(|| not_found("album", &id))?;
    let tracks = s.node.label(tracks).await?;
    Ok(Json(AlbumPage {
        album: album_view(&s.node, info),
        tracks: views(&tracks),
    })
    .into_response())
}

async fn artists(State(s): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let page = q.page(MAX_LIMIT);
    let p = s.node.catalog().artists(page);
    Json(PageView {
        total: p.total,
        offset: page.offset,
        items: p
            .items
            .into_iter()
            .map(|a| artist_view(&s.node, a))
            .collect(),
    })
    .into_response()
}

async fn artist(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let aid: ArtistId = parse_id(&id, "artist")?;
    let (info, albums) = s
        .node
        .catalog()
        .artist(&aid)
        .ok_or_else(|| not_found("artist", &id))?;
    Ok(Json(ArtistPage {
        artist: info.into(),
        albums: albums.into_iter().map(|a| album_view(&s.node, a)).collect(),
    })
    .into_response())
}

#[derive(Deserialize)]
struct SearchQuery {
    q: String,
    /// Most results of each kind [default: 50].
    limit: Option<usize>,
}

async fn search(State(s): State<AppState>, Query(q): Query<SearchQuery>) -> ApiResult<Response> {
    let f = s
        .node
        .catalog()
        .search(&q.q, q.limit.unwrap_or(50).min(MAX_LIMIT));
    let tracks = s.node.label(f.tracks).await?;
    Ok(Json(SearchView {
        tracks: views(&tracks),
        albums: f
            .albums
            .into_iter()
            .map(|a| album_view(&s.node, a))
            .collect(),
        artists: f
            .artists
            .into_iter()
            .map(|a| artist_view(&s.node, a))
            .collect(),
    })
    .into_response())
}

#[derive(Deserialize)]
struct LibraryQuery {
    /// "all" (default) or "local".
    scope: Option<String>,
    /// Skip this many tracks (in library order: album artist, album, disc,
    /// track, title).
    offset: Option<usize>,
    /// Return at most this many tracks.
    limit: Option<usize>,
}

/// Where the streamed library has got to.
struct Cursor {
    node: Node,
    local_only: bool,
    /// Next catalog position to read.
    at: usize,
    /// Matching tracks still to skip, and still to send.
    skip: usize,
    left: usize,
    /// The `[` is out.
    opened: bool,
    /// A track is out (the next one needs a comma).
    any: bool,
    /// The `]` is out.
    done: bool,
}

impl Cursor {
    /// The next chunk of the JSON array, or `None` after its `]`.
    async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.done {
            return None;
        }
        let mut out = Vec::with_capacity(64 << 10);
        if !self.opened {
            out.push(b'[');
            self.opened = true;
        }
        let page = self.node.catalog().tracks(Page {
            offset: self.at,
            limit: STREAM_PAGE,
        });
        let listed = page.items.len();
        self.at += listed;
        let tracks = match self.node.label(page.items).await {
            Ok(t) => t,
            Err(e) => {
                // The body breaks off: the client sees an incomplete answer.
                self.done = true;
                return Some(Err(std::io::Error::other(e.to_string())));
            }
        };
        for t in &tracks {
            if self.left == 0 {
                break;
            }
            if self.local_only && !t.sources.iter().any(|s| s.local) {
                continue;
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if self.any {
                out.push(b',');
            }
            // A TrackView always serialises (strings, numbers).
            let _ = serde_json::to_writer(&mut out, &TrackView::of(t));
            self.any = true;
            self.left -= 1;
        }
        if listed < STREAM_PAGE || self.left == 0 {
            out.push(b']');
            self.done = true;
        }
        Some(Ok(Bytes::from(out)))
    }
}

async fn library(State(s): State<AppState>, Query(q): Query<LibraryQuery>) -> Response {
    let cursor = Cursor {
        node: s.node.clone(),
        local_only: q.scope.as_deref() == Some("local"),
        at: 0,
        skip: q.offset.unwrap_or(0),
        left: q.limit.unwrap_or(usize::MAX),
        opened: false,
        any: false,
        done: false,
    };
    let body = futures::stream::unfold(cursor, |mut c| async move {
        let chunk = c.next_chunk().await?;
        Some((chunk, c))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct CoverQuery {
    /// Longest side in pixels; the original when absent.
    size: Option<u32>,
}

async fn cover(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CoverQuery>,
) -> ApiResult<Response> {
    let cid: crate::model::CoverId = parse_id(&id, "cover")?;
    let c = s
        .node
        .cover(cid, q.size)
        .await?
        .ok_or_else(|| not_found("cover", &id))?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, c.mime)
        .header(
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        )
        .body(Body::from(c.data))
        .unwrap_or_default())
}
