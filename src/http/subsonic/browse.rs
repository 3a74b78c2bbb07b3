//! Browsing: folders, artists, albums, songs, lists, genres, search, and
//! the objects the spec defines for them (`Child`, `AlbumID3`,
//! `ArtistID3`), built from the catalog and the owner's shared state.

use super::ids::{self, Id};
use super::response::Elem;
use super::{Ctx, Failure, Reply};
use crate::catalog::{AlbumInfo, AlbumSort, ArtistId, ArtistInfo, CatalogTrack, Page};
use crate::model::time::rfc3339;
use crate::node::{LibraryTrack, Mine, Node};
use crate::userdata::Item;

/// Largest page a list may ask for.
const MAX_PAGE: usize = 500;

/// Extensions we implement (`getOpenSubsonicExtensions`).
pub(super) fn extensions() -> Vec<Elem> {
    [
        "formPost",
        "apiKeyAuthentication",
        "transcodeOffset",
        "songLyrics",
    ]
    .into_iter()
    .map(|n| Elem::new().attr("name", n).ints("versions", vec![1]))
    .collect()
}

/// What the file's container is called as a suffix.
pub(super) fn suffix(t: &crate::model::Track) -> &'static str {
    match (t.audio.container.as_str(), t.audio.codec.as_str()) {
        (_, "mp3") => "mp3",
        (_, "flac") => "flac",
        (_, "opus") => "opus",
        (_, "vorbis") => "ogg",
        (_, "aac") | (_, "alac") => "m4a",
        ("wav", _) => "wav",
        ("aiff", _) => "aiff",
        ("caf", _) => "caf",
        _ => "bin",
    }
}

/// The content type of the original file.
pub(super) fn mime(t: &crate::model::Track) -> &'static str {
    match suffix(t) {
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "opus" => "audio/ogg; codecs=opus",
        "ogg" => "audio/ogg",
        "m4a" => "audio/mp4",
        "wav" => "audio/wav",
        "aiff" => "audio/aiff",
        _ => "application/octet-stream",
    }
}

fn mine_attrs(e: Elem, m: &Mine) -> Elem {
    e.opt("starred", m.starred_at.map(|ms| rfc3339(ms as i64)))
        .opt("userRating", (m.rating > 0).then_some(m.rating))
}

/// A song as the spec's `Child`. No file-system path leaves: `path` is
/// made from the tags, as the apps show it.
pub(super) fn song(t: &LibraryTrack) -> Elem {
    let (g, a) = (&t.track.tags, &t.track.audio);
    let artist = g.artist();
    let owner = g.album_owner();
    let suffix = suffix(&t.track);
    let path = format!(
        "{}/{}/{}{}.{suffix}",
        if owner.is_empty() {
            "Unknown Artist"
        } else {
            &owner
        },
        if g.album.is_empty() {
            "Unknown Album"
        } else {
            &g.album
        },
        g.track.map(|n| format!("{n:02} ")).unwrap_or_default(),
        g.title
    );
    let e = Elem::new()
        .attr("id", t.track.id.to_hex())
        .opt("parent", t.album.map(|a| ids::album(&a)))
        .attr("isDir", false)
        .attr("title", g.title.as_str())
        .attr("album", g.album.as_str())
        .attr("artist", artist.as_str())
        .opt("track", g.track)
        .opt("year", g.year)
        .opt("genre", g.genres.first().cloned())
        .opt("coverArt", t.track.cover.map(|c| ids::cover(&c)))
        .attr("size", t.track.size)
        .attr("contentType", mime(&t.track))
        .attr("suffix", suffix)
        .attr("duration", a.duration_ms / 1000)
        .opt("bitRate", a.bitrate_kbps)
        .attr("path", path)
        .attr("isVideo", false)
        .attr("playCount", t.mine.plays.count)
        .opt("discNumber", g.disc)
        .opt("albumId", t.album.map(|a| ids::album(&a)))
        .attr("artistId", ids::artist(&ArtistId::of(&artist)))
        .attr("type", "music")
        .attr("mediaType", "song")
        .opt("bitDepth", a.bit_depth)
        .attr("samplingRate", a.sample_rate)
        .attr("channelCount", a.channels)
        .opt(
            "played",
            (t.mine.plays.count > 0).then(|| rfc3339(t.mine.plays.last_ms)),
        )
        .attr("online", t.sources.iter().any(|s| s.online))
        .list(
            "genres",
            g.genres
                .iter()
                .map(|n| Elem::new().attr("name", n.as_str()))
                .collect(),
        );
    mine_attrs(e, &t.mine)
}

/// An album as the spec's `AlbumID3` (its songs added by the caller).
pub(super) fn album(node: &Node, a: &AlbumInfo) -> Elem {
    let m = node.mine(&Item::Album(a.id));
    let e = Elem::new()
        .attr("id", ids::album(&a.id))
        .attr("name", a.name.as_str())
        .attr("title", a.name.as_str())
        .attr("album", a.name.as_str())
        .attr("artist", a.artist.as_str())
        .attr("artistId", ids::artist(&a.artist_id))
        .opt("coverArt", a.cover.map(|c| ids::cover(&c)))
        .attr("songCount", a.tracks)
        .attr("duration", a.duration_ms / 1000)
        .attr("created", rfc3339(a.added_ms as i64))
        .opt("year", a.year)
        .opt("genre", a.genres.first().cloned())
        .attr("isDir", true)
        .attr("parent", ids::artist(&a.artist_id))
        .attr("mediaType", "album")
        .list(
            "genres",
            a.genres
                .iter()
                .map(|n| Elem::new().attr("name", n.as_str()))
                .collect(),
        );
    mine_attrs(e, &m)
}

/// An artist as the spec's `ArtistID3`.
pub(super) fn artist(node: &Node, a: &ArtistInfo) -> Elem {
    let m = node.mine(&Item::Artist(a.id));
    let e = Elem::new()
        .attr("id", ids::artist(&a.id))
        .attr(
            "name",
            if a.name.is_empty() {
                "[Unknown Artist]"
            } else {
                a.name.as_str()
            },
        )
        .attr("albumCount", a.albums)
        .attr("coverArt", ids::artist(&a.id));
    mine_attrs(e, &m)
}

/// Label catalog tracks (records from the index, off the runtime).
pub(super) async fn songs(node: &Node, tracks: Vec<CatalogTrack>) -> Result<Vec<Elem>, Failure> {
    Ok(node.label(tracks).await?.iter().map(song).collect())
}

fn all_artists(node: &Node) -> Vec<ArtistInfo> {
    node.catalog()
        .artists(Page {
            offset: 0,
            limit: usize::MAX,
        })
        .items
}

/// `getUser`: every account may stream, download, rate, make playlists.
pub(super) fn user(c: &Ctx) -> Result<Reply, Failure> {
    let name = c.p.get("username").unwrap_or(c.user.as_str());
    if name != c.user.as_str() {
        return Err(Failure::new(50, "you may only ask about your own account"));
    }
    let u = Elem::new()
        .attr("username", name)
        .attr("scrobblingEnabled", true)
        .attr("adminRole", false)
        .attr("settingsRole", false)
        .attr("downloadRole", true)
        .attr("uploadRole", false)
        .attr("playlistRole", true)
        .attr("coverArtRole", true)
        .attr("commentRole", false)
        .attr("podcastRole", false)
        .attr("streamRole", true)
        .attr("jukeboxRole", false)
        .attr("shareRole", false)
        .attr("videoConversionRole", false)
        .ints("folder", vec![i64::from(ids::FOLDER)]);
    Ok(Reply::Doc(vec![("user", u)]))
}

/// `getMusicFolders`: one, the merged library of every device.
pub(super) fn music_folders() -> Reply {
    let f = Elem::new().attr("id", ids::FOLDER).attr("name", "Music");
    Reply::Doc(vec![(
        "musicFolders",
        Elem::new().list("musicFolder", vec![f]),
    )])
}

/// `getScanStatus` / `startScan`: the home watches its folders itself.
pub(super) fn scan_status(c: &Ctx) -> Reply {
    let n = c.s.node.catalog().len();
    Reply::Doc(vec![(
        "scanStatus",
        Elem::new().attr("scanning", false).attr("count", n),
    )])
}

/// The index letter of a name: its first letter, folded; `#` otherwise.
fn letter(name: &str) -> String {
    let key = crate::catalog::sort_key(name);
    match key.chars().next() {
        Some(c) if c.is_alphabetic() => c.to_uppercase().collect(),
        _ => "#".into(),
    }
}

/// `getArtists` (ID3) and `getIndexes` (folders: the same artists).
pub(super) fn artists(c: &Ctx, name: &str) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let mut index: Vec<(String, Vec<Elem>)> = Vec::new();
    for a in all_artists(node) {
        let l = letter(&a.name);
        match index.last_mut() {
            Some((k, v)) if *k == l => v.push(artist(node, &a)),
            _ => index.push((l, vec![artist(node, &a)])),
        }
    }
    let body = Elem::new()
        .attr("ignoredArticles", "The El La Los Las Le Les")
        .list(
            "index",
            index
                .into_iter()
                .map(|(l, v)| Elem::new().attr("name", l).list("artist", v))
                .collect(),
        );
    let body = if name == "getIndexes" {
        body.attr("lastModified", 0u64)
    } else {
        body
    };
    Ok(Reply::Doc(vec![(
        if name == "getIndexes" {
            "indexes"
        } else {
            "artists"
        },
        body,
    )]))
}

fn need_id(c: &Ctx) -> Result<Id, Failure> {
    let id = c.p.need("id")?;
    ids::parse(id).ok_or_else(|| Failure::not_found(format!("{id:?}")))
}

/// `getArtist`: the artist and its albums.
pub(super) async fn artist_page(c: &Ctx) -> Result<Reply, Failure> {
    let Id::Artist(a) = need_id(c)? else {
        return Err(Failure::not_found("that artist"));
    };
    let node = &c.s.node;
    let (info, albums) = node
        .catalog()
        .artist(&a)
        .ok_or_else(|| Failure::not_found("that artist"))?;
    let e = artist(node, &info).list("album", albums.iter().map(|al| album(node, al)).collect());
    Ok(Reply::Doc(vec![("artist", e)]))
}

/// `getAlbum`: the album and its songs in disc/track order.
pub(super) async fn album_page(c: &Ctx) -> Result<Reply, Failure> {
    let Id::Album(a) = need_id(c)? else {
        return Err(Failure::not_found("that album"));
    };
    let node = &c.s.node;
    let (info, tracks) = node
        .catalog()
        .album(&a)
        .ok_or_else(|| Failure::not_found("that album"))?;
    let e = album(node, &info).list("song", songs(node, tracks).await?);
    Ok(Reply::Doc(vec![("album", e)]))
}

/// The song the request's `id` names, labelled (its record read).
pub(super) async fn song_of(c: &Ctx) -> Result<LibraryTrack, Failure> {
    let Id::Song(t) = need_id(c)? else {
        return Err(Failure::not_found("that song"));
    };
    let node = &c.s.node;
    let ct = node
        .catalog()
        .track(&t)
        .ok_or_else(|| Failure::not_found("that song"))?;
    node.label(vec![ct])
        .await?
        .pop()
        .ok_or_else(|| Failure::not_found("that song"))
}

/// `getSong`.
pub(super) async fn song_page(c: &Ctx) -> Result<Reply, Failure> {
    Ok(Reply::Doc(vec![("song", song(&song_of(c).await?))]))
}

/// `getMusicDirectory`: the folder view (artist → albums → songs).
pub(super) async fn directory(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let dir = match need_id(c)? {
        Id::Artist(a) => {
            let (info, albums) = node
                .catalog()
                .artist(&a)
                .ok_or_else(|| Failure::not_found("that folder"))?;
            Elem::new()
                .attr("id", ids::artist(&a))
                .attr("name", info.name.as_str())
                .attr("parent", ids::FOLDER.to_string())
                .list("child", albums.iter().map(|al| album(node, al)).collect())
        }
        Id::Album(a) => {
            let (info, tracks) = node
                .catalog()
                .album(&a)
                .ok_or_else(|| Failure::not_found("that folder"))?;
            Elem::new()
                .attr("id", ids::album(&a))
                .attr("name", info.name.as_str())
                .attr("parent", ids::artist(&info.artist_id))
                .list("child", songs(node, tracks).await?)
        }
        _ => return Err(Failure::not_found("that folder")),
    };
    Ok(Reply::Doc(vec![("directory", dir)]))
}

/// `getTopSongs` (`artist` by name, `count`): the artist's most played
/// songs here (the shared state's play counts; no online charts).
pub(super) async fn top_songs(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let artist = crate::index::search::normalize(c.p.need("artist")?);
    let count = c.p.num("count", 50usize)?.min(MAX_PAGE);
    let most = node.user_state(|v| v.most_played(usize::MAX));
    let held: Vec<CatalogTrack> = most
        .iter()
        .filter_map(|(t, _)| node.catalog().track(t))
        .collect();
    let list: Vec<Elem> = node
        .label(held)
        .await?
        .iter()
        .filter(|t| crate::index::search::normalize(&t.track.tags.artist()) == artist)
        .take(count)
        .map(song)
        .collect();
    Ok(Reply::Doc(vec![(
        "topSongs",
        Elem::new().list("song", list),
    )]))
}

/// `getSimilarSongs[2]`: none (no online lookups).
pub(super) fn similar(name: &str) -> Reply {
    let tag = if name == "getSimilarSongs2" {
        "similarSongs2"
    } else {
        "similarSongs"
    };
    Reply::Doc(vec![(tag, Elem::new().list("song", vec![]))])
}

/// `getArtistInfo[2]`: what is known here (nothing is looked up online).
pub(super) fn artist_info(name: &str) -> Reply {
    let tag = if name == "getArtistInfo2" {
        "artistInfo2"
    } else {
        "artistInfo"
    };
    Reply::Doc(vec![(
        tag,
        Elem::new()
            .attr("biography", "")
            .list("similarArtist", vec![]),
    )])
}

/// `getAlbumInfo[2]`.
pub(super) fn album_info() -> Reply {
    Reply::Doc(vec![("albumInfo", Elem::new().attr("notes", ""))])
}

/// Every album, for lists that need them all (genres, random).
fn all_albums(node: &Node, sort: AlbumSort) -> Vec<AlbumInfo> {
    node.catalog()
        .albums(
            sort,
            Page {
                offset: 0,
                limit: usize::MAX,
            },
        )
        .items
}

/// `getGenres`: from the albums' genres (song and album counts).
pub(super) fn genres(c: &Ctx) -> Result<Reply, Failure> {
    let mut g: std::collections::BTreeMap<String, (String, usize, usize)> = Default::default();
    for a in all_albums(&c.s.node, AlbumSort::Name) {
        for name in &a.genres {
            let e = g.entry(name.to_lowercase()).or_insert((name.clone(), 0, 0));
            e.1 += a.tracks;
            e.2 += 1;
        }
    }
    let list = g
        .into_values()
        .map(|(name, songs, albums)| {
            Elem::new()
                .attr("songCount", songs)
                .attr("albumCount", albums)
                .text(name)
        })
        .collect();
    Ok(Reply::Doc(vec![(
        "genres",
        Elem::new().list("genre", list),
    )]))
}

fn page(c: &Ctx, size: &str, offset: &str, default: usize) -> Result<Page, Failure> {
    Ok(Page {
        offset: c.p.num(offset, 0usize)?,
        limit: c.p.num(size, default)?.min(MAX_PAGE),
    })
}

/// A small deterministic shuffle (xorshift over a time seed): random
/// lists need no cryptographic randomness.
fn shuffle<T>(v: &mut [T]) {
    let mut x = std::time::UNIX_EPOCH
        .elapsed()
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// `getAlbumList` / `getAlbumList2`, every type.
pub(super) async fn album_list(c: &Ctx, name: &str) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let kind = c.p.need("type")?;
    let pg = page(c, "size", "offset", 10)?;
    let mut albums: Vec<AlbumInfo> = match kind {
        "alphabeticalByName" => node.catalog().albums(AlbumSort::Name, pg).items,
        "alphabeticalByArtist" => node.catalog().albums(AlbumSort::Artist, pg).items,
        "newest" => node.catalog().albums(AlbumSort::Added, pg).items,
        "random" => {
            let mut all = all_albums(node, AlbumSort::Name);
            shuffle(&mut all);
            all.truncate(pg.limit);
            all
        }
        "byYear" => {
            let (from, to): (u32, u32) = (c.p.num("fromYear", 0)?, c.p.num("toYear", 9999)?);
            let (lo, hi) = (from.min(to), from.max(to));
            let mut v: Vec<AlbumInfo> = all_albums(node, AlbumSort::Year)
                .into_iter()
                .filter(|a| a.year.is_some_and(|y| (lo..=hi).contains(&y)))
                .collect();
            if from > to {
                v.reverse();
            }
            v.into_iter().skip(pg.offset).take(pg.limit).collect()
        }
        "byGenre" => {
            let genre = c.p.need("genre")?.to_lowercase();
            all_albums(node, AlbumSort::Name)
                .into_iter()
                .filter(|a| a.genres.iter().any(|g| g.to_lowercase() == genre))
                .skip(pg.offset)
                .take(pg.limit)
                .collect()
        }
        "starred" | "highest" | "frequent" | "recent" => {
            let all = all_albums(node, AlbumSort::Name);
            let key = |a: &AlbumInfo| -> Option<i128> {
                let m = node.mine(&Item::Album(a.id));
                match kind {
                    "starred" => m.starred_at.map(|t| t as i128),
                    "highest" => (m.rating > 0).then_some(m.rating as i128),
                    _ => None,
                }
            };
            let mut keyed: Vec<(i128, AlbumInfo)> = if kind == "frequent" || kind == "recent" {
                album_plays(node, all, kind == "recent")
            } else {
                all.into_iter()
                    .filter_map(|a| Some((key(&a)?, a)))
                    .collect()
            };
            keyed.sort_by_key(|k| std::cmp::Reverse(k.0));
            keyed
                .into_iter()
                .skip(pg.offset)
                .take(pg.limit)
                .map(|(_, a)| a)
                .collect()
        }
        other => return Err(Failure::new(0, format!("unknown list type {other:?}"))),
    };
    if kind == "random" {
        albums.truncate(pg.limit);
    }
    let list = albums.iter().map(|a| album(node, a)).collect();
    let tag = if name == "getAlbumList2" {
        "albumList2"
    } else {
        "albumList"
    };
    Ok(Reply::Doc(vec![(tag, Elem::new().list("album", list))]))
}

/// Albums by their plays: counts (`frequent`) or the latest play
/// (`recent`), from the shared state's play totals per track.
fn album_plays(node: &Node, all: Vec<AlbumInfo>, recent: bool) -> Vec<(i128, AlbumInfo)> {
    let by_album: std::collections::HashMap<crate::catalog::AlbumId, (u64, i64)> =
        node.user_state(|v| {
            let mut m = std::collections::HashMap::new();
            for (t, s) in v.most_played(usize::MAX) {
                if let Some(a) = node.catalog().track(&t).and_then(|ct| ct.album) {
                    let e = m.entry(a).or_insert((0u64, i64::MIN));
                    e.0 += s.count;
                    e.1 = e.1.max(s.last_ms);
                }
            }
            m
        });
    all.into_iter()
        .filter_map(|a| {
            let (n, last) = by_album.get(&a.id)?;
            Some((if recent { *last as i128 } else { *n as i128 }, a))
        })
        .collect()
}

/// `getRandomSongs` (`size`, `genre`, `fromYear`, `toYear`).
pub(super) async fn random_songs(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let size = c.p.num("size", 10usize)?.min(MAX_PAGE);
    let genre = c.p.get("genre").map(str::to_lowercase);
    let (from, to): (u32, u32) = (c.p.num("fromYear", 0)?, c.p.num("toYear", 9999)?);
    let mut albums: Vec<AlbumInfo> = all_albums(node, AlbumSort::Name)
        .into_iter()
        .filter(|a| {
            genre
                .as_ref()
                .is_none_or(|g| a.genres.iter().any(|x| x.to_lowercase() == *g))
        })
        .filter(|a| {
            (c.p.get("fromYear").is_none() && c.p.get("toYear").is_none())
                || a.year.is_some_and(|y| y >= from && y <= to)
        })
        .collect();
    shuffle(&mut albums);
    let mut picked: Vec<CatalogTrack> = Vec::new();
    for a in albums {
        if picked.len() >= size * 4 {
            break;
        }
        if let Some((_, tracks)) = node.catalog().album(&a.id) {
            picked.extend(tracks);
        }
    }
    shuffle(&mut picked);
    picked.truncate(size);
    Ok(Reply::Doc(vec![(
        "randomSongs",
        Elem::new().list("song", songs(node, picked).await?),
    )]))
}

/// `getSongsByGenre` (`genre`, `count`, `offset`).
pub(super) async fn songs_by_genre(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let genre = c.p.need("genre")?.to_lowercase();
    let pg = page(c, "count", "offset", 10)?;
    let mut out: Vec<CatalogTrack> = Vec::new();
    for a in all_albums(node, AlbumSort::Name)
        .into_iter()
        .filter(|a| a.genres.iter().any(|g| g.to_lowercase() == genre))
    {
        if let Some((_, tracks)) = node.catalog().album(&a.id) {
            out.extend(tracks);
        }
        if out.len() >= pg.offset + pg.limit {
            break;
        }
    }
    let picked: Vec<CatalogTrack> = out.into_iter().skip(pg.offset).take(pg.limit).collect();
    // Album genres are a union: keep the songs tagged with it.
    let labelled = node.label(picked).await?;
    let list = labelled
        .iter()
        .filter(|t| {
            t.track
                .tags
                .genres
                .iter()
                .any(|g| g.to_lowercase() == genre)
        })
        .map(song)
        .collect();
    Ok(Reply::Doc(vec![(
        "songsByGenre",
        Elem::new().list("song", list),
    )]))
}

/// `search2` / `search3`: every word must match (case and accents
/// ignored); an empty query lists everything, paged (clients sync the
/// whole library this way).
pub(super) async fn search(c: &Ctx, name: &str) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let q =
        c.p.get("query")
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .trim();
    let ar = page(c, "artistCount", "artistOffset", 20)?;
    let al = page(c, "albumCount", "albumOffset", 20)?;
    let so = page(c, "songCount", "songOffset", 20)?;
    let (artists, albums, tracks) = if q.is_empty() || q == "*" {
        let cat = node.catalog();
        (
            cat.artists(ar).items,
            cat.albums(AlbumSort::Name, al).items,
            cat.tracks(so).items,
        )
    } else {
        let most = (ar.offset + ar.limit)
            .max(al.offset + al.limit)
            .max(so.offset + so.limit);
        let f = node.catalog().search(q, most);
        (
            f.artists
                .into_iter()
                .skip(ar.offset)
                .take(ar.limit)
                .collect(),
            f.albums
                .into_iter()
                .skip(al.offset)
                .take(al.limit)
                .collect(),
            f.tracks
                .into_iter()
                .skip(so.offset)
                .take(so.limit)
                .collect(),
        )
    };
    let body = Elem::new()
        .list("artist", artists.iter().map(|a| artist(node, a)).collect())
        .list("album", albums.iter().map(|a| album(node, a)).collect())
        .list("song", songs(node, tracks).await?);
    Ok(Reply::Doc(vec![(
        if name == "search3" {
            "searchResult3"
        } else {
            "searchResult2"
        },
        body,
    )]))
}
