//! Child processes run under limits: wall time (killed past it), peak RSS
//! (from wait4), and what they said on stderr.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run a command to its end, killing it after `limit`: its exit status,
/// stderr, wall time and peak RSS (KiB, from wait4).
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
    pub peak_kib: u64,
    pub killed: bool,
}

pub fn run_bounded(mut cmd: Command, limit: Duration) -> Run {
    let err = tempfile::NamedTempFile::new().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    cmd.stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap());
    let t = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: plain syscalls on our own child.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if t.elapsed() > limit && !killed {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t.elapsed();
    std::mem::forget(child); // reaped above
    Run {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: std::fs::read_to_string(err.path()).unwrap_or_default(),
        stdout: std::fs::read_to_string(out.path()).unwrap_or_default(),
        took,
        peak_kib: usage.ru_maxrss as u64,
        killed,
    }
}

/// Whether ffprobe is here (it is the independent judge of our output).
pub fn have_ffprobe() -> bool {
    let ok = Command::new("ffprobe").arg("-version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED the ffprobe checks: ffprobe is not installed (.ci/run installs it)");
    }
    ok
}

/// The codec of a file's first stream as ffprobe names it (`opus`,
/// `mp3`…); empty when ffprobe cannot read it.
pub fn ffprobe_codec(path: &Path) -> String {
    Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Duration of an output as ffprobe reads it (decoding it whole).
pub fn ffprobe_seconds(path: &Path) -> Result<f64, String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(format!(
            "ffprobe: {} {}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
}
