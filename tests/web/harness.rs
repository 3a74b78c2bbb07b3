//! What the web player tests share: a daemon with a small library, login
//! URLs, plain HTTP calls, and a Chromium session through chromedriver
//! (or a loud SKIPPED where neither is installed).

use super::common::daemon::{wait_until, Daemon};
use super::common::hostile::Wav;
use super::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A library: the fixture album (three 1 s tracks) and a 20 s tone to seek in.
pub fn library() -> tempfile::TempDir {
    let lib = tempfile::tempdir().unwrap();
    copy_tree(
        &fixtures().join("Alpha Artist"),
        &lib.path().join("Alpha Artist"),
    );
    let long = lib.path().join("Tone/Long Tone");
    std::fs::create_dir_all(&long).unwrap();
    let wav = Wav {
        frames: 44_100 * 20,
        ..Wav::default()
    };
    std::fs::write(long.join("01 - Twenty Seconds.wav"), wav.bytes()).unwrap();
    lib
}

pub fn start(lib: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![lib.to_str().unwrap(), "--no-upnp"];
    args.extend_from_slice(extra);
    let d = Daemon::start(Tm::new(), &args);
    wait_until("the scan", 60, || {
        d.json(&["status", "--json"])["tracks"].as_u64() == Some(4)
    });
    d
}

pub fn login_url(d: &Daemon) -> String {
    let url = d.tm.ok(&["open", "--print"]).trim().to_string();
    assert!(url.contains("/#code="), "{url}");
    url
}

pub fn code_of(url: &str) -> String {
    url.split("#code=").nth(1).unwrap().to_string()
}

pub fn post_json(url: &str, origin: Option<&str>, body: Value) -> (u16, String, Option<String>) {
    let mut r = agent().post(url).header("content-type", "application/json");
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    let mut resp = r.send(body.to_string()).unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap(), cookie)
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut r = agent().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let mut resp = r.call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chromium and chromedriver, if both are installed.
pub fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(n))
                .find(|p| p.is_file())
        })
    };
    let chrome = find(&["chromium", "chromium-browser", "google-chrome"])?;
    let driver = find(&["chromedriver"])?;
    Some((chrome, driver))
}

/// Chromium and chromedriver, or `None` after saying SKIPPED loudly
/// (outside CI only: CI must have them).
pub fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = browser();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium and chromedriver (.ci/run installs them)"
        );
        eprintln!("SKIPPED {test}: chromium and chromedriver are not installed (CI has them)");
    }
    found
}

pub struct Driver(pub Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh Chromium session through its own chromedriver.
pub async fn session(chrome: &Path, driver: &Path) -> (Driver, fantoccini::Client) {
    let port = free_port();
    let driver_proc = Driver(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                     "--disable-dev-shm-usage"],
        }),
    );
    let t = Instant::now();
    let c = loop {
        match fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps.clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        {
            Ok(c) => break c,
            Err(e) if t.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver: {e}"),
        }
    };
    (driver_proc, c)
}

/// Evaluate `js` (a function body) in the page.
pub async fn js(c: &fantoccini::Client, body: &str) -> anyhow::Result<Value> {
    Ok(c.execute(body, vec![]).await?)
}

/// Wait until `js` returns true.
pub async fn until(
    c: &fantoccini::Client,
    what: &str,
    secs: u64,
    body: &str,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if js(c, body).await? == Value::Bool(true) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(secs) {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on the daemon's API with its token, as JSON.
pub fn api_json(d: &Daemon, path: &str) -> anyhow::Result<Value> {
    let (api, token) = d.api();
    let (s, body) = get(
        &format!("{api}{path}"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    anyhow::ensure!(s == 200, "GET {path}: {s} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Wait until `f` holds for `GET path`.
pub async fn api_until(
    d: &Daemon,
    what: &str,
    path: &str,
    f: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let t = Instant::now();
    loop {
        let v = api_json(d, path)?;
        if f(&v) {
            return Ok(v);
        }
        if t.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("timed out waiting for {what}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser test: skip (loudly) without a browser, else start the daemon
/// `setup` makes, open a session, run `body`, and fail with the daemon's
/// log if it fails.
pub async fn browser_test(
    what: &str,
    setup: impl FnOnce() -> Daemon,
    body: impl AsyncFnOnce(&fantoccini::Client, &Daemon) -> anyhow::Result<()>,
) {
    let Some((chrome, driver)) = browser_or_skip(what) else {
        return;
    };
    let d = setup();
    let (_driver, c) = session(&chrome, &driver).await;
    let r = body(&c, &d).await;
    let _ = c.close().await;
    if let Err(e) = r {
        panic!("{e:#}\ndaemon log:\n{}", d.logs());
    }
    d.stop();
}

/// Open the fixture album from the albums grid and wait for its tracks.
pub async fn open_first_album(c: &fantoccini::Client) -> anyhow::Result<()> {
    use fantoccini::Locator;
    c.find(Locator::XPath(
        "//a[contains(@class,'card')][.//div[text()='First Album']]",
    ))
    .await?
    .click()
    .await?;
    until(
        c,
        "the album page",
        10,
        "return document.querySelectorAll('.tracks .track').length === 3",
    )
    .await
}

/// From now on, collect what the page throws (errors, unhandled
/// rejections, `console.error`) in `window.errors`, for `no_page_errors`.
/// It lasts until the page reloads; moves between views keep it.
pub async fn catch_page_errors(c: &fantoccini::Client) -> anyhow::Result<()> {
    js(c, "window.errors = []; addEventListener('error', (e) => errors.push(e.message)); addEventListener('unhandledrejection', (e) => errors.push(String(e.reason))); const ce = console.error; console.error = (...a) => { errors.push(a.map(String).join(' ')); ce(...a); }; return true").await?;
    Ok(())
}

/// Fail if the page threw since `catch_page_errors`.
pub async fn no_page_errors(c: &fantoccini::Client) -> anyhow::Result<()> {
    let errors = js(c, "return window.errors").await?;
    anyhow::ensure!(errors == json!([]), "the page threw: {errors}");
    Ok(())
}

/// A home with `lib` and a phone joined to it (through the CLI: `invite
/// --quiet`, `join`), once the phone lists the home's tracks.
pub fn home_and_phone(lib: &Path) -> (Daemon, Daemon) {
    let home = start(lib, &["--name", "home"]);
    let phone = Daemon::start(Tm::new(), &["--role", "phone", "--name", "phone"]);
    let ticket = home.tm.ok(&["invite", "--quiet"]);
    phone.tm.ok(&["join", ticket.trim()]);
    wait_until("the phone to list the home's tracks", 30, || {
        phone
            .json(&["ls", "--all", "--json"])
            .as_array()
            .map(Vec::len)
            == Some(4)
    });
    (home, phone)
}
