//! `tunemesh offline …`: the running node's offline mirror (pins, budget,
//! policy, status), through its API; text, or with `--json` the API's own
//! JSON.

use super::args::{OfflineAddArgs, OfflineCommand, OfflinePinArgs};
use super::output::print_json;
use super::remote::ApiClient;
use anyhow::Result;
use std::path::Path;
use tunemesh::http::dto::{BudgetRequest, OfflineStatusView, PinRequest, PinsView, PolicyRequest};

/// Bytes as people read them (binary units).
fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn request(p: &OfflinePinArgs, bitrate: Option<String>) -> PinRequest {
    PinRequest {
        kind: p.kind.clone(),
        id: p.id.clone(),
        bitrate,
    }
}

fn print_pins(v: &PinsView, json: bool) -> Result<()> {
    if json {
        return print_json(v);
    }
    if v.pins.is_empty() {
        println!("nothing pinned (tunemesh offline add album ID)");
    }
    for p in &v.pins {
        let what = if p.id.is_empty() {
            p.kind.clone()
        } else {
            format!("{} {}", p.kind, &p.id)
        };
        println!(
            "{what}  {}  [{}]  {}/{} tracks here",
            p.name, p.bitrate, p.done, p.tracks
        );
    }
    Ok(())
}

fn print_status(s: &OfflineStatusView, json: bool) -> Result<()> {
    if json {
        return print_json(s);
    }
    println!(
        "space:     {} used of {} (policy {})",
        size(s.used_bytes),
        size(s.budget_bytes),
        s.policy
    );
    println!(
        "tracks:    {} here, {} queued, {} being prepared, {} failed",
        s.tracks_done,
        s.tracks_queued,
        s.tracks_preparing,
        s.tracks_failed.len()
    );
    if s.short_bytes > 0 {
        println!(
            "budget:    {} tracks wait for space: the pins need {} more (tunemesh offline budget SIZE)",
            s.tracks_over_budget,
            size(s.short_bytes)
        );
    }
    if let Some(w) = &s.waiting {
        println!("now:       {w}");
    } else if s.done {
        println!("now:       done");
    }
    for d in &s.downloading {
        let pct = (d.have_bytes as f64 * 100.0 / d.len_bytes.max(1) as f64).round();
        println!(
            "  fetching {} [{}] {pct}% of {}",
            &d.track[..12],
            d.bitrate,
            size(d.len_bytes)
        );
    }
    for f in &s.tracks_failed {
        println!("  failed {} [{}]: {}", &f.track[..12], f.bitrate, f.reason);
    }
    Ok(())
}

/// `tunemesh offline …`.
pub fn offline(dir: &Path, c: OfflineCommand) -> Result<()> {
    let api = ApiClient::open(dir)?;
    match c {
        OfflineCommand::Add(OfflineAddArgs { pin, bitrate }) => {
            let v: PinsView = api.post("/api/offline/pins", Some(&request(&pin, Some(bitrate))))?;
            print_pins(&v, pin.json)
        }
        OfflineCommand::Rm(pin) => {
            let v: PinsView = api.post("/api/offline/pins/remove", Some(&request(&pin, None)))?;
            print_pins(&v, pin.json)
        }
        OfflineCommand::Ls(a) => print_pins(&api.get("/api/offline/pins", &[])?, a.json),
        OfflineCommand::Budget(a) => {
            let s: OfflineStatusView =
                api.put("/api/offline/budget", &BudgetRequest { budget: a.size })?;
            print_status(&s, a.json)
        }
        OfflineCommand::Policy(a) => {
            let s: OfflineStatusView =
                api.put("/api/offline/policy", &PolicyRequest { policy: a.policy })?;
            print_status(&s, a.json)
        }
        OfflineCommand::Status(a) => print_status(&api.get("/api/offline/status", &[])?, a.json),
    }
}
