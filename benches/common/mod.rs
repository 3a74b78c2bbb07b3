//! Helpers shared by the benchmark drivers: options ([`args`]), reporting,
//! errors with context, machine facts, Ogg page counting, HTTP.
#![allow(dead_code)] // each bench uses its own subset

pub mod args;

use std::error::Error;
use std::fmt::Display;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, Box<dyn Error>>;

/// `anyhow::Context`-like helper so every failure says what was going on.
pub trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Res<T>;
}
impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }
}
impl<T> Ctx<T> for Option<T> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.ok_or_else(|| what.to_string().into())
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `median [min-max]` of `v`, each scaled by `scale` and shown with
/// `decimals` digits; `-` when empty.
pub fn spread(v: &[f64], scale: f64, decimals: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = median(v.to_vec());
    let d = decimals;
    format!("{:.d$} [{:.d$}-{:.d$}]", m * scale, lo * scale, hi * scale)
}

/// A file's track id: blake3 of its bytes, hex.
pub fn file_id(p: &std::path::Path) -> Res<String> {
    let b = std::fs::read(p).ctx(format!("reading {}", p.display()))?;
    Ok(blake3::hash(&b).to_hex().to_string())
}

pub fn mib(kib: i64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub fn section(title: &str) {
    println!("\n== {title} ==");
    flush();
}

pub fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// How many whole Ogg pages `buf` starts with.
pub fn ogg_pages_complete(buf: &[u8]) -> Res<usize> {
    let (mut at, mut n) = (0usize, 0usize);
    loop {
        let rest = &buf[at..];
        if rest.len() < 27 {
            return Ok(n);
        }
        if &rest[..4] != b"OggS" {
            return Err(format!("no Ogg page at byte {at}").into());
        }
        let segs = rest[26] as usize;
        if rest.len() < 27 + segs {
            return Ok(n);
        }
        let body: usize = rest[27..27 + segs].iter().map(|&b| b as usize).sum();
        let len = 27 + segs + body;
        if rest.len() < len {
            return Ok(n);
        }
        at += len;
        n += 1;
    }
}

pub fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Reap `pid`; returns (exited with status 0, its rusage).
pub fn wait4(pid: u32) -> Res<(bool, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: plain syscall on our own child with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {e}").into());
        }
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, ru))
}

/// What ffprobe sees in the first audio stream of a file.
pub struct Probe {
    /// ffprobe's codec name ("flac", "mp3", "aac", "vorbis", ...).
    pub codec: String,
    pub sample_rate: u32,
    pub secs: f64,
}

/// ffprobe the first audio stream of `path`.
pub fn probe(path: &std::path::Path) -> Res<Probe> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,sample_rate:format=duration",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .ctx(format!("ffprobe {}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
            .ctx(format!("ffprobe {}: no {k}", path.display()))
    };
    let secs: f64 = get("duration")?.parse().ctx("duration")?;
    if secs <= 0.0 {
        return Err(format!("ffprobe {}: duration {secs}", path.display()).into());
    }
    Ok(Probe {
        codec: get("codec_name")?.to_string(),
        sample_rate: get("sample_rate")?.parse().ctx("sample_rate")?,
        secs,
    })
}

// ---------------------------------------------------------------- HTTP

/// One HTTP exchange, timed from before the connect.
pub struct Fetch {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body: all of it, or (see [`http`]) its start only.
    pub body: Vec<u8>,
    pub body_len: usize,
    pub first_byte: Option<std::time::Duration>,
    /// End of the third Ogg page (Ogg bodies only).
    pub first_audio: Option<std::time::Duration>,
    pub end: std::time::Duration,
}

impl Fetch {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One GET on a fresh connection (ureq), read to its end and timed from
/// before the connect: the first body byte, the end of the third Ogg page
/// (when `ogg` and the body is Ogg), the end. `whole`: keep the whole body,
/// else only up to the first audio (Ogg) or its first 4 KiB.
pub fn http(addr: &str, path: &str, auth: Option<&str>, ogg: bool, whole: bool) -> Res<Fetch> {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let what = format!(
        "GET http://{addr}{}",
        path.split('?').next().unwrap_or(path)
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let t0 = Instant::now();
    let mut req = agent.get(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.call().ctx(what.clone())?;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let ogg = ogg
        && headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.contains("ogg"));
    let mut f = Fetch {
        status,
        headers,
        body: Vec::new(),
        body_len: 0,
        first_byte: None,
        first_audio: None,
        end: Duration::ZERO,
    };
    let mut body = resp.into_body();
    let mut r = body.with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf).ctx(format!("reading {what}"))?;
        if n == 0 {
            break;
        }
        let now = t0.elapsed();
        f.first_byte.get_or_insert(now);
        f.body_len += n;
        let keep = whole
            || if ogg {
                f.first_audio.is_none()
            } else {
                f.body.len() < 4096
            };
        if keep {
            f.body.extend_from_slice(&buf[..n]);
        }
        if ogg && f.first_audio.is_none() && ogg_pages_complete(&f.body)? >= 3 {
            f.first_audio = Some(now);
        }
    }
    f.end = t0.elapsed();
    Ok(f)
}

/// Cargo's target dir (where benches keep generated libraries and
/// outputs between runs).
pub fn target_dir() -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    match option_env!("CARGO_TARGET_TMPDIR") {
        // CARGO_TARGET_TMPDIR is <target>/tmp.
        Some(t) => Path::new(t)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(t)),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// Cargo's target dir, `<target>/<name>` (the bench's work dir, kept
/// between runs) and its `run/` folder, emptied: where this run's daemons
/// keep their state and logs.
pub fn work_dirs(name: &str) -> Res<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let target = target_dir();
    let work = target.join(name);
    let run_dir = work.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).ctx(format!("removing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir).ctx(format!("creating {}", run_dir.display()))?;
    Ok((target, work, run_dir))
}

/// The generated library `libs/mesh-N` (the mesh and web benches' big
/// library), made once (marker file) and reused.
pub fn ensure_mesh_library(
    libs: &std::path::Path,
    template: &std::path::Path,
    count: usize,
    seed: u64,
) -> Res<(std::path::PathBuf, String)> {
    let dir = libs.join(format!("mesh-{count}"));
    let marker = libs.join(format!("mesh-{count}.complete"));
    // The template by content, not path: any checkout makes the same files.
    let want = format!(
        "count={count} seed={seed} template={}\n",
        file_id(template)?
    );
    if dir.is_dir() && std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        println!("  library    reusing {} ({count} files)", dir.display());
        return Ok((dir, "reused".into()));
    }
    let _ = std::fs::remove_file(&marker);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).ctx(format!("removing stale {}", dir.display()))?;
    }
    print!(
        "  library    generating {count} files in {} (as `cargo run --release --example gen_library -- {} {count} {seed}`) ... ",
        dir.display(),
        dir.display()
    );
    flush();
    let t0 = std::time::Instant::now();
    let paths = tunemesh::library::generate::generate(template, &dir, count, seed)
        .ctx(format!("generating {}", dir.display()))?;
    let took = t0.elapsed().as_secs_f64();
    if paths.len() != count {
        return Err(format!("generator wrote {} files, wanted {count}", paths.len()).into());
    }
    println!("{took:.1} s");
    std::fs::write(&marker, want).ctx(format!("writing {}", marker.display()))?;
    Ok((dir, format!("generated in {took:.1} s")))
}

// ---------------------------------------------------------------- daemons

/// A child process killed (and reaped) when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tunemesh serve LIB` on loopback with data dir `data`, once its API is up.
pub fn daemon(data: &Path, lib: &Path) -> Res<Proc> {
    std::fs::create_dir_all(data)?;
    let log = std::fs::File::create(data.with_extension("log"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_tunemesh"))
        .arg("--data-dir")
        .arg(data)
        .arg("serve")
        .arg(lib)
        .args(["--api", "127.0.0.1:0", "--no-mdns", "--no-upnp"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .ctx("starting the daemon")?;
    let t = Instant::now();
    while !data.join("api.json").exists() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("the daemon did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Proc(child))
}

pub fn cli(data: &Path, args: &[&str]) -> Res<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_tunemesh"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .ctx("running tunemesh")?;
    if !o.status.success() {
        return Err(format!("tunemesh {args:?}: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    Ok(String::from_utf8(o.stdout)?)
}

pub fn wait_tracks(data: &Path, n: u64) -> Res<()> {
    let t = Instant::now();
    loop {
        let st: serde_json::Value = serde_json::from_str(&cli(data, &["status", "--json"])?)?;
        if st["tracks"].as_u64() == Some(n) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(1800) {
            return Err(format!("the scan did not reach {n} tracks: {st}").into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
