//! LAN discovery with no configured peer address, on a real (virtual) LAN.
//!
//! Four network namespaces: a "lan" one holding a Linux bridge, and three
//! hosts (home, phone, stranger) each plugged into it by a veth pair, with
//! addresses in 10.77.N.0/24. Nothing touches the host's own network.
//!
//! 1. The home (serving a copy of the fixture library) and the phone run on
//!    fixed TCP and QUIC ports; the phone joins through an invitation ticket
//!    (which does carry the home's addresses). A stranger replays the used
//!    ticket and is turned away.
//! 2. Both daemons are stopped and started again on fresh random ports, so
//!    every address either of them stored (the ticket's, the member list's,
//!    `known-addrs.json`) is dead: only mDNS can bring them back together.
//!    (Checked once by hand: with `--no-mdns` on the restart they stay apart.)
//!    The phone must see the home connected over the LAN within 8 s, get
//!    its library and download a track; the stranger, on the same bridge
//!    with mDNS on, must get nothing and stay unconnected.
//!
//! Needs root (network namespaces) and iproute2; says SKIPPED otherwise.
//! Run alone: `cargo test --test lan_netns -- --nocapture`.

mod common;

use common::{copy_tree, fixtures, is_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tunemesh");
/// Ports of the first run; the second run listens on random ones.
const HOME_PORT: u16 = 4001;
const PHONE_PORT: u16 = 4002;
/// Measured here: about 0.1 s. (It was 10 s while a pending dial to the
/// stale QUIC address made libp2p refuse the mDNS dial; mDNS dials now go
/// out whatever else is pending.)
const RECONNECT_LIMIT: Duration = Duration::from_secs(8);

/// `ip` from PATH or the usual sbin folders (not always on a user's PATH).
fn ip_binary() -> Option<PathBuf> {
    let ok = |p: &Path| {
        Command::new(p)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ["ip", "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| ok(p))
}

fn skip(why: &str) {
    eprintln!("\n*** SKIPPED lan_netns: {why}: needs root and iproute2 (CI runs as root) ***\n");
}

/// The namespaces and the daemons running in them; everything is torn down
/// on drop, panics included (daemons first: a namespace with a process
/// inside outlives `ip netns del`).
struct Lan {
    ip: PathBuf,
    /// Host namespaces, then the lan namespace last.
    namespaces: Vec<String>,
    daemons: Vec<Daemon>,
    logs: tempfile::TempDir,
}

struct Daemon {
    label: String,
    ns: String,
    data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Lan {
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let o = Command::new(&self.ip)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    }

    /// Build the LAN: a bridge in its own namespace, `hosts` namespaces
    /// plugged into it, host i at 10.77.`subnet`.(i+1).
    fn build(ip: PathBuf, tag: &str, subnet: u8, hosts: &[&str]) -> Result<Lan, String> {
        let mut lan = Lan {
            ip,
            namespaces: vec![],
            daemons: vec![],
            logs: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        let bridge_ns = ns_name(tag, "lan");
        // A stale namespace of an earlier run with the same pid: reuse the name.
        let _ = lan.ip(&["netns", "del", &bridge_ns]);
        lan.ip(&["netns", "add", &bridge_ns])?;
        lan.namespaces.push(bridge_ns.clone());
        let b = bridge_ns.as_str();
        lan.ip(&["-n", b, "link", "set", "lo", "up"])?;
        lan.ip(&["-n", b, "link", "add", "br0", "type", "bridge"])?;
        // Flood all multicast to every port, whatever IGMP was (not) seen.
        lan.ip(&[
            "-n",
            b,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        lan.ip(&["-n", b, "link", "set", "br0", "up"])?;
        for (i, h) in hosts.iter().enumerate() {
            let ns = ns_name(tag, h);
            let _ = lan.ip(&["netns", "del", &ns]);
            lan.ip(&["netns", "add", &ns])?;
            // Host namespaces go in front: deleted before the bridge's.
            lan.namespaces.insert(0, ns.clone());
            let port = format!("v{i}");
            let addr = format!("10.77.{subnet}.{}/24", i + 1);
            let n = ns.as_str();
            lan.ip(&[
                "-n", b, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", n,
            ])?;
            lan.ip(&["-n", b, "link", "set", &port, "master", "br0"])?;
            lan.ip(&["-n", b, "link", "set", &port, "up"])?;
            lan.ip(&["-n", n, "link", "set", "lo", "up"])?;
            lan.ip(&["-n", n, "addr", "add", &addr, "dev", "eth0"])?;
            lan.ip(&["-n", n, "link", "set", "eth0", "multicast", "on"])?;
            lan.ip(&["-n", n, "link", "set", "eth0", "up"])?;
            // A LAN host's default route would carry 224.0.0.251; this
            // namespace has none, so route multicast explicitly.
            lan.ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    /// `tunemesh --data-dir DATA ARGS…` inside namespace `ns`.
    fn tm(&self, ns: &str, data: &Path) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", ns, BIN, "--data-dir"]).arg(data);
        c
    }

    fn run(&self, ns: &str, data: &Path, args: &[&str]) -> Output {
        self.tm(ns, data).args(args).output().unwrap()
    }

    fn ok(&self, ns: &str, data: &Path, args: &[&str]) -> String {
        let o = self.run(ns, data, args);
        assert!(
            o.status.success(),
            "[{ns}] tunemesh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, ns: &str, data: &Path, args: &[&str]) -> Value {
        let out = self.ok(ns, data, args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
    }

    /// Start `tunemesh serve` in `ns`; returns its index in `daemons` once
    /// its API answers.
    fn serve(&mut self, label: &str, ns: &str, data: &Path, args: &[&str]) -> usize {
        let n = self.daemons.iter().filter(|d| d.label == label).count();
        let log = self.logs.path().join(format!("{label}-{}.log", n + 1));
        let _ = std::fs::remove_file(data.join("api.json"));
        let child = self
            .tm(ns, data)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "tunemesh=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.daemons.push(Daemon {
            label: label.to_string(),
            ns: ns.to_string(),
            data: data.to_path_buf(),
            child: Some(child),
            log,
        });
        let i = self.daemons.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = &mut self.daemons[i];
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{label} exited at start ({st}):\n{}", read(&d.log));
            }
            if data.join("api.json").exists()
                && self.run(ns, data, &["peers", "--json"]).status.success()
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "{label} did not start:\n{}",
                read(&self.daemons[i].log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as an init system would; the daemon must exit cleanly.
    fn stop(&mut self, i: usize) {
        let d = &mut self.daemons[i];
        let mut child = d.child.take().expect("already stopped");
        // `ip netns exec` execs the command: the child is tunemesh itself.
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} ignored SIGTERM for 15 s:\n{}", d.label, read(&d.log));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            d.label,
            read(&d.log)
        );
        assert!(
            !d.data.join("api.json").exists(),
            "{} left api.json behind",
            d.label
        );
    }

    fn log(&self, i: usize) -> String {
        read(&self.daemons[i].log)
    }

    /// The device id, from the `api.json` the daemon wrote.
    fn device(&self, i: usize) -> String {
        let info: Value =
            serde_json::from_str(&read(&self.daemons[i].data.join("api.json"))).unwrap();
        info["device"].as_str().unwrap().to_string()
    }

    /// TCP ports the daemon said it listens on (`  listen   /ip4/…/tcp/N/p2p/…`
    /// on stderr; `status` opens the index itself, which the daemon holds).
    fn tcp_ports(&self, i: usize) -> Vec<u16> {
        self.log(i)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("listen"))
            .filter_map(|a| a.split_once("/tcp/")?.1.split('/').next()?.parse().ok())
            .collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for d in &mut self.daemons {
            if let Some(mut c) = d.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if panicking {
                eprintln!(
                    "----- log of {} (ns {}, data {}) -----\n{}",
                    d.label,
                    d.ns,
                    d.data.display(),
                    tail(&read(&d.log), 60)
                );
            }
        }
        for ns in &self.namespaces {
            if let Err(e) = self.ip(&["netns", "del", ns]) {
                eprintln!("lan_netns cleanup: {e}");
            }
        }
    }
}

fn ns_name(tag: &str, host: &str) -> String {
    format!("tm{tag}-{host}")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `probe` until it returns Ok, or panic with the last thing it saw.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > limit {
                    panic!("{what}: not within {limit:?}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn peer<'a>(peers: &'a Value, id: &str) -> Option<&'a Value> {
    peers.as_array()?.iter().find(|p| p["id"] == id)
}

#[test]
fn members_find_each_other_on_the_lan_by_mdns_alone() {
    if !is_root() {
        return skip("not root");
    }
    let Some(ip) = ip_binary() else {
        return skip("no `ip` command");
    };
    let t0 = Instant::now();
    let pid = std::process::id();
    let tag = pid.to_string();
    let subnet = (20 + pid % 200) as u8;
    let lan = Lan::build(ip, &tag, subnet, &["home", "phone", "stranger"]);
    let mut lan = match lan {
        Ok(l) => l,
        // Root without CAP_SYS_ADMIN/CAP_NET_ADMIN (an unprivileged container).
        Err(e) => return skip(&format!("cannot build network namespaces ({e})")),
    };
    let (ns_home, ns_phone, ns_stranger) = (
        ns_name(&tag, "home"),
        ns_name(&tag, "phone"),
        ns_name(&tag, "stranger"),
    );
    let home_ip = format!("10.77.{subnet}.1");
    let phone_ip = format!("10.77.{subnet}.2");
    let music = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), music.path());
    let d_home = tempfile::tempdir().unwrap();
    let d_phone = tempfile::tempdir().unwrap();
    let d_stranger = tempfile::tempdir().unwrap();
    let (dh, dp, ds) = (d_home.path(), d_phone.path(), d_stranger.path());
    let api = ["--api", "127.0.0.1:0"];

    // ----- 1. pair on fixed ports -------------------------------------------
    // TCP and QUIC, as by default, but on known ports.
    let home_tcp = format!("/ip4/{home_ip}/tcp/{HOME_PORT}");
    let home_quic = format!("/ip4/{home_ip}/udp/{HOME_PORT}/quic-v1");
    let phone_tcp = format!("/ip4/{phone_ip}/tcp/{PHONE_PORT}");
    let phone_quic = format!("/ip4/{phone_ip}/udp/{PHONE_PORT}/quic-v1");
    let home = lan.serve(
        "home",
        &ns_home,
        dh,
        &[
            music.path().to_str().unwrap(),
            "--role",
            "home",
            "--name",
            "home",
            "--listen",
            &home_tcp,
            "--listen",
            &home_quic,
            api[0],
            api[1],
        ],
    );
    let phone = lan.serve(
        "phone",
        &ns_phone,
        dp,
        &[
            "--role",
            "phone",
            "--name",
            "phone",
            "--listen",
            &phone_tcp,
            "--listen",
            &phone_quic,
            api[0],
            api[1],
        ],
    );
    // The stranger runs throughout, with mDNS on, on the same bridge.
    let stranger = lan.serve(
        "stranger",
        &ns_stranger,
        ds,
        &["--role", "phone", "--name", "stranger", api[0], api[1]],
    );
    let (home_id, phone_id, stranger_id) =
        (lan.device(home), lan.device(phone), lan.device(stranger));
    let local = wait_for(
        "the home indexes its folder",
        Duration::from_secs(20),
        || {
            let v = lan.json(&ns_home, dh, &["ls", "--json"]);
            let n = v.as_array().map_or(0, Vec::len);
            if n == 10 {
                Ok(v)
            } else {
                Err(format!("{n} tracks"))
            }
        },
    );
    let ticket = lan
        .ok(&ns_home, dh, &["invite", "--quiet"])
        .trim()
        .to_string();
    lan.ok(&ns_phone, dp, &["join", &ticket]);
    wait_for(
        "the phone syncs the home's library",
        Duration::from_secs(20),
        || {
            let v = lan.json(&ns_phone, dp, &["ls", "--all", "--json"]);
            let n = v.as_array().map_or(0, Vec::len);
            if n == 10 {
                Ok(())
            } else {
                Err(format!("{n} tracks"))
            }
        },
    );
    // A used ticket admits nobody, even one replayed from the same LAN.
    let replay = lan.run(&ns_stranger, ds, &["join", &ticket]);
    assert!(
        !replay.status.success(),
        "the stranger joined with a used ticket: {}",
        String::from_utf8_lossy(&replay.stdout)
    );
    let devices = lan.json(&ns_home, dh, &["devices", "--json"]);
    let ids: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "members: {devices}");
    assert!(
        ids.contains(&home_id.as_str()) && ids.contains(&phone_id.as_str()),
        "{devices}"
    );
    eprintln!(
        "paired in {:.1?}; the stranger's replay was refused: {}",
        t0.elapsed(),
        String::from_utf8_lossy(&replay.stderr).trim()
    );

    // ----- 2. restart on new ports: only mDNS knows where they are -----------
    lan.stop(home);
    lan.stop(phone);
    let home = lan.serve(
        "home",
        &ns_home,
        dh,
        &["--role", "home", "--name", "home", api[0], api[1]],
    );
    let restarted = Instant::now();
    let phone = lan.serve(
        "phone",
        &ns_phone,
        dp,
        &["--role", "phone", "--name", "phone", api[0], api[1]],
    );
    let ports = lan.tcp_ports(home);
    assert!(!ports.is_empty(), "no TCP listener:\n{}", lan.log(home));
    assert!(
        !ports.contains(&HOME_PORT),
        "the home is back on its old port: {ports:?}"
    );
    assert!(
        !lan.tcp_ports(phone).contains(&PHONE_PORT),
        "the phone is back on its old port"
    );

    let seen = wait_for(
        "the phone reconnects to the home over the LAN",
        RECONNECT_LIMIT,
        || {
            let peers = lan.json(&ns_phone, dp, &["peers", "--json"]);
            match peer(&peers, &home_id) {
                Some(p) if p["connected"] == true && p["path"] == "lan" && p["member"] == true => {
                    Ok(p.clone())
                }
                _ => Err(peers.to_string()),
            }
        },
    );
    let took = restarted.elapsed();
    let addr = seen["addr"].as_str().unwrap_or_default();
    assert!(
        addr.contains(&format!("/ip4/{home_ip}/")),
        "connected through {addr}, not the LAN"
    );
    // Whichever side heard the other first dialled it (the other then
    // finds it already connected and says nothing).
    let found = |i: usize, other: &str| {
        lan.log(i)
            .lines()
            .any(|l| l.contains("member found on the LAN") && l.contains(other))
    };
    assert!(
        found(phone, &home_id) || found(home, &phone_id),
        "neither log shows an mDNS discovery of the other:\n--- phone ---\n{}\n--- home ---\n{}",
        lan.log(phone),
        lan.log(home)
    );
    let lib = wait_for(
        "the phone lists the home's tracks",
        Duration::from_secs(10),
        || {
            let v = lan.json(&ns_phone, dp, &["ls", "--all", "--json"]);
            let online = v.as_array().map_or(0, |ts| {
                ts.iter()
                    .filter(|t| {
                        t["sources"].as_array().is_some_and(|s| {
                            s.iter()
                                .any(|s| s["device"] == home_id && s["online"] == true)
                        })
                    })
                    .count()
            });
            if online == 10 {
                Ok(v)
            } else {
                Err(format!("{online} of 10 online: {v}"))
            }
        },
    );
    let mut want: Vec<&str> = local
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    let mut got: Vec<&str> = lib
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "the phone's library is not the home's");
    // And the bytes come across the bridge.
    let t = &lib.as_array().unwrap()[0];
    let out = lan.logs.path().join("got.bin");
    lan.ok(
        &ns_phone,
        dp,
        &[
            "get",
            t["id"].as_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--original",
        ],
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        t["size"].as_u64().unwrap()
    );
    let home_peers = lan.json(&ns_home, dh, &["peers", "--json"]);
    let p = peer(&home_peers, &phone_id)
        .unwrap_or_else(|| panic!("the home does not list the phone: {home_peers}"));
    assert!(
        p["connected"] == true && p["path"] == "lan",
        "the home's view of the phone: {p}"
    );
    eprintln!(
        "reconnected by mDNS in {:.1?} (via {addr}, rtt {} ms)",
        took,
        seen["rtt_ms"]
            .as_f64()
            .map_or("-".into(), |r| format!("{r:.2}"))
    );

    // ----- the stranger: seen on the LAN, never let in ----------------------
    // It has heard the others' mDNS answers all along. No invitation is
    // open now, so it gets no join grace; still, give it a few seconds to
    // do whatever it would do.
    std::thread::sleep(Duration::from_secs(3));
    let stranger_lib = lan.json(&ns_stranger, ds, &["ls", "--all", "--json"]);
    assert_eq!(
        stranger_lib,
        serde_json::json!([]),
        "the stranger got tracks"
    );
    let stranger_peers = lan.json(&ns_stranger, ds, &["peers", "--json"]);
    assert!(
        stranger_peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] != true),
        "the stranger is connected to someone: {stranger_peers}"
    );
    for (who, ns, d) in [("home", &ns_home, dh), ("phone", &ns_phone, dp)] {
        let peers = lan.json(ns, d, &["peers", "--json"]);
        if let Some(p) = peer(&peers, &stranger_id) {
            assert!(
                p["connected"] != true && p["member"] != true,
                "the {who} lists the stranger as connected or member: {p}"
            );
        }
    }
    eprintln!("lan_netns done in {:.1?}", t0.elapsed());
    drop(lan);
}
