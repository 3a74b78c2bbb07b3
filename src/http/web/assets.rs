//! The web player's files, embedded in the binary: plain ES modules and
//! CSS written in `ui/`, no build step.
//!
//! Every file is served under `/assets/VERSION/NAME`, VERSION being a
//! hash of all of them, with a year's immutable caching: a new binary
//! has new URLs, and relative module imports stay within one version.
//! `index.html` (the shell, `no-cache`) names the current version. Each
//! file is gzipped once, on first use, and has a strong ETag.

use std::sync::OnceLock;

/// One embedded file.
pub struct Asset {
    /// Its name under `ui/`.
    pub name: &'static str,
    /// Its Content-Type.
    pub mime: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

macro_rules! ui {
    ($($name:literal => $mime:expr),* $(,)?) => {
        &[$(Asset { name: $name, mime: $mime, bytes: include_bytes!(concat!("ui/", $name)) }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the player but the shell.
pub static FILES: &[Asset] = ui! {
    "app.js" => JS,
    "api.js" => JS,
    "player.js" => JS,
    "queue.js" => JS,
    "queuesync.js" => JS,
    "views.js" => JS,
    "mine.js" => JS,
    "playlists.js" => JS,
    "offline.js" => JS,
    "scrobble.js" => JS,
    "util.js" => JS,
    "style.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
};

/// The shell's template (`{{v}}` becomes the version).
const SHELL: &str = include_str!("ui/index.html");

/// A file ready to serve.
pub struct Ready {
    /// Content-Type.
    pub mime: &'static str,
    /// The bytes as they are.
    pub plain: &'static [u8],
    /// Gzipped.
    pub gzip: Vec<u8>,
    /// Strong ETag, quoted.
    pub etag: String,
}

fn ready(mime: &'static str, plain: &'static [u8]) -> Ready {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(plain);
    let gzip = gz.finish().unwrap_or_default();
    Ready {
        mime,
        plain,
        gzip,
        etag: format!("\"{}\"", &blake3::hash(plain).to_hex()[..20]),
    }
}

/// The version in asset URLs: a hash of every file.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        for a in FILES {
            h.update(a.name.as_bytes());
            h.update(&(a.bytes.len() as u64).to_le_bytes());
            h.update(a.bytes);
        }
        h.finalize().to_hex()[..12].to_string()
    })
}

/// The shell, with the current version in its URLs.
pub fn shell() -> &'static Ready {
    static S: OnceLock<Ready> = OnceLock::new();
    S.get_or_init(|| {
        let text: &'static str = Box::leak(SHELL.replace("{{v}}", version()).into_boxed_str());
        ready("text/html; charset=utf-8", text.as_bytes())
    })
}

/// The file `name`, if the player has one.
pub fn file(name: &str) -> Option<&'static Ready> {
    static R: OnceLock<Vec<Ready>> = OnceLock::new();
    let all = R.get_or_init(|| FILES.iter().map(|a| ready(a.mime, a.bytes)).collect());
    FILES.iter().position(|a| a.name == name).map(|i| &all[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_compressed_with_its_etag() {
        for a in FILES {
            let r = file(a.name).unwrap();
            assert!(!r.gzip.is_empty());
            assert!(r.etag.starts_with('"'));
        }
        assert!(file("nope.js").is_none());
        assert!(shell()
            .plain
            .windows(version().len())
            .any(|w| w == version().as_bytes()));
    }

    #[test]
    fn modules_import_only_files_that_exist() {
        for a in FILES.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line.split(['"', '\'']).nth(1).unwrap();
                let name = from.trim_start_matches("./");
                assert!(file(name).is_some(), "{} imports {from}", a.name);
            }
        }
    }
}
