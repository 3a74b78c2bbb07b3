//! The owner's shared state through Subsonic: stars, ratings, scrobbles,
//! playlists and the play queue (all the shared state's, so a star in DSub
//! on the phone shows in the web player at home).

use super::browse::{album, artist, songs};
use super::ids::{self, Id};
use super::response::Elem;
use super::{Ctx, Failure, Reply};
use crate::model::time::rfc3339;
use crate::model::TrackId;
use crate::userdata::{Item, Play, PlaylistView, Queue};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn song_id(s: &str) -> Result<TrackId, Failure> {
    match ids::parse(s) {
        Some(Id::Song(t)) => Ok(t),
        _ => Err(Failure::not_found(format!("song {s:?}"))),
    }
}

/// `getStarred` / `getStarred2`.
pub(super) async fn starred(c: &Ctx, name: &str) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let all = node.user_state(|v| v.starred());
    let (mut ar, mut al, mut tr) = (vec![], vec![], vec![]);
    for (item, _) in &all {
        match item {
            Item::Artist(a) => {
                if let Some((info, _)) = node.catalog().artist(a) {
                    ar.push(artist(node, &info));
                }
            }
            Item::Album(a) => {
                if let Some((info, _)) = node.catalog().album(a) {
                    al.push(album(node, &info));
                }
            }
            Item::Track(t) => tr.extend(node.catalog().track(t)),
        }
    }
    let body = Elem::new()
        .list("artist", ar)
        .list("album", al)
        .list("song", songs(node, tr).await?);
    Ok(Reply::Doc(vec![(
        if name == "getStarred2" {
            "starred2"
        } else {
            "starred"
        },
        body,
    )]))
}

/// The items a star/unstar names: `id` (songs, or any of our ids),
/// `albumId`, `artistId`, each repeatable.
fn items(c: &Ctx) -> Result<Vec<Item>, Failure> {
    let mut out = Vec::new();
    for key in ["id", "albumId", "artistId"] {
        for v in c.p.all(key) {
            out.push(match ids::parse(v) {
                Some(Id::Song(t)) => Item::Track(t),
                Some(Id::Album(a)) => Item::Album(a),
                Some(Id::Artist(a)) => Item::Artist(a),
                _ => return Err(Failure::not_found(format!("{v:?}"))),
            });
        }
    }
    if out.is_empty() {
        return Err(Failure::missing("id, albumId or artistId"));
    }
    if out.len() > 5000 {
        return Err(Failure::new(0, "at most 5000 items at once"));
    }
    Ok(out)
}

/// `star` / `unstar`.
pub(super) async fn star(c: &Ctx, on: bool) -> Result<Reply, Failure> {
    c.s.node.star(items(c)?, on).await?;
    Ok(Reply::Doc(vec![]))
}

/// `setRating`.
pub(super) async fn rate(c: &Ctx) -> Result<Reply, Failure> {
    let item = match ids::parse(c.p.need("id")?) {
        Some(Id::Song(t)) => Item::Track(t),
        Some(Id::Album(a)) => Item::Album(a),
        Some(Id::Artist(a)) => Item::Artist(a),
        _ => return Err(Failure::not_found("that item")),
    };
    let rating: u8 = c.p.num("rating", 255u8)?;
    if rating > 5 {
        return Err(Failure::new(0, "rating must be 0 to 5"));
    }
    c.s.node.rate(item, rating).await?;
    Ok(Reply::Doc(vec![]))
}

/// `scrobble`: submissions (the default) become plays with their `time`
/// (several `id`/`time` pairs in one call); "now playing" notices
/// (`submission=false`) are accepted and not counted.
pub(super) async fn scrobble(c: &Ctx) -> Result<Reply, Failure> {
    let ids_given = c.p.all("id");
    if ids_given.is_empty() {
        return Err(Failure::missing("id"));
    }
    if !c.p.flag("submission", true) {
        for id in &ids_given {
            song_id(id)?;
        }
        return Ok(Reply::Doc(vec![]));
    }
    let times = c.p.all("time");
    let now = now_ms();
    let mut plays = Vec::new();
    for (i, id) in ids_given.iter().enumerate() {
        let track = song_id(id)?;
        let started_ms = match times.get(i) {
            Some(t) => t
                .trim()
                .parse::<i64>()
                .map_err(|_| Failure::new(0, format!("time {t:?} is not a number")))?,
            None => now,
        };
        let ms_played =
            c.s.node
                .label(c.s.node.catalog().track(&track).into_iter().collect())
                .await?
                .first()
                .map_or(0, |t| {
                    u32::try_from(t.track.audio.duration_ms).unwrap_or(u32::MAX)
                });
        plays.push(Play {
            track,
            started_ms,
            ms_played,
        });
    }
    c.s.node.record_plays(plays).await?;
    Ok(Reply::Doc(vec![]))
}

fn playlist_elem(c: &Ctx, p: &PlaylistView, duration_s: u64) -> Elem {
    Elem::new()
        .attr("id", ids::playlist(&p.id))
        .attr("name", p.name.as_str())
        .attr("comment", p.comment.as_str())
        .attr("owner", c.user.as_str())
        .attr("public", false)
        .attr("songCount", p.entries.len())
        .attr("duration", duration_s)
        .attr("created", rfc3339(p.created_ms as i64))
        .attr("changed", rfc3339(p.changed_ms as i64))
        .list("allowedUser", vec![])
}

/// `getPlaylists`, each with its songs' total time (one pass over the
/// records of every song in any playlist).
pub(super) async fn playlists(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let lists = node.playlists();
    let mut ids: Vec<TrackId> = lists
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.track))
        .collect();
    ids.sort();
    ids.dedup();
    let held: Vec<_> = ids.iter().filter_map(|t| node.catalog().track(t)).collect();
    let secs: std::collections::HashMap<TrackId, u64> = node
        .label(held)
        .await?
        .iter()
        .map(|t| (t.track.id, t.track.audio.duration_ms / 1000))
        .collect();
    let list = lists
        .iter()
        .map(|p| {
            let d = p.entries.iter().filter_map(|e| secs.get(&e.track)).sum();
            playlist_elem(c, p, d)
        })
        .collect();
    Ok(Reply::Doc(vec![(
        "playlists",
        Elem::new().list("playlist", list),
    )]))
}

fn playlist_ref(s: &str) -> Result<String, Failure> {
    match ids::parse(s) {
        Some(Id::Playlist(p)) => Ok(p.to_string()),
        _ => Err(Failure::not_found(format!("playlist {s:?}"))),
    }
}

async fn playlist_doc(c: &Ctx, p: PlaylistView) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let held: Vec<_> = p
        .entries
        .iter()
        .filter_map(|e| node.catalog().track(&e.track))
        .collect();
    let labelled = node.label(held).await?;
    let by_id: std::collections::HashMap<TrackId, &crate::node::LibraryTrack> =
        labelled.iter().map(|t| (t.track.id, t)).collect();
    let entries: Vec<Elem> = p
        .entries
        .iter()
        .filter_map(|e| by_id.get(&e.track))
        .map(|t| super::browse::song(t))
        .collect();
    let secs = p
        .entries
        .iter()
        .filter_map(|e| by_id.get(&e.track))
        .map(|t| t.track.audio.duration_ms / 1000)
        .sum();
    Ok(Reply::Doc(vec![(
        "playlist",
        playlist_elem(c, &p, secs).list("entry", entries),
    )]))
}

/// `getPlaylist`.
pub(super) async fn playlist(c: &Ctx) -> Result<Reply, Failure> {
    let p = c.s.node.playlist(&playlist_ref(c.p.need("id")?)?)?;
    playlist_doc(c, p).await
}

/// `createPlaylist`: a new one (`name`, `songId`…), or with `playlistId`
/// the existing one made to hold exactly `songId`… in that order, by the
/// smallest change (entries kept where they can be, so edits made
/// elsewhere meanwhile survive).
pub(super) async fn create_playlist(c: &Ctx) -> Result<Reply, Failure> {
    let tracks: Vec<TrackId> =
        c.p.all("songId")
            .iter()
            .map(|s| song_id(s))
            .collect::<Result<_, _>>()?;
    let p = match c.p.get("playlistId") {
        Some(id) => {
            let r = playlist_ref(id)?;
            if let Some(name) = c.p.get("name") {
                c.s.node
                    .edit_playlist(&r, Some(name.to_string()), None)
                    .await?;
            }
            c.s.node.set_playlist_tracks(&r, tracks).await?
        }
        None => {
            let name = c.p.need("name")?;
            c.s.node.create_playlist(name, tracks).await?
        }
    };
    playlist_doc(c, p).await
}

/// `updatePlaylist`: name, comment, `songIdToAdd`… (appended) and
/// `songIndexToRemove`… (several at once, all against the playlist as it
/// was before this call).
pub(super) async fn update_playlist(c: &Ctx) -> Result<Reply, Failure> {
    let r = playlist_ref(c.p.need("playlistId")?)?;
    let node = &c.s.node;
    let before = node.playlist(&r)?;
    let (name, comment) = (
        c.p.get("name").map(str::to_string),
        c.p.get("comment").map(str::to_string),
    );
    if name.is_some() || comment.is_some() {
        node.edit_playlist(&r, name, comment).await?;
    }
    let mut entries = Vec::new();
    for i in c.p.all("songIndexToRemove") {
        let i: usize = i
            .trim()
            .parse()
            .map_err(|_| Failure::new(0, format!("songIndexToRemove {i:?} is not a number")))?;
        let e = before
            .entries
            .get(i)
            .ok_or_else(|| Failure::new(0, format!("no song at index {i}")))?;
        entries.push(e.id);
    }
    if !entries.is_empty() {
        node.remove_from_playlist(&r, &[], &entries).await?;
    }
    let add: Vec<TrackId> =
        c.p.all("songIdToAdd")
            .iter()
            .map(|s| song_id(s))
            .collect::<Result<_, _>>()?;
    if !add.is_empty() {
        node.add_to_playlist(&r, add, None).await?;
    }
    Ok(Reply::Doc(vec![]))
}

/// `deletePlaylist`.
pub(super) async fn delete_playlist(c: &Ctx) -> Result<Reply, Failure> {
    c.s.node
        .delete_playlist(&playlist_ref(c.p.need("id")?)?)
        .await?;
    Ok(Reply::Doc(vec![]))
}

/// `getPlayQueue`.
pub(super) async fn play_queue(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let Some((stamp, q)) = node.queue() else {
        // Never saved: an empty queue (clients read the element whatever).
        let e = Elem::new()
            .attr("position", 0u64)
            .attr("username", c.user.as_str())
            .attr("changed", rfc3339(0))
            .attr("changedBy", "")
            .list("entry", vec![]);
        return Ok(Reply::Doc(vec![("playQueue", e)]));
    };
    let held: Vec<_> = q
        .tracks
        .iter()
        .filter_map(|t| node.catalog().track(t))
        .collect();
    let names: std::collections::HashMap<String, String> = node
        .devices()
        .into_iter()
        .map(|d| (d.id.to_string(), d.name))
        .collect();
    let by = stamp.device.to_string();
    let e = Elem::new()
        .opt(
            "current",
            q.tracks.get(q.current as usize).map(|t| t.to_hex()),
        )
        .attr("position", q.position_ms)
        .attr("username", c.user.as_str())
        .attr("changed", rfc3339(stamp.at.ms() as i64))
        .attr("changedBy", names.get(&by).cloned().unwrap_or(by))
        .list("entry", songs(node, held).await?);
    Ok(Reply::Doc(vec![("playQueue", e)]))
}

/// `savePlayQueue` (`id`…, `current`, `position`); no `id` clears it.
pub(super) async fn save_play_queue(c: &Ctx) -> Result<Reply, Failure> {
    let tracks: Vec<TrackId> =
        c.p.all("id")
            .iter()
            .map(|s| song_id(s))
            .collect::<Result<_, _>>()?;
    let current = match c.p.get("current") {
        Some(cur) => {
            let t = song_id(cur)?;
            tracks
                .iter()
                .position(|x| *x == t)
                .ok_or_else(|| Failure::new(0, "current is not in the queue"))?
        }
        None => 0,
    };
    let position_ms: u64 = c.p.num("position", 0u64)?;
    c.s.node
        .set_queue(Queue {
            tracks,
            current: u32::try_from(current).unwrap_or(0),
            position_ms,
        })
        .await?;
    Ok(Reply::Doc(vec![]))
}
