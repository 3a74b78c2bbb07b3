//! Helpers shared by the benchmark drivers: reporting, errors with
//! context, machine facts, Ogg page counting.
#![allow(dead_code)] // each bench uses its own subset

use std::error::Error;
use std::fmt::Display;
use std::process::{Command, Stdio};

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
