//! Commands that talk to the running node through its HTTP API (found by
//! `api.json` in the data dir): status, invite, join, devices, peers, get,
//! and ls / search of the merged library.
//!
//! Owns: the API client (ureq); answers are deserialised into the API's
//! own DTO types (`tunemesh::http::dto`).
//!
//! Must never: read the index or the node's files besides `api.json` (the
//! node holds them), or keep a download that is not whole and checked.

use super::args::{DevicesArgs, DevicesCommand, GetArgs, InviteArgs, JoinArgs, PeersArgs};
use super::output::{self, Format, Layout};
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;
use tunemesh::fsutil::{self, FileMode};
use tunemesh::http::dto::{
    DeviceView, ErrorView, InviteView, JoinRequest, JoinView, PeerView, RemovedView, SearchView,
    StatusView, TrackView,
};
use tunemesh::node::state::{ApiInfo, StateDir};

/// The running node's HTTP API, found through `api.json` in the data dir.
pub struct ApiClient {
    info: ApiInfo,
    agent: ureq::Agent,
}

/// Which part of the merged library to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Tracks this device holds.
    Local,
    /// Every member's.
    All,
}

impl ApiClient {
    /// A node runs for `dir` and answers.
    pub fn running(dir: &Path) -> bool {
        ApiClient::open(dir)
            .and_then(|a| a.get::<StatusView>("/api/status", &[]))
            .is_ok()
    }

    /// The client of the node running for `dir` (it is not asked yet).
    pub fn open(dir: &Path) -> Result<ApiClient> {
        let state = StateDir::new(dir);
        let not_running = || {
            anyhow::anyhow!(
                "no tunemesh node is running for {} (start one with `tunemesh serve`)",
                dir.display()
            )
        };
        let info = match state.api_info() {
            Ok(Some(info)) => info,
            Ok(None) | Err(tunemesh::node::state::StateError::Read { .. }) => {
                return Err(not_running())
            }
            Err(e) => return Err(e.into()),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(ApiClient { info, agent })
    }

    /// The node's API address, e.g. `http://127.0.0.1:7380`.
    pub fn base_url(&self) -> &str {
        &self.info.url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.info.url, path)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.info.token)
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the tunemesh node at {} ({e}); is `tunemesh serve` running?",
            self.info.url
        )
    }

    /// GET `path` with query parameters (encoded by ureq).
    pub fn get<T: DeserializeOwned>(&self, path: &str, params: &[(&str, String)]) -> Result<T> {
        let resp = self
            .agent
            .get(self.url(path))
            .query_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .header("authorization", &self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        answer(resp)
    }

    /// POST `path`, with `body` as JSON if given.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let req = self
            .agent
            .post(self.url(path))
            .header("authorization", &self.auth());
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        }
        .map_err(|e| self.unreachable(e))?;
        answer(resp)
    }

    /// PATCH `path` with `body` as JSON.
    pub fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let resp = self
            .agent
            .patch(self.url(path))
            .header("authorization", &self.auth())
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        answer(resp)
    }

    /// PUT `path` with `body` as JSON.
    pub fn put<T: DeserializeOwned>(&self, path: &str, body: &impl serde::Serialize) -> Result<T> {
        let resp = self
            .agent
            .put(self.url(path))
            .header("authorization", &self.auth())
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        answer(resp)
    }

    /// DELETE `path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .agent
            .delete(self.url(path))
            .header("authorization", &self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        answer(resp)
    }

    /// Stream `path` into `output`, which appears only when whole (and, for
    /// an original, only if its blake3 is the track id).
    pub fn download(&self, path: &str, output: &Path, check: Check) -> Result<()> {
        let resp = self
            .agent
            .get(self.url(path))
            .header("authorization", &self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return answer::<serde_json::Value>(resp).map(|_| ());
        }
        let track = resp
            .headers()
            .get("x-tunemesh-track")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut body = resp.into_body();
        let mut reader = body.as_reader();
        // The file appears only when whole (and checked): nothing is kept
        // of a download that fails.
        fsutil::write_atomic_with(output, FileMode::Default, |tmp| -> Result<()> {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = reader.read(&mut buf).context("download failed")?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                tmp.write_all(&buf[..n])
                    .with_context(|| format!("cannot write in {}", output.display()))?;
            }
            if check == Check::TrackId && hasher.finalize().to_hex().as_str() != track {
                bail!("the file received is not track {track} (blake3 differs); nothing was kept");
            }
            Ok(())
        })
    }
}

/// What a download is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing (a transcode has no id to check).
    None,
    /// Its blake3 must be the track id the node names.
    TrackId,
}

/// The answer's JSON as `T`, or its error message as an error.
fn answer<T: DeserializeOwned>(resp: ureq::http::Response<ureq::Body>) -> Result<T> {
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let e: Option<ErrorView> = body.read_json().ok();
        bail!(
            "{}",
            e.map_or_else(|| status.as_str().to_string(), |e| e.error)
        );
    }
    body.read_json()
        .context("the node's answer is not what this tunemesh expects")
}

/// `tunemesh invite`.
pub fn invite(dir: &Path, a: InviteArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let v: InviteView = api.post(&format!("/api/invite?ttl={}", a.ttl_min * 60), None::<&()>)?;
    if a.quiet {
        println!("{}", v.ticket);
        return Ok(());
    }
    if std::io::stdout().is_terminal() {
        if let Ok(code) = qrcode::QrCode::new(v.ticket.as_bytes()) {
            let img = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            println!("{img}");
        }
    }
    println!("{}", v.ticket);
    eprintln!(
        "On the new device: tunemesh join <ticket>  (valid {} min, once)",
        a.ttl_min
    );
    Ok(())
}

/// `tunemesh join`.
pub fn join(dir: &Path, a: JoinArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let v: JoinView = api.post("/api/join", Some(&JoinRequest { ticket: a.ticket }))?;
    println!("joined mesh {}", v.mesh);
    output::print_devices(&v.devices, Format::Text)
}

/// `tunemesh devices [remove ID]`.
pub fn devices(dir: &Path, a: DevicesArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    match a.command {
        Some(DevicesCommand::Remove { id }) => {
            let _: RemovedView = api.delete(&format!("/api/devices/{id}"))?;
            println!("removed {id}");
            Ok(())
        }
        None => {
            let v: Vec<DeviceView> = api.get("/api/devices", &[])?;
            output::print_devices(&v, Format::json_if(a.json))
        }
    }
}

/// `tunemesh peers`.
pub fn peers(dir: &Path, a: PeersArgs) -> Result<()> {
    let v: Vec<PeerView> = ApiClient::open(dir)?.get("/api/peers", &[])?;
    output::print_peers(&v, Format::json_if(a.json))
}

/// `tunemesh status` while a node runs (it holds the index).
pub fn status(dir: &Path, format: Format) -> Result<()> {
    let v: StatusView = ApiClient::open(dir)?.get("/api/status", &[])?;
    match format {
        Format::Json => output::print_json(&v),
        Format::Text => {
            output::print_status(&v, dir);
            Ok(())
        }
    }
}

/// `tunemesh get`.
pub fn get(dir: &Path, a: GetArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let (q, check) = if a.original {
        ("original".to_string(), Check::TrackId)
    } else {
        (a.bitrate.to_string(), Check::None)
    };
    api.download(&format!("/stream/{}?bitrate={q}", a.id), &a.output, check)
}

/// `tunemesh ls` through the node: this device's tracks, or every member's.
pub fn ls(dir: &Path, scope: Scope, format: Format) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let params = match scope {
        Scope::All => vec![],
        Scope::Local => vec![("scope", "local".to_string())],
    };
    let v: Vec<TrackView> = api.get("/api/library", &params)?;
    output::print_tracks(&v, format, Layout::Library)
}

/// `tunemesh search` through the node (the merged library).
pub fn search(dir: &Path, query: &str, limit: usize, format: Format) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let found: SearchView = api.get(
        "/api/search",
        &[("q", query.to_string()), ("limit", limit.to_string())],
    )?;
    output::print_tracks(&found.tracks, format, Layout::Library)
}
