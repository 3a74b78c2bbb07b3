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

// ----- RFC 3339 times, without a date crate -----------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-12-04T09:30:00Z`, `…T09:30:00.250+01:00`, to UTC ms.
pub fn parse_rfc3339(s: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("{s:?} is not an RFC 3339 time (e.g. 2026-12-04T09:30:00Z)");
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        let t = std::str::from_utf8(b.get(r).ok_or_else(bad)?).map_err(|_| bad())?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac = &s.trim()[start..i];
        let mut digits: String = frac.chars().take(3).collect();
        while digits.len() < 3 {
            digits.push('0');
        }
        ms = digits.parse::<i64>().map_err(|_| bad())?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let v = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return Err(bad()); // 31 February and the like
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    Ok(secs * 1000 + ms)
}

/// UTC ms as `2026-12-04 09:30`.
pub fn utc_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, (s / 60) % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2026-12-04T09:30:00Z").unwrap(),
            1_796_376_600_000
        );
        assert_eq!(
            parse_rfc3339("2026-12-04T10:30:00.25+01:00").unwrap(),
            1_796_376_600_250
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00-00:30").unwrap(),
            951_784_200_000
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-12-04",
            "2026-12-04T09:30:00",
            "2026-13-01T00:00:00Z",
            "x026-12-04T09:30:00Z",
            "2026-12-04T09:30:00+1:00",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert_eq!(utc_text(1_796_376_600_000), "2026-12-04 09:30");
        assert_eq!(utc_text(-1), "1969-12-31 23:59");
    }
}
