//! The owner's shared state from the command line: `star`, `unstar`,
//! `starred`, `rate`, `plays [add]`, `playlist …`. Every command asks the
//! running node (which spreads the change to the other devices) and prints
//! text, or with `--json` the API's own JSON.

use super::args::{ItemsArgs, JsonArgs, PlaylistCommand, PlaysArgs, PlaysCommand, RateArgs};
use super::output::{fmt_duration, print_json};
use super::remote::ApiClient;
use anyhow::Result;
use std::path::Path;
use tunemesh::http::dto::{
    AddEntries, CreatePlaylist, EditPlaylist, ItemsChanged, MoveEntry, PlayRequest, PlaylistPage,
    PlaylistSummary, PlaysView, RateRequest, RemoveEntries, StarRequest, StarredView, TrackView,
};

/// Star or unstar.
#[derive(Clone, Copy)]
pub enum Starring {
    /// `tunemesh star`.
    Star,
    /// `tunemesh unstar`.
    Unstar,
}

fn changed(c: &ItemsChanged, json: bool, verb: &str) -> Result<()> {
    if json {
        return print_json(c);
    }
    for i in &c.items {
        println!("{verb} {i}");
    }
    Ok(())
}

/// `tunemesh star` / `unstar`.
pub fn star(dir: &Path, a: ItemsArgs, how: Starring) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let (path, verb) = match how {
        Starring::Star => ("/api/star", "starred"),
        Starring::Unstar => ("/api/unstar", "unstarred"),
    };
    let c: ItemsChanged = api.post(path, Some(&StarRequest { ids: a.ids }))?;
    changed(&c, a.json, verb)
}

fn who(t: &TrackView) -> String {
    let artist = if t.artist.is_empty() {
        "Unknown Artist"
    } else {
        &t.artist
    };
    format!("{artist} — {}", t.title)
}

/// `tunemesh starred`.
pub fn starred(dir: &Path, a: JsonArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let v: StarredView = api.get("/api/starred", &[])?;
    if a.json {
        return print_json(&v);
    }
    for t in &v.tracks {
        let at = t
            .starred_at_ms
            .map(|ms| utc_text(ms as i64))
            .unwrap_or_default();
        println!("{at}  track   {}  {}", &t.id.to_hex()[..12], who(t));
    }
    for al in &v.albums {
        let at = al
            .starred_at_ms
            .map(|ms| utc_text(ms as i64))
            .unwrap_or_default();
        println!(
            "{at}  album   {}  {} — {}",
            &al.id.to_hex()[..12],
            al.artist,
            al.name
        );
    }
    for ar in &v.artists {
        let at = ar
            .starred_at_ms
            .map(|ms| utc_text(ms as i64))
            .unwrap_or_default();
        println!("{at}  artist  {}  {}", &ar.id.to_hex()[..12], ar.name);
    }
    for x in &v.absent {
        let at = x
            .starred_at_ms
            .map(|ms| utc_text(ms as i64))
            .unwrap_or_default();
        println!("{at}  {}  (no device holds it now)", x.item);
    }
    Ok(())
}

/// `tunemesh rate`.
pub fn rate(dir: &Path, a: RateArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let c: ItemsChanged = api.post(
        "/api/rate",
        Some(&RateRequest {
            id: a.id,
            rating: a.rating,
        }),
    )?;
    changed(&c, a.json, &format!("rated {}:", a.rating))
}

/// `tunemesh plays` and `plays add`.
pub fn plays(dir: &Path, a: PlaysArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    if let Some(PlaysCommand::Add(p)) = a.command {
        let started_at_ms = p.at.as_deref().map(parse_rfc3339).transpose()?;
        let c: ItemsChanged = api.post(
            "/api/plays",
            Some(&PlayRequest {
                id: p.id,
                started_at_ms,
                ms_played: p.ms,
            }),
        )?;
        return changed(&c, p.json, "play recorded:");
    }
    let v: PlaysView = api.get("/api/plays", &[("limit", a.limit.to_string())])?;
    if a.json {
        return print_json(&v);
    }
    println!("Most played ({} plays in all)", v.total);
    for m in &v.most {
        let name = m
            .track
            .as_ref()
            .map_or_else(|| "(no device holds it now)".into(), who);
        println!(
            "{:>5}×  {}  last {}  {}",
            m.count,
            &m.id.to_hex()[..12],
            utc_text(m.last_played_ms),
            name
        );
    }
    println!("\nRecently played");
    for r in &v.recent {
        let name = r
            .track
            .as_ref()
            .map_or_else(|| "(no device holds it now)".into(), who);
        println!(
            "{}  {}  {}",
            utc_text(r.started_ms),
            &r.id.to_hex()[..12],
            name
        );
    }
    Ok(())
}

fn print_playlist(p: &PlaylistPage, json: bool) -> Result<()> {
    if json {
        return print_json(p);
    }
    println!(
        "{}  ({} entries, {})  id {}",
        p.playlist.name,
        p.playlist.entry_count,
        fmt_duration(p.duration_ms),
        p.playlist.id
    );
    if !p.playlist.comment.is_empty() {
        println!("{}", p.playlist.comment);
    }
    for e in &p.entries {
        let name = e.track.as_ref().map_or_else(
            || "(no device holds it now)".into(),
            |t| format!("{}  [{}]", who(t), fmt_duration(t.duration_ms)),
        );
        println!("{:>4}. {}  {}", e.position, &e.id.to_hex()[..12], name);
    }
    Ok(())
}

fn enc(name: &str) -> String {
    // Path segment: everything but unreserved characters percent-encoded.
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `tunemesh playlist …`.
pub fn playlist(dir: &Path, c: PlaylistCommand) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let at = |name: &str, rest: &str| format!("/api/playlists/{}{rest}", enc(name));
    match c {
        PlaylistCommand::Ls(a) => {
            let v: Vec<PlaylistSummary> = api.get("/api/playlists", &[])?;
            if a.json {
                return print_json(&v);
            }
            for p in &v {
                println!("{:<32}  {:>5} entries  id {}", p.name, p.entry_count, p.id);
            }
            Ok(())
        }
        PlaylistCommand::Show(a) => print_playlist(&api.get(&at(&a.name, ""), &[])?, a.json),
        PlaylistCommand::Create(a) => {
            let body = CreatePlaylist {
                name: a.name,
                ids: a.ids,
            };
            print_playlist(&api.post("/api/playlists", Some(&body))?, a.json)
        }
        PlaylistCommand::Add(a) => {
            let body = AddEntries {
                ids: a.ids,
                at: a.at,
            };
            print_playlist(&api.post(&at(&a.name, "/entries"), Some(&body))?, a.json)
        }
        PlaylistCommand::Rm(a) => {
            let body = RemoveEntries {
                positions: a.positions,
                entries: vec![],
            };
            print_playlist(&api.post(&at(&a.name, "/remove"), Some(&body))?, a.json)
        }
        PlaylistCommand::Mv(a) => {
            let body = MoveEntry {
                from: Some(a.from),
                entry: None,
                to: a.to,
            };
            print_playlist(&api.post(&at(&a.name, "/move"), Some(&body))?, a.json)
        }
        PlaylistCommand::Rename(a) => {
            let body = EditPlaylist {
                name: Some(a.new_name),
                comment: None,
            };
            print_playlist(&api.patch(&at(&a.name, ""), &body)?, a.json)
        }
        PlaylistCommand::Delete(a) => {
            let p: PlaylistSummary = api.delete(&at(&a.name, ""))?;
            if a.json {
                return print_json(&p);
            }
            println!("deleted {} ({} entries)", p.name, p.entry_count);
            Ok(())
        }
    }
}

/// `--at`: an RFC 3339 time to UTC ms.
pub fn parse_rfc3339(s: &str) -> Result<i64> {
    Ok(tunemesh::model::time::parse_rfc3339(s)?)
}

/// UTC ms as `2026-12-04 09:30`.
pub fn utc_text(ms: i64) -> String {
    tunemesh::model::time::short(ms)
}
