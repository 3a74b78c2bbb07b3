//! The node's own small state files in its data dir, beside the index and
//! the mesh's key and member list: the device name and relays given once
//! and kept, the API token, `api.json` (how a CLI or app finds the running
//! node's HTTP API), the device id of the last run, and `relay.json` (what
//! a running relay prints). An app embedding [`Node`](super::Node) reads
//! and writes them through [`StateDir`] as the `tunemesh` binary does.
//!
//! Owns: the layout and formats of those files, and writing a file only its
//! owner may read (0600, atomic: temporary file, fsync, rename).
//!
//! Must never: be called from an async fn on a runtime thread (every
//! function here does blocking file I/O; call it before or after the
//! runtime runs, or from a blocking task), log a token, or touch the index,
//! the mesh's files or the network.

use std::path::{Path, PathBuf};

/// A failure reading or writing a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A state file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A state file (or the data dir) cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A state file holds something it should not.
    #[error("{} is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system has no randomness to make a token from.
    #[error("no randomness for the API token: {0}")]
    Random(String),
}

/// The token every request to the HTTP API must carry. Made once per data
/// dir, so player URLs that carry it keep working across restarts.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Tokens shorter than this are not accepted from the file (made anew).
    pub const MIN_LEN: usize = 32;

    /// A token an app chose itself; `None` when shorter than [`MIN_LEN`]
    /// (usually [`StateDir::api_token`] makes and keeps one instead).
    ///
    /// [`MIN_LEN`]: ApiToken::MIN_LEN
    pub fn new(token: String) -> Option<ApiToken> {
        (token.len() >= ApiToken::MIN_LEN).then_some(ApiToken(token))
    }

    /// The token as it goes into a header or a URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

/// What a running node writes to `api.json` so the CLI (or an app) finds
/// its HTTP API; removed when the node stops.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ApiInfo {
    /// Base URL of the API, e.g. `http://127.0.0.1:7380`.
    pub url: String,
    /// The API token (see [`ApiToken`]).
    pub token: String,
    /// The node's device id, in its usual text form.
    pub device: String,
    /// Process id of the node.
    pub pid: u32,
}

impl ApiInfo {
    /// Its file name in the data dir.
    pub const FILE: &'static str = "api.json";
}

/// What a running relay writes to `relay.json`; removed when it stops.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RelayInfoFile {
    /// The relay's device id.
    pub id: String,
    /// The addresses it listens on and is reachable at.
    pub addrs: Vec<String>,
}

impl RelayInfoFile {
    /// Its file name in the data dir.
    pub const FILE: &'static str = "relay.json";
}

const NAME_FILE: &str = "name";
const RELAYS_FILE: &str = "relays";
const TOKEN_FILE: &str = "api-token";
const DEVICE_FILE: &str = "device";

/// The state files of one data dir. Every method does blocking file I/O.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state of the data dir `dir` (nothing is read yet).
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Create the data dir if it does not exist yet.
    pub fn create(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::Write {
            path: self.dir.clone(),
            source,
        })
    }

    /// The device name given before (trimmed), if any.
    pub fn name(&self) -> Result<Option<String>, StateError> {
        Ok(self
            .read(NAME_FILE)?
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()))
    }

    /// Keep `name` as the device name for later runs.
    pub fn save_name(&self, name: &str) -> Result<(), StateError> {
        write_private(&self.dir.join(NAME_FILE), name.as_bytes())
    }

    /// The relays given before (one address a line), if any.
    pub fn relays(&self) -> Result<Vec<String>, StateError> {
        Ok(self
            .read(RELAYS_FILE)?
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Keep `relays` for later runs (an empty list forgets them).
    pub fn save_relays(&self, relays: &[String]) -> Result<(), StateError> {
        write_private(&self.dir.join(RELAYS_FILE), relays.join("\n").as_bytes())
    }

    /// The API token of this data dir, made (and kept) on first use.
    pub fn api_token(&self) -> Result<ApiToken, StateError> {
        if let Some(t) = self.read(TOKEN_FILE)? {
            let t = t.trim();
            if let Some(t) = ApiToken::new(t.to_string()) {
                return Ok(t);
            }
        }
        let mut b = [0u8; 24];
        getrandom::fill(&mut b).map_err(|e| StateError::Random(e.to_string()))?;
        let t = data_encoding::BASE64URL_NOPAD.encode(&b);
        write_private(&self.dir.join(TOKEN_FILE), t.as_bytes())?;
        Ok(ApiToken(t))
    }

    /// Where `api.json` is.
    pub fn api_info_path(&self) -> PathBuf {
        self.dir.join(ApiInfo::FILE)
    }

    /// The running node's `api.json`, if there is one.
    pub fn api_info(&self) -> Result<Option<ApiInfo>, StateError> {
        let Some(text) = self.read(ApiInfo::FILE)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Damaged {
                path: self.api_info_path(),
                reason: e.to_string(),
            })
    }

    /// Write `api.json` (readable by the owner only: it holds the token).
    pub fn save_api_info(&self, info: &ApiInfo) -> Result<(), StateError> {
        write_json(&self.api_info_path(), info)
    }

    /// Remove `api.json` (the node stopped); a missing file is fine.
    pub fn remove_api_info(&self) {
        let _ = std::fs::remove_file(self.api_info_path());
    }

    /// The device id the node had when it last ran here, if it ever ran.
    pub fn device(&self) -> Result<Option<String>, StateError> {
        Ok(self
            .read(DEVICE_FILE)?
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty()))
    }

    /// Remember the node's device id (for offline listings of this device).
    pub fn save_device(&self, device: &str) -> Result<(), StateError> {
        if self.device()?.as_deref() == Some(device) {
            return Ok(());
        }
        write_private(&self.dir.join(DEVICE_FILE), device.as_bytes())
    }

    /// Where `relay.json` is.
    pub fn relay_info_path(&self) -> PathBuf {
        self.dir.join(RelayInfoFile::FILE)
    }

    /// Write `relay.json`.
    pub fn save_relay_info(&self, info: &RelayInfoFile) -> Result<(), StateError> {
        write_json(&self.relay_info_path(), info)
    }

    /// Remove `relay.json` (the relay stopped); a missing file is fine.
    pub fn remove_relay_info(&self) {
        let _ = std::fs::remove_file(self.relay_info_path());
    }

    /// A state file's text; `None` when it does not exist.
    fn read(&self, file: &str) -> Result<Option<String>, StateError> {
        let path = self.dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| StateError::Damaged {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_private(path, text.as_bytes())
}

/// Write a file only its owner can read (mode 0600 on Unix), atomically:
/// a temporary file beside it, fsync, rename. Blocking.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    crate::fsutil::write_atomic(path, bytes, crate::fsutil::FileMode::OwnerOnly).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_relays_and_token_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path());
        assert_eq!(s.name().unwrap(), None);
        assert!(s.relays().unwrap().is_empty());
        s.save_name("  kitchen \n").unwrap();
        assert_eq!(s.name().unwrap().as_deref(), Some("kitchen"));
        s.save_relays(&["/ip4/1.2.3.4/tcp/1/p2p/x".into(), "/dns/r/tcp/2".into()])
            .unwrap();
        assert_eq!(s.relays().unwrap().len(), 2);
        s.save_relays(&[]).unwrap();
        assert!(s.relays().unwrap().is_empty());
        let t = s.api_token().unwrap();
        assert!(t.as_str().len() >= ApiToken::MIN_LEN);
        assert_eq!(s.api_token().unwrap(), t, "the token is made once");
        assert!(!format!("{t:?}").contains(t.as_str()), "Debug hides it");
        assert!(ApiToken::new("short".into()).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only_and_api_info_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path());
        assert!(s.api_info().unwrap().is_none());
        let info = ApiInfo {
            url: "http://127.0.0.1:1".into(),
            token: "t".into(),
            device: "d".into(),
            pid: 7,
        };
        s.save_api_info(&info).unwrap();
        let mode = std::fs::metadata(s.api_info_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.api_info().unwrap().unwrap().pid, 7);
        s.remove_api_info();
        assert!(s.api_info().unwrap().is_none());
        std::fs::write(s.api_info_path(), "{").unwrap();
        assert!(matches!(s.api_info(), Err(StateError::Damaged { .. })));
    }
}
