//! Shared state across a network partition, with real daemons: a home and a
//! phone in two network namespaces joined by one veth pair. The phone's link
//! is taken down; while apart the phone stars two tracks, records two plays
//! an hour in the past and appends to a playlist that the home reorders;
//! the link comes back, and both must show both stars, the offline plays
//! with their real times, and one playlist order holding every entry.
//!
//! Needs root (network namespaces) and iproute2; says SKIPPED otherwise.
//! Run alone: `cargo test --test user_state_netns -- --nocapture`.

mod common;

use common::{copy_tree, fixtures, is_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tunemesh");

fn skip(why: &str) {
    eprintln!(
        "\n*** SKIPPED user_state_netns: {why}: needs root and iproute2 (CI runs as root) ***\n"
    );
}

fn ip_binary() -> Option<PathBuf> {
    ["ip", "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            Command::new(p)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Two namespaces, `home` and `phone`, on the two ends of one veth pair,
/// and the daemons in them; all torn down on drop (daemons first).
struct Pair {
    ip: PathBuf,
    tag: String,
    daemons: Vec<(Child, PathBuf, PathBuf)>,
}

impl Pair {
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let o = Command::new(&self.ip)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        o.status.success().then_some(()).ok_or_else(|| {
            format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )
        })
    }

    fn ns(&self, host: &str) -> String {
        format!("tmus{}-{host}", self.tag)
    }

    fn build(ip: PathBuf, subnet: u8) -> Result<Pair, String> {
        let p = Pair {
            ip,
            tag: std::process::id().to_string(),
            daemons: vec![],
        };
        let (h, ph) = (p.ns("home"), p.ns("phone"));
        for ns in [&h, &ph] {
            let _ = p.ip(&["netns", "del", ns]);
            p.ip(&["netns", "add", ns])?;
            p.ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        p.ip(&[
            "-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &ph,
        ])?;
        for (ns, n) in [(&h, 1), (&ph, 2)] {
            p.ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.88.{subnet}.{n}/24"),
                "dev",
                "eth0",
            ])?;
            p.ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(p)
    }

    fn tm(&self, host: &str, data: &Path) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.ns(host), BIN, "--data-dir"])
            .arg(data);
        c.env_remove("RUST_LOG");
        c
    }

    fn ok(&self, host: &str, data: &Path, args: &[&str]) -> String {
        let o = self.tm(host, data).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "[{host}] tunemesh {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, host: &str, data: &Path, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(host, data, &a)).unwrap()
    }

    fn serve(&mut self, host: &str, data: &Path, args: &[&str]) {
        let log = data.with_extension("log");
        let child = self
            .tm(host, data)
            .arg("serve")
            .args(args)
            .args([
                "--api",
                "127.0.0.1:0",
                "--no-mdns",
                "--no-upnp",
                "--name",
                host,
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.daemons.push((child, log, data.to_path_buf()));
        wait(
            &format!("{host} to start"),
            30,
            || {
                data.join("api.json").exists()
                    && self
                        .tm(host, data)
                        .args(["peers", "--json"])
                        .output()
                        .is_ok_and(|o| o.status.success())
            },
            self,
        );
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|(_, log, _)| {
                let s = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = s.lines().collect();
                format!(
                    "----- {} -----\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for (c, _, _) in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for h in ["home", "phone"] {
            let _ = self.ip(&["netns", "del", &self.ns(h)]);
        }
    }
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool, p: &Pair) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(secs) {
            panic!("timed out waiting for {what}\n{}", p.logs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ids(tracks: &Value) -> Vec<String> {
    tracks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn entries(p: &Value) -> Vec<String> {
    p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_partitioned_phone_and_home_merge_stars_plays_and_playlist_edits() {
    if !is_root() {
        return skip("not root");
    }
    let Some(ip) = ip_binary() else {
        return skip("no `ip` command");
    };
    let subnet = (30 + std::process::id() % 200) as u8;
    let mut p = match Pair::build(ip, subnet) {
        Ok(p) => p,
        Err(e) => return skip(&format!("cannot build network namespaces ({e})")),
    };
    let tmp = tempfile::tempdir().unwrap();
    let music = tmp.path().join("music");
    copy_tree(&fixtures(), &music);
    let (dh, dp) = (tmp.path().join("home"), tmp.path().join("phone"));
    let listen = |n: u8| format!("/ip4/10.88.{subnet}.{n}/tcp/{}", 4100 + u16::from(n));
    p.serve(
        "home",
        &dh,
        &[
            music.to_str().unwrap(),
            "--role",
            "home",
            "--listen",
            &listen(1),
        ],
    );
    p.serve("phone", &dp, &["--role", "phone", "--listen", &listen(2)]);
    let ticket = p.ok("home", &dh, &["invite", "--quiet"]).trim().to_string();
    p.ok("phone", &dp, &["join", &ticket]);
    wait(
        "the phone to sync the library",
        30,
        || {
            p.json("phone", &dp, &["ls", "--all"])
                .as_array()
                .map_or(0, Vec::len)
                == 10
        },
        &p,
    );
    let t = ids(&p.json("phone", &dp, &["ls", "--all"]));

    // A playlist of four, made at home, seen by the phone.
    p.ok(
        "home",
        &dh,
        &["playlist", "create", "Trip", &t[0], &t[1], &t[2], &t[3]],
    );
    wait(
        "the playlist at the phone",
        20,
        || {
            p.tm("phone", &dp)
                .args(["playlist", "show", "Trip", "--json"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
        &p,
    );

    // ----- apart ----------------------------------------------------------------
    p.ip(&["-n", &p.ns("phone"), "link", "set", "eth0", "down"])
        .unwrap();
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let at = |s: u64| {
        // RFC 3339 by hand (UTC), as a script would pass it.
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{s}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    p.ok("phone", &dp, &["star", &t[4], &t[5]]);
    p.ok(
        "phone",
        &dp,
        &["plays", "add", &t[4], "--at", &at(hour_ago), "--ms", "1000"],
    );
    p.ok(
        "phone",
        &dp,
        &[
            "plays",
            "add",
            &t[4],
            "--at",
            &at(hour_ago + 60),
            "--ms",
            "1000",
        ],
    );
    p.ok("phone", &dp, &["playlist", "add", "Trip", &t[6], &t[7]]);
    // The home reorders meanwhile: last to first, then first to third.
    p.ok("home", &dh, &["playlist", "mv", "Trip", "4", "1"]);
    p.ok("home", &dh, &["playlist", "mv", "Trip", "1", "3"]);
    assert!(
        p.json("home", &dh, &["starred"])["tracks"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the link was not down"
    );

    // ----- together again ---------------------------------------------------------
    let back = Instant::now();
    p.ip(&["-n", &p.ns("phone"), "link", "set", "eth0", "up"])
        .unwrap();
    let both = |host: &str, d: &Path| -> bool {
        let s = ids(&p.json(host, d, &["starred"])["tracks"]);
        s.contains(&t[4]) && s.contains(&t[5])
    };
    wait(
        "both stars on both",
        60,
        || both("home", &dh) && both("phone", &dp),
        &p,
    );
    let plays = p.json("home", &dh, &["plays"]);
    let mine = plays["most"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == t[4].as_str())
        .cloned();
    let mine = mine.unwrap_or_else(|| panic!("no plays of the track at home: {plays}"));
    assert_eq!(mine["count"], 2);
    assert_eq!(
        mine["last_played_ms"].as_u64(),
        Some((hour_ago + 60) * 1000),
        "the offline play's own time"
    );
    wait(
        "one playlist order on both",
        30,
        || {
            let (a, b) = (
                p.json("home", &dh, &["playlist", "show", "Trip"]),
                p.json("phone", &dp, &["playlist", "show", "Trip"]),
            );
            entries(&a).len() == 6 && entries(&a) == entries(&b)
        },
        &p,
    );
    let order = entries(&p.json("home", &dh, &["playlist", "show", "Trip"]));
    let mut sorted = order.clone();
    sorted.sort();
    let mut want: Vec<String> = t[..4].iter().chain(&t[6..8]).cloned().collect();
    want.sort();
    assert_eq!(sorted, want, "every entry, none twice");
    // The home's moves hold: [1 2 3 4] → 4th to 1st [4 1 2 3] → 1st to
    // 3rd [1 2 4 3]; the phone's two appends follow, in either order.
    assert_eq!(
        &order[..4],
        &[t[0].clone(), t[1].clone(), t[3].clone(), t[2].clone()][..]
    );
    eprintln!(
        "user_state_netns: merged {:.1?} after the link came back; order {order:?}",
        back.elapsed()
    );
}
