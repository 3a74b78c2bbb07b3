//! kill -9 at arbitrary moments of a scan, then restart: the index is
//! consistent right away (every update is one atomic batch), and a rescan
//! ends exactly where a clean scan of the same files ends.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

fn tracks_and_paths(tm: &Tm) -> Vec<(String, Vec<String>)> {
    let mut v: Vec<(String, Vec<String>)> = tm
        .ls()
        .iter()
        .map(|t| {
            let paths = t["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect();
            (t["id"].as_str().unwrap().to_owned(), paths)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kill_during_scan_then_rescan_is_consistent() {
    let lib = tempfile::tempdir().unwrap();
    let template = fixtures().join("Alpha Artist/First Album/01 - Opening.mp3");
    tunemesh::library::generate::generate(&template, lib.path(), 4000, 7).unwrap();
    // Some duplicates and junk so the crash can land on every kind of update.
    std::fs::write(lib.path().join("junk.mp3"), b"not audio").unwrap();
    std::fs::copy(&template, lib.path().join("dup-a.mp3")).unwrap();
    std::fs::copy(&template, lib.path().join("dup-b.mp3")).unwrap();

    let tm = Tm::new();
    let lib_s = lib.path().to_str().unwrap();
    // Kill at spread-out moments: early (walk), middle, late (commit, gc).
    // Odd rounds force a full re-read, so every round has work to be
    // interrupted in (and re-attaching known content gets crashed too).
    for (round, delay_ms) in [40u64, 120, 250, 400, 600, 900, 1300]
        .into_iter()
        .enumerate()
    {
        let force = if round % 2 == 1 { "--force" } else { "--quiet" };
        let mut child = tm
            .cmd()
            .args(["scan", lib_s, "--json", "--quiet", force])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Right after the crash, before any rescan: already consistent.
        let v = tm.json(&["status", "--json", "--verify"]);
        assert_eq!(
            v["problems"],
            serde_json::json!([]),
            "after kill #{round} at {delay_ms} ms: {v}"
        );
        // Delete a file between crashes so removals are exercised too.
        if round == 2 {
            std::fs::remove_file(lib.path().join("dup-b.mp3")).unwrap();
        }
    }
    let r = tm.json(&["scan", "--json", "--quiet"]);
    assert_eq!(r["files"], 4001, "{r}");
    tm.verify();

    let clean = Tm::new();
    clean.json(&["scan", lib_s, "--json", "--quiet"]);
    assert_eq!(tracks_and_paths(&tm), tracks_and_paths(&clean));
    assert_eq!(tm.root(), clean.root());
    let counts = |t: &Tm| t.json(&["status", "--json"])["counts"].clone();
    assert_eq!(counts(&tm), counts(&clean));
}
