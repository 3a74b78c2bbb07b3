//! Helpers shared by the integration tests: run the real `tunemesh` binary
//! against a private data dir and parse what it prints.
#![allow(dead_code)]

pub mod daemon;
pub mod hostile;
pub mod proc;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every audio fixture of `fixtures()`, one per format.
pub const AUDIO_FIXTURES: [&str; 9] = [
    "Alpha Artist/First Album/01 - Opening.mp3",
    "Alpha Artist/First Album/02 - Sigur.flac",
    "Alpha Artist/First Album/03 - Vorbis.ogg",
    "Beta Band/Opus Works/01 Opus.opus",
    "Beta Band/Opus Works/02 AAC.m4a",
    "Beta Band/Lossless/01 ALAC.m4a",
    "Beta Band/Lossless/02 Wave.wav",
    "Beta Band/Lossless/03 Aiff.aiff",
    "Various/Compilation/01 Untagged.mp3",
];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lib")
}

/// Copy the fixture library into `dst` (tests mutate their own copy).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub struct Tm {
    pub data: tempfile::TempDir,
    /// Run the binary as this uid/gid (root tests drop privileges).
    pub run_as: Option<u32>,
}

impl Tm {
    pub fn new() -> Tm {
        Tm {
            data: tempfile::tempdir().unwrap(),
            run_as: None,
        }
    }

    /// A Tm whose commands run as the unprivileged `nobody` (uid 65534), so
    /// file permissions apply even when the tests run as root.
    pub fn unprivileged() -> Tm {
        use std::os::unix::fs::PermissionsExt;
        let tm = Tm {
            data: tempfile::tempdir().unwrap(),
            run_as: Some(65534),
        };
        std::fs::set_permissions(tm.data.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        tm
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tunemesh"));
        c.arg("--data-dir").arg(self.data.path());
        if let Some(id) = self.run_as {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::setgid(id) != 0 || libc::setuid(id) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run, require success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tunemesh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
    }

    pub fn scan(&self, dir: &Path) -> Value {
        self.json(&["scan", dir.to_str().unwrap(), "--json"])
    }

    pub fn ls(&self) -> Vec<Value> {
        self.json(&["ls", "--json"]).as_array().unwrap().clone()
    }

    pub fn root(&self) -> String {
        self.json(&["status", "--json"])["root"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn verify(&self) {
        let v = self.json(&["status", "--json", "--verify"]);
        assert_eq!(
            v["problems"],
            serde_json::json!([]),
            "index inconsistent: {v}"
        );
    }
}

pub fn by_title<'a>(tracks: &'a [Value], title: &str) -> &'a Value {
    tracks
        .iter()
        .find(|t| t["title"] == title)
        .unwrap_or_else(|| panic!("no track titled {title:?} in {tracks:#?}"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
