//! The shared corpus (`../shared/corpus`, present in CI): every playable file
//! is indexed with the title, artist, album, track and duration an
//! independent reader (ffprobe, recorded in MANIFEST.json) sees, and every
//! file of `broken/` is a per-file error, without stopping the scan.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn corpus() -> Option<PathBuf> {
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if c.join("MANIFEST.json").exists() {
        Some(c.canonicalize().unwrap())
    } else {
        eprintln!("SKIPPED corpus test: ../shared/corpus/MANIFEST.json not found (CI has it)");
        None
    }
}

/// ffprobe joins repeated Vorbis fields with ';' and keeps "n/total".
fn parts(s: &str) -> Vec<String> {
    s.split(';').map(|p| p.trim().to_owned()).collect()
}

#[test]
fn corpus_matches_manifest_and_broken_files_are_errors() {
    let Some(corpus) = corpus() else { return };
    let manifest: HashMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("MANIFEST.json")).unwrap())
            .unwrap();
    let tm = Tm::new();
    let report = tm.scan(&corpus);
    let ls = tm.ls();
    let mut by_path: HashMap<String, &Value> = HashMap::new();
    for t in &ls {
        for p in t["paths"].as_array().unwrap() {
            let rel = Path::new(p.as_str().unwrap())
                .strip_prefix(&corpus)
                .unwrap();
            by_path.insert(rel.to_string_lossy().into_owned(), t);
        }
    }
    let errors: HashMap<String, String> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let rel = Path::new(e["path"].as_str().unwrap())
                .strip_prefix(&corpus)
                .unwrap();
            (
                rel.to_string_lossy().into_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    let mut checked = 0;
    for (rel, m) in &manifest {
        if rel.starts_with("broken/") {
            let e = errors
                .get(rel)
                .unwrap_or_else(|| panic!("{rel}: no error reported"));
            assert!(e.len() > 10, "{rel}: unhelpful error {e:?}");
            assert!(!by_path.contains_key(rel), "{rel} was indexed");
            continue;
        }
        let t = by_path
            .get(rel)
            .unwrap_or_else(|| panic!("{rel} not indexed; errors: {errors:?}"));
        assert_eq!(
            t["id"], m["blake3"],
            "{rel}: track id is the blake3 of the file"
        );
        let tags = &m["tags"];
        for (mk, ok) in [("title", "title"), ("artist", "artist"), ("album", "album")] {
            if let Some(want) = tags[mk].as_str() {
                assert_eq!(parts(t[ok].as_str().unwrap()), parts(want), "{rel}: {mk}");
            }
        }
        if let Some(want) = tags["track"].as_str() {
            let first: u64 = parts(want)[0].split('/').next().unwrap().parse().unwrap();
            assert_eq!(t["track"].as_u64(), Some(first), "{rel}: track");
        }
        let want_ms = m["duration_s"].as_f64().unwrap() * 1000.0;
        let got_ms = t["duration_ms"].as_f64().unwrap();
        assert!(
            (got_ms - want_ms).abs() <= 50.0,
            "{rel}: duration {got_ms} ms, ffprobe {want_ms} ms"
        );
        assert_eq!(t["sample_rate"], m["sample_rate"], "{rel}: sample rate");
        assert_eq!(t["channels"], m["channels"], "{rel}: channels");
        if m["has_cover"] == true {
            assert!(t["cover"].is_string(), "{rel}: embedded cover not found");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} corpus files checked");
    tm.verify();
}
