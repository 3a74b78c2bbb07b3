//! `tunemesh watch`: changes in a library folder reach the index within
//! seconds, through the real binary and real filesystem events.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Watcher {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Watcher {
    fn start(tm: &Tm, dir: &std::path::Path) -> Watcher {
        let mut child = tm
            .cmd()
            .args([
                "watch",
                dir.to_str().unwrap(),
                "--json",
                "--debounce-ms",
                "200",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        // Let the watches be installed before changing anything.
        std::thread::sleep(Duration::from_millis(800));
        Watcher { child, lines }
    }

    /// Next rescan report satisfying `pred`, within 10 s.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        panic!("watch never reported: {what}");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scanned library holding the fixtures' "Alpha Artist", watched.
fn watched_library() -> (Tm, tempfile::TempDir, Watcher) {
    let tm = Tm::new();
    let lib = tempfile::tempdir().unwrap();
    copy_tree(
        &fixtures().join("Alpha Artist"),
        &lib.path().join("Alpha Artist"),
    );
    tm.scan(lib.path());
    let w = Watcher::start(&tm, lib.path());
    (tm, lib, w)
}

#[test]
fn watch_picks_up_new_changed_and_deleted_files() {
    let (tm, lib, w) = watched_library();

    // A new album folder appears (copied in, as a user would).
    copy_tree(&fixtures().join("Beta Band"), &lib.path().join("Beta Band"));
    let r = w.wait_for("5 added", |v| v["added"] == 5);
    assert_eq!(r["removed"], 0);

    // A file is deleted.
    std::fs::remove_file(lib.path().join("Beta Band/Lossless/02 Wave.wav")).unwrap();
    w.wait_for("1 removed", |v| v["removed"] == 1);

    // A file is rewritten in place (new content).
    let f = lib.path().join("Alpha Artist/First Album/02 - Sigur.flac");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&f, bytes).unwrap();
    w.wait_for("1 changed", |v| v["changed"] == 1);
    drop(w);

    let ls = tm.ls();
    assert_eq!(ls.len(), 7, "{ls:#?}");
    assert!(ls.iter().all(|t| t["title"] != "Wave Form"));
    tm.verify();
}

#[test]
fn reading_files_does_not_trigger_a_rescan() {
    let (_tm, lib, w) = watched_library();
    // A player reads every file.
    for e in std::fs::read_dir(lib.path().join("Alpha Artist/First Album")).unwrap() {
        let _ = std::fs::read(e.unwrap().path()).unwrap();
    }
    // Well past the debounce window, so a rescan for the reads would
    // already have been reported. Then a real change: the first report
    // must be that change.
    std::thread::sleep(Duration::from_millis(800));
    std::fs::remove_file(lib.path().join("Alpha Artist/First Album/03 - Vorbis.ogg")).unwrap();
    let r = w.wait_for("any rescan", |_| true);
    assert_eq!(r["removed"], 1, "a rescan ran for mere reads: {r}");
}
