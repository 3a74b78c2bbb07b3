//! A real `tunemesh serve` daemon on loopback, for tests that drive one
//! through the CLI and its HTTP API.

use super::Tm;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub tm: Tm,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(tm: Tm, args: &[&str]) -> Daemon {
        let log = tm.data.path().with_extension("log");
        let child = tm
            .cmd()
            .arg("serve")
            .args(args)
            .args([
                "--api",
                "127.0.0.1:0",
                "--no-mdns",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { tm, child, log };
        let t = Instant::now();
        while !d.tm.data.path().join("api.json").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "daemon did not start: {}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.tm.ok(args)).unwrap()
    }

    pub fn api(&self) -> (String, String) {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(self.tm.data.path().join("api.json")).unwrap(),
        )
        .unwrap();
        (
            v["url"].as_str().unwrap().into(),
            v["token"].as_str().unwrap().into(),
        )
    }

    /// Stop with SIGTERM (it must exit cleanly); its data dir is handed
    /// back.
    pub fn stop(mut self) -> Tm {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "daemon exited with {s}: {}", self.logs());
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon ignores SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!self.tm.data.path().join("api.json").exists());
        std::mem::replace(&mut self.tm, Tm::new())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Resident set size of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size of a running process (VmHWM), KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `… kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}
