//! The NAT lab: a small "internet" with two NAT routers, built from network
//! namespaces, veth pairs, a bridge, iptables and tc. Nothing touches the
//! host's own network: every address below lives in a namespace this lab
//! created (plus each namespace's own loopback).
//!
//! ```text
//!   ns inet ("the internet", bridge br0 198.51.100.1/24: the relay runs here)
//!     ├── ns hrouter  wan 198.51.100.10 ── NAT ── lan 10.1.0.1 ── ns home  10.1.0.2
//!     ├── ns prouter  wan 198.51.100.20 ── NAT ── lan 10.2.0.1 ── ns phone 10.2.0.2 (→ .3 when roaming)
//!     └── ns stranger 198.51.100.30 (on demand: a public host, no NAT)
//! ```
//!
//! The inet namespace has no route to 10.0.0.0/8, so nothing reaches a LAN
//! that its router does not forward. Each router:
//! - forwards (ip_forward=1) and NATs what leaves by `wan` (see [`Nat`]);
//! - lets in from `wan` only ESTABLISHED,RELATED, both to itself (INPUT;
//!   otherwise the router itself would answer a hole-punch packet that
//!   arrives before its LAN host's own punch went out, and, worse, confirm a
//!   conntrack entry for it, so the host's punch would then be NATed to
//!   another port) and to the LAN (FORWARD). Filtering is therefore address-
//!   and port-dependent ("port-restricted"), as on most home routers.
//!
//! Names: every namespace is `tmnat<pid>x<n>-<host>` (pid of the test
//! process, n a per-process counter), so parallel tests and runs never
//! collide; namespaces of a dead pid (a crashed run) are removed at the first
//! build. Teardown in `Drop`, panics included: daemons first (a namespace
//! with a process inside outlives `ip netns del`), then the namespaces.
//!
//! A crate of its own (not a module of tunemesh, not a file of the tests)
//! so that `tests/nat_lab` and `benches/nat.rs` both depend on it by name:
//! it drives the tunemesh binary it is given ([`Lab::build`]) through `ip
//! netns exec`, needs root, and is no part of the library's API.

use serde_json::Value;
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Host names (the suffix of each namespace's name).
pub const INET: &str = "inet";
pub const HROUTER: &str = "hrouter";
pub const HOME: &str = "home";
pub const PROUTER: &str = "prouter";
pub const PHONE: &str = "phone";
pub const STRANGER: &str = "stranger";

pub const RELAY_IP: &str = "198.51.100.1";
/// The relay listens on this port, TCP and QUIC.
pub const RELAY_PORT: u16 = 4001;
pub const HROUTER_WAN: &str = "198.51.100.10";
pub const PROUTER_WAN: &str = "198.51.100.20";
pub const STRANGER_IP: &str = "198.51.100.30";
pub const HOME_IP: &str = "10.1.0.2";
pub const PHONE_IP: &str = "10.2.0.2";
/// Where [`Lab::roam_phone`] moves the phone.
pub const PHONE_ROAM_IP: &str = "10.2.0.3";

/// The external port range of [`Nat::FixedPort`].
pub const FIXED_PORT_RANGE: (u16, u16) = (40000, 40999);

/// How a router maps its LAN hosts' (UDP and TCP) sockets to its WAN address.
/// Measured by the `selfcheck_nat_mappings` test (see its comment for the
/// evidence):
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// `MASQUERADE`: endpoint-independent and port-preserving (internal port
    /// N leaves as WAN:N, whatever the destination).
    Masquerade,
    /// `SNAT --to-source WAN:40000-40999` (UDP and TCP): port-changing but
    /// stable. The first connection of a socket gets a random port of the
    /// range (an internal port outside the range is never kept), and every
    /// later connection of the same internal (address, port) gets that same
    /// external port whatever its destination: the kernel's
    /// `get_unique_tuple` first looks for an existing conntrack entry with
    /// the same original source (`find_appropriate_src`, the "bysource"
    /// hash) and reuses its mapping, unless the range is `--random(-fully)`.
    /// So the mapping is endpoint-independent for as long as one conntrack
    /// entry of that socket lives (a running daemon always has one: its
    /// relay connection). No need for one `--sport N -j SNAT --to :M` rule
    /// per port.
    FixedPort,
    /// `MASQUERADE --random-fully`: a fresh random port per conntrack entry,
    /// i.e. per destination: endpoint-dependent ("symmetric"). Hole punching
    /// cannot work through it (the peer can only learn the mapping used
    /// towards the relay).
    Symmetric,
}

impl Nat {
    pub const ALL: [Nat; 3] = [Nat::Masquerade, Nat::FixedPort, Nat::Symmetric];

    pub fn name(self) -> &'static str {
        match self {
            Nat::Masquerade => "masquerade",
            Nat::FixedPort => "fixed-port",
            Nat::Symmetric => "symmetric",
        }
    }

    /// `iptables -t nat` rules (without the `iptables -t nat` prefix).
    fn rules(self, wan_ip: &str) -> Vec<Vec<String>> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match self {
            Nat::Masquerade => vec![s(&["-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"])],
            Nat::FixedPort => {
                let to = format!("{wan_ip}:{}-{}", FIXED_PORT_RANGE.0, FIXED_PORT_RANGE.1);
                let mut r: Vec<Vec<String>> = ["udp", "tcp"]
                    .iter()
                    .map(|p| {
                        s(&[
                            "-A",
                            "POSTROUTING",
                            "-o",
                            "wan",
                            "-p",
                            p,
                            "-j",
                            "SNAT",
                            "--to-source",
                            &to,
                        ])
                    })
                    .collect();
                // ICMP and the rest.
                r.push(s(&["-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]));
                r
            }
            Nat::Symmetric => vec![s(&[
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
                "--random-fully",
            ])],
        }
    }

    /// Can two peers behind these NATs punch a hole to each other?
    pub fn punchable(a: Nat, b: Nat) -> bool {
        a != Nat::Symmetric && b != Nat::Symmetric
    }
}

/// The system tools the lab needs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub ip: PathBuf,
    pub iptables: PathBuf,
    pub tc: Option<PathBuf>,
}

impl Tools {
    /// `Err(why)` when the lab cannot run here (then the caller skips).
    pub fn find() -> Result<Tools, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let ip = find_tool("ip", &["-V"]).ok_or("no `ip` command (iproute2)")?;
        let iptables = find_tool("iptables", &["-V"]).ok_or("no `iptables` command")?;
        let tc = find_tool("tc", &["-V"]);
        Ok(Tools { ip, iptables, tc })
    }
}

/// `name` from PATH or the usual sbin folders (not always on a user's PATH).
fn find_tool(name: &str, probe: &[&str]) -> Option<PathBuf> {
    let ok = |p: &Path| {
        Command::new(p)
            .args(probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut c = vec![PathBuf::from(name)];
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        c.push(Path::new(d).join(name));
    }
    c.into_iter().find(|p| ok(p))
}

/// Print the loud skip line every nat_lab test uses.
pub fn skip(why: &str) {
    eprintln!(
        "\n*** SKIPPED nat_lab: {why} (needs root, iproute2 and iptables; CI runs as root) ***\n"
    );
}

pub struct Daemon {
    pub label: String,
    pub ns: String,
    pub data: PathBuf,
    /// Arguments after `tunemesh --data-dir DATA`.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// File whose appearance means "ready".
    pub ready_file: PathBuf,
    child: Option<Child>,
    /// One log per start; the last is the current one.
    pub logs: Vec<PathBuf>,
}

impl Daemon {
    pub fn log(&self) -> String {
        read(self.logs.last().unwrap())
    }
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Lab {
    pub tools: Tools,
    /// The tunemesh binary every daemon and command runs.
    pub bin: PathBuf,
    /// `tmnat<pid>x<n>`: every namespace name starts with it.
    pub tag: String,
    /// Created namespaces, in the order they are deleted.
    namespaces: Vec<String>,
    pub daemons: Vec<Daemon>,
    /// Scratch space: logs, data dirs, music, downloads.
    pub dir: tempfile::TempDir,
    pub home_nat: Nat,
    pub phone_nat: Nat,
    /// The phone's current LAN address.
    pub phone_ip: String,
    dumped: Cell<bool>,
}

static LABS: AtomicUsize = AtomicUsize::new(0);
static STALE: std::sync::Once = std::sync::Once::new();
const PREFIX: &str = "tmnat";

impl Lab {
    /// Build the topology with these NATs. `None` (after printing the
    /// SKIPPED line) when this machine cannot: not root, tools missing, or
    /// namespaces not allowed (an unprivileged container). Any later setup
    /// failure panics (and tears down what was built). `bin` is the
    /// tunemesh binary (`env!("CARGO_BIN_EXE_tunemesh")` in a test).
    pub fn build(bin: impl Into<PathBuf>, home_nat: Nat, phone_nat: Nat) -> Option<Lab> {
        let tools = match Tools::find() {
            Ok(t) => t,
            Err(why) => {
                skip(&why);
                return None;
            }
        };
        STALE.call_once(|| remove_stale(&tools.ip));
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab {
            tools,
            bin: bin.into(),
            tag: format!("{PREFIX}{}x{n}", std::process::id()),
            namespaces: vec![],
            daemons: vec![],
            dir: tempfile::Builder::new()
                .prefix("nat_lab.")
                .tempdir()
                .unwrap(),
            home_nat,
            phone_nat,
            phone_ip: PHONE_IP.into(),
            dumped: Cell::new(false),
        };
        let inet = lab.ns(INET);
        if let Err(e) = lab.add_ns(&inet) {
            skip(&format!("cannot create a network namespace ({e})"));
            return None;
        }
        lab.setup()
            .unwrap_or_else(|e| panic!("building the NAT lab: {e}"));
        Some(lab)
    }

    fn setup(&mut self) -> Result<(), String> {
        let inet = self.ns(INET);
        let i = inet.as_str();
        self.ip(&["-n", i, "link", "set", "lo", "up"])?;
        self.ip(&["-n", i, "link", "add", "br0", "type", "bridge"])?;
        self.ip(&[
            "-n",
            i,
            "addr",
            "add",
            &format!("{RELAY_IP}/24"),
            "dev",
            "br0",
        ])?;
        self.ip(&["-n", i, "link", "set", "br0", "up"])?;
        for (router, host, wan_ip, net, nat, port) in [
            (HROUTER, HOME, HROUTER_WAN, "10.1.0", self.home_nat, "h0"),
            (PROUTER, PHONE, PROUTER_WAN, "10.2.0", self.phone_nat, "p0"),
        ] {
            let (r, h) = (self.ns(router), self.ns(host));
            // Hosts are deleted before their router, routers before inet.
            self.add_ns(&r)?;
            self.add_ns(&h)?;
            let (r, h) = (r.as_str(), h.as_str());
            self.ip(&["-n", r, "link", "set", "lo", "up"])?;
            self.plug_into_inet(port, r, "wan", wan_ip)?;
            self.ip(&[
                "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", h,
            ])?;
            self.ip(&["-n", r, "addr", "add", &format!("{net}.1/24"), "dev", "lan"])?;
            self.ip(&["-n", r, "link", "set", "lan", "up"])?;
            self.ip(&["-n", h, "link", "set", "lo", "up"])?;
            self.ip(&[
                "-n",
                h,
                "addr",
                "add",
                &format!("{net}.2/24"),
                "dev",
                "eth0",
            ])?;
            self.ip(&["-n", h, "link", "set", "eth0", "up"])?;
            self.ip(&[
                "-n",
                h,
                "route",
                "add",
                "default",
                "via",
                &format!("{net}.1"),
            ])?;
            self.sh(r, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
            for rule in [
                "-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "-A INPUT -i wan -j DROP",
                "-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "-A FORWARD -i wan -j DROP",
            ] {
                self.iptables(r, &rule.split(' ').collect::<Vec<_>>())?;
            }
            self.set_nat(router, nat)?;
        }
        Ok(())
    }

    /// A veth from the inet bridge (port `port`) into `ns` as `dev` with
    /// address `addr`/24.
    fn plug_into_inet(&self, port: &str, ns: &str, dev: &str, addr: &str) -> Result<(), String> {
        let inet = self.ns(INET);
        let i = inet.as_str();
        self.ip(&[
            "-n", i, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
        ])?;
        self.ip(&["-n", i, "link", "set", port, "master", "br0"])?;
        self.ip(&["-n", i, "link", "set", port, "up"])?;
        self.ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        self.ip(&["-n", ns, "link", "set", dev, "up"])?;
        Ok(())
    }

    /// The stranger's namespace: a public host on the bridge at
    /// [`STRANGER_IP`] (no NAT). Idempotent; returns its namespace.
    pub fn add_stranger(&mut self) -> String {
        let s = self.ns(STRANGER);
        if !self.namespaces.contains(&s) {
            self.add_ns(&s).unwrap();
            self.ip(&["-n", &s, "link", "set", "lo", "up"]).unwrap();
            self.plug_into_inet("s0", &s, "eth0", STRANGER_IP).unwrap();
        }
        s
    }

    /// Replace `router`'s NAT rules (HROUTER or PROUTER). Existing
    /// conntrack entries keep their mappings.
    pub fn set_nat(&mut self, router: &str, nat: Nat) -> Result<(), String> {
        let (r, wan) = match router {
            HROUTER => (self.ns(HROUTER), HROUTER_WAN),
            PROUTER => (self.ns(PROUTER), PROUTER_WAN),
            _ => return Err(format!("{router} is not a router")),
        };
        self.iptables(&r, &["-t", "nat", "-F", "POSTROUTING"])?;
        for rule in nat.rules(wan) {
            let mut a = vec!["-t", "nat"];
            a.extend(rule.iter().map(String::as_str));
            self.iptables(&r, &a)?;
        }
        match router {
            HROUTER => self.home_nat = nat,
            _ => self.phone_nat = nat,
        }
        Ok(())
    }

    /// "3G" on the phone's side: a 1 Mbit/s token bucket on the phone's
    /// uplink (its eth0 egress) and downlink (the router's LAN egress).
    /// (`tc netem` does not work on the machines this runs on; tbf does.)
    pub fn shape_phone_3g(&self) -> Result<(), String> {
        let tc = self.tools.tc.clone().ok_or("no `tc` command (iproute2)")?;
        let tc = tc.to_str().unwrap();
        for (host, dev) in [(PHONE, "eth0"), (PROUTER, "lan")] {
            self.sh(
                &self.ns(host),
                &[
                    tc, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "1mbit", "burst",
                    "32kbit", "latency", "400ms",
                ],
            )?;
        }
        Ok(())
    }

    /// Roaming: the phone's address changes (10.2.0.2 → 10.2.0.3, same
    /// router); its sockets stay open, every NAT mapping it had is dead.
    pub fn roam_phone(&mut self) -> Result<(), String> {
        let p = self.ns(PHONE);
        let old = self.phone_ip.clone();
        let new = if old == PHONE_IP {
            PHONE_ROAM_IP
        } else {
            PHONE_IP
        };
        self.ip(&["-n", &p, "addr", "del", &format!("{old}/24"), "dev", "eth0"])?;
        self.ip(&["-n", &p, "addr", "add", &format!("{new}/24"), "dev", "eth0"])?;
        // Deleting the subnet's only address took the default route with it.
        self.ip(&["-n", &p, "route", "replace", "default", "via", "10.2.0.1"])?;
        self.phone_ip = new.to_string();
        Ok(())
    }

    // ----- plumbing -------------------------------------------------------

    /// The namespace name of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.tag)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), String> {
        self.ip(&["netns", "add", ns])?;
        self.namespaces.insert(0, ns.to_string());
        Ok(())
    }

    /// Run `ip ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        output_ok(Command::new(&self.tools.ip).args(args)).map(drop)
    }

    pub fn iptables(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        let mut a = vec![self.tools.iptables.to_str().unwrap(), "-w"];
        a.extend_from_slice(args);
        self.sh(ns, &a).map(drop)
    }

    /// Run `argv` inside namespace `ns`; its stdout, or an error with its
    /// stderr.
    pub fn sh(&self, ns: &str, argv: &[&str]) -> Result<String, String> {
        output_ok(
            Command::new(&self.tools.ip)
                .args(["netns", "exec", ns])
                .args(argv),
        )
    }

    /// `tunemesh --data-dir DATA` inside namespace `ns`.
    pub fn tm(&self, ns: &str, data: &Path) -> Command {
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec", ns])
            .arg(&self.bin)
            .arg("--data-dir")
            .arg(data);
        c.env_remove("RUST_LOG").env("NO_COLOR", "1");
        c
    }

    /// A tunemesh command next to daemon `d` (its namespace and data dir).
    pub fn cli(&self, d: usize, args: &[&str]) -> Output {
        let dm = &self.daemons[d];
        self.tm(&dm.ns, &dm.data).args(args).output().unwrap()
    }

    /// Like [`Lab::cli`], requiring success; stdout.
    pub fn cli_ok(&self, d: usize, args: &[&str]) -> String {
        let o = self.cli(d, args);
        if !o.status.success() {
            self.fail(&format!(
                "[{}] tunemesh {args:?} failed ({}): {}\n{}",
                self.daemons[d].label,
                o.status,
                String::from_utf8_lossy(&o.stderr).trim(),
                String::from_utf8_lossy(&o.stdout).trim()
            ));
        }
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn cli_json(&self, d: usize, args: &[&str]) -> Value {
        let out = self.cli_ok(d, args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| self.fail(&format!("{args:?}: bad JSON ({e}): {out}")))
    }

    /// Like [`Lab::cli_json`] but an error instead of a panic (for probes:
    /// a daemon may be restarting).
    pub fn try_json(&self, d: usize, args: &[&str]) -> Result<Value, String> {
        let o = self.cli(d, args);
        if !o.status.success() {
            return Err(format!(
                "tunemesh {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("{args:?}: bad JSON: {e}"))
    }

    /// Start `tunemesh --data-dir DATA ARGS` as a daemon in `host`'s
    /// namespace, stdout and stderr to a log; returns its index once
    /// `ready_file` (relative to DATA: `api.json` for `serve`, `relay.json`
    /// for `relay`) exists (and, for `serve`, its API answers).
    pub fn spawn(
        &mut self,
        label: &str,
        host: &str,
        data: &Path,
        args: &[String],
        env: &[(&str, &str)],
        ready_file: &str,
    ) -> usize {
        std::fs::create_dir_all(data).unwrap();
        self.daemons.push(Daemon {
            label: label.to_string(),
            ns: self.ns(host),
            data: data.to_path_buf(),
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready_file: data.join(ready_file),
            child: None,
            logs: vec![],
        });
        let i = self.daemons.len() - 1;
        self.start(i);
        i
    }

    /// (Re)start daemon `i` with its arguments; waits until it is ready.
    pub fn start(&mut self, i: usize) {
        let log = {
            let d = &self.daemons[i];
            assert!(d.child.is_none(), "{} is already running", d.label);
            self.dir
                .path()
                .join(format!("{}-{}.log", d.label, d.logs.len() + 1))
        };
        let d = &self.daemons[i];
        let _ = std::fs::remove_file(&d.ready_file);
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = self.tm(&d.ns, &d.data);
        cmd.args(&d.args)
            .envs(d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd.spawn().unwrap();
        let d = &mut self.daemons[i];
        d.child = Some(child);
        d.logs.push(log);
        let (label, serve) = (d.label.clone(), d.args.iter().any(|a| a == "serve"));
        let started = Instant::now();
        loop {
            let d = &mut self.daemons[i];
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                self.fail(&format!("{label} exited at start ({st})"));
            }
            if d.ready_file.exists()
                && (!serve || self.cli(i, &["peers", "--json"]).status.success())
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(30) {
                self.fail(&format!("{label} not ready within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as an init system would; the daemon must exit cleanly
    /// within 15 s.
    pub fn stop(&mut self, i: usize) {
        let mut child = self.daemons[i].child.take().expect("not running");
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
                self.fail(&format!(
                    "{} ignored SIGTERM for 15 s",
                    self.daemons[i].label
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            self.fail(&format!(
                "{} exited with {status} after SIGTERM",
                self.daemons[i].label
            ));
        }
    }

    /// The tails of every daemon's logs (each start's log).
    pub fn dump(&self) -> String {
        self.dumped.set(true);
        let mut s = String::new();
        for d in &self.daemons {
            for (n, log) in d.logs.iter().enumerate() {
                let last = n + 1 == d.logs.len();
                let lines = if last { 80 } else { 30 };
                s += &format!(
                    "\n----- log of {} #{} (ns {}, data {}, {}) -----\n{}\n",
                    d.label,
                    n + 1,
                    d.ns,
                    d.data.display(),
                    if last && d.running() {
                        "running"
                    } else {
                        "stopped"
                    },
                    tail(&read(log), lines)
                );
            }
        }
        s
    }

    /// Panic with `msg`, the lab's NATs and every daemon's log tail.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "[{} home {} × phone {}] {msg}\n{}",
            self.tag,
            self.home_nat.name(),
            self.phone_nat.name(),
            self.dump()
        )
    }

    /// Poll `probe` (every 200 ms) until it returns Ok, or fail with the last
    /// thing it saw and the logs.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match probe() {
                Ok(v) => return v,
                Err(last) => {
                    if start.elapsed() > limit {
                        self.fail(&format!("{what}: not within {limit:?}; last seen: {last}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            if let Some(mut c) = d.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() && !self.dumped.get() {
            eprintln!("{}", self.dump());
        }
        for ns in &self.namespaces {
            if let Err(e) = self.ip(&["netns", "del", ns]) {
                eprintln!("nat_lab cleanup: {e}");
            }
        }
    }
}

/// Run `f` on a thread that has entered namespace `ns`: sockets it creates
/// live there (and stay there whichever thread uses them later).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a valid fd; it affects only this thread.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns {ns}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Delete namespaces of earlier runs whose process is gone (after killing
/// whatever still runs inside them).
fn remove_stale(ip: &Path) {
    let Ok(o) = Command::new(ip).args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('x'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(o) = Command::new(ip).args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(p) = p.parse::<i32>() {
                    // SAFETY: kill(2) of a leftover daemon in our own stale namespace.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new(ip).args(["netns", "del", name]).status();
        eprintln!("nat_lab: removed stale namespace {name}");
    }
}

fn output_ok(cmd: &mut Command) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        Err(format!(
            "{} {}: {}",
            cmd.get_program().to_string_lossy(),
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `--listen` on every interface at `port`, QUIC and TCP.
pub fn listen_args(port: u16) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
        "--listen".into(),
        format!("/ip4/0.0.0.0/tcp/{port}"),
    ]
}

/// `tunemesh -v relay …` as the lab runs it: on the inet namespace's
/// address, serving `mesh_id`.
pub fn relay_args(mesh_id: &str) -> Vec<String> {
    let mut a = strings(&["-v", "relay"]);
    a.extend(listen_args(RELAY_PORT));
    a.extend(strings(&[
        "--external",
        &format!("/ip4/{RELAY_IP}/udp/{RELAY_PORT}/quic-v1"),
        "--external",
        &format!("/ip4/{RELAY_IP}/tcp/{RELAY_PORT}"),
        "--mesh",
        mesh_id,
    ]));
    a
}
