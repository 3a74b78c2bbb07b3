//! The web player end to end: a real daemon, its real HTTP listeners, and
//! (when one is installed) a real Chromium driven through chromedriver,
//! doing what a person does: log in with the URL `tunemesh open` prints,
//! search, click a track, hear it advance, seek on a cold track, reload
//! and find the queue, at desktop and phone sizes.
//!
//! Without Chromium and chromedriver the browser test says SKIPPED loudly
//! (CI installs both, and there it fails instead of skipping).

mod common;
use common::daemon::{wait_until, Daemon};
use common::hostile::Wav;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A library: the fixture album (three 1 s tracks) and a 20 s tone to seek in.
fn library() -> tempfile::TempDir {
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

fn start(lib: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![lib.to_str().unwrap(), "--no-upnp"];
    args.extend_from_slice(extra);
    let d = Daemon::start(Tm::new(), &args);
    wait_until("the scan", 60, || {
        d.json(&["status", "--json"])["tracks"].as_u64() == Some(4)
    });
    d
}

fn login_url(d: &Daemon) -> String {
    let url = d.tm.ok(&["open", "--print"]).trim().to_string();
    assert!(url.contains("/#code="), "{url}");
    url
}

fn code_of(url: &str) -> String {
    url.split("#code=").nth(1).unwrap().to_string()
}

fn post_json(url: &str, origin: Option<&str>, body: Value) -> (u16, String, Option<String>) {
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

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
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

#[test]
fn logins_sessions_and_the_guards_hold() {
    let lib = library();
    // --web refuses to start while no account exists, and says how to make one.
    let tm = Tm::new();
    let o = tm.run(&[
        "serve",
        lib.path().to_str().unwrap(),
        "--web",
        "127.0.0.1:0",
        "--no-mdns",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tunemesh user add"), "{err}");

    let tm = Tm::new();
    let add = tm
        .cmd()
        .args(["user", "add", "ana", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin
        .as_ref()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    assert!(add.wait_with_output().unwrap().status.success());
    let users = tm.json(&["user", "ls", "--json"]);
    assert_eq!(users[0]["name"], "ana", "{users}");
    let text = std::fs::read_to_string(tm.data.path().join("users.json")).unwrap();
    assert!(!text.contains("correct horse"), "passwords are sealed");

    let web_port = free_port();
    let web_addr = format!("127.0.0.1:{web_port}");
    let d = Daemon::start(tm, &[lib.path().to_str().unwrap(), "--web", &web_addr]);
    let (api, token) = d.api();
    let web = format!("http://{web_addr}");

    // The shell is public, carries the CSP, and names no token.
    let resp = agent().get(format!("{api}/")).call().unwrap();
    let csp = resp
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // DNS rebinding: a foreign Host is refused on both listeners.
    for base in [&api, &web] {
        let (s, _) = get(&format!("{base}/api/status"), &[("host", "evil.example")]);
        assert_eq!(s, 421, "{base}");
    }
    // The token works on loopback only; the LAN listener wants a login.
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(&format!("{api}/api/status"), &[("authorization", &bearer)]).0,
        200
    );
    assert_eq!(
        get(&format!("{web}/api/status"), &[("authorization", &bearer)]).0,
        401
    );
    assert_eq!(get(&format!("{api}/api/albums"), &[]).0, 401);

    // A login code: refused cross-site, good once, and gone after use.
    let url = login_url(&d);
    let code = code_of(&url);
    let login = format!("{api}/api/web/login");
    let (s, _, _) = post_json(&login, Some("http://evil.example"), json!({ "code": code }));
    assert_eq!(s, 403);
    let (s, body, cookie) = post_json(&login, Some(&api), json!({ "code": code }));
    assert_eq!(s, 200, "{body}");
    let cookie = cookie.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let (s, _, _) = post_json(&login, Some(&api), json!({ "code": code }));
    assert_eq!(s, 401, "a code is good once");
    let (s, me) = get(&format!("{api}/api/web/me"), &[("cookie", &session)]);
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&me).unwrap()["owner"], true);
    // A forged cookie is nobody.
    let (s, _) = get(
        &format!("{api}/api/albums"),
        &[("cookie", "tunemesh_session=forged")],
    );
    assert_eq!(s, 401);
    // A cookie-borne change from another site is refused; from ours it runs.
    let invite = |origin: &str| {
        agent()
            .post(format!("{api}/api/invite"))
            .header("cookie", &session)
            .header("origin", origin)
            .send_empty()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(invite("http://evil.example"), 403);
    assert_eq!(invite(&api), 200);

    // An account on the LAN listener: a wrong password, the right one,
    // a user's limits, logout, and the brake on guessing.
    let wlogin = format!("{web}/api/web/login");
    let (s, _, _) = post_json(
        &wlogin,
        Some(&web),
        json!({"user": "ana", "password": "nope"}),
    );
    assert_eq!(s, 401);
    let (s, _, cookie) = post_json(
        &wlogin,
        Some(&web),
        json!({"user": "ana", "password": "correct horse"}),
    );
    assert_eq!(s, 200);
    let ana = cookie.unwrap().split(';').next().unwrap().to_string();
    let (s, albums) = get(&format!("{web}/api/albums"), &[("cookie", &ana)]);
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&albums).unwrap()["total"], 2);
    let s = agent()
        .post(format!("{web}/api/invite"))
        .header("cookie", &ana)
        .header("origin", &web)
        .send_empty()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(s, 403, "only the owner invites");
    let s = agent()
        .post(format!("{web}/api/web/logout"))
        .header("cookie", &ana)
        .header("origin", &web)
        .send_empty()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(s, 204);
    assert_eq!(
        get(&format!("{web}/api/albums"), &[("cookie", &ana)]).0,
        401
    );
    let mut statuses = vec![];
    for _ in 0..7 {
        let (s, _, _) = post_json(&wlogin, Some(&web), json!({"user": "ana", "password": "x"}));
        statuses.push(s);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Braked, even the right password waits.
    let (s, _, _) = post_json(
        &wlogin,
        Some(&web),
        json!({"user": "ana", "password": "correct horse"}),
    );
    assert_eq!(s, 429);
    // Unknown routes: a page, or a JSON error under /api/.
    assert_eq!(get(&format!("{api}/no/such/page"), &[]).0, 404);
    d.stop();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chromium and chromedriver, if both are installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
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
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
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

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_searches_plays_seeks_and_reloads() {
    let Some((chrome, driver)) = browser_or_skip("web player browser test") else {
        return;
    };
    let lib = library();
    let d = start(lib.path(), &[]);
    let (_driver, c) = session(&chrome, &driver).await;
    let r = browse(&c, &d).await;
    let _ = c.close().await;
    if let Err(e) = r {
        panic!("{e:#}\ndaemon log:\n{}", d.logs());
    }
    d.stop();
}

/// A fresh Chromium session through its own chromedriver.
async fn session(chrome: &Path, driver: &Path) -> (Driver, fantoccini::Client) {
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
async fn js(c: &fantoccini::Client, body: &str) -> anyhow::Result<Value> {
    Ok(c.execute(body, vec![]).await?)
}

/// Wait until `js` returns true.
async fn until(c: &fantoccini::Client, what: &str, secs: u64, body: &str) -> anyhow::Result<()> {
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

async fn browse(c: &fantoccini::Client, d: &Daemon) -> anyhow::Result<()> {
    use fantoccini::Locator;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-player");
    std::fs::create_dir_all(&shots)?;

    // Log in with the printed URL: the code leaves the address bar, the
    // session cookie is not readable by scripts.
    c.goto(&login_url(d)).await?;
    until(
        c,
        "the albums grid",
        20,
        "return document.querySelectorAll('.grid .card').length >= 2",
    )
    .await?;
    let url = c.current_url().await?;
    anyhow::ensure!(
        !url.as_str().contains("code="),
        "the code stayed in the URL: {url}"
    );
    anyhow::ensure!(
        js(c, "return document.cookie").await? == json!(""),
        "the cookie is HttpOnly"
    );
    anyhow::ensure!(
        js(c, "return history.length").await? == json!(1) || !url.as_str().contains("code"),
        "history"
    );
    std::fs::write(shots.join("albums-1280x800.png"), c.screenshot().await?)?;

    // Search as you type, accents and case ignored ("ROS" finds "Rós"), and click the track.
    let search = c.find(Locator::Id("search")).await?;
    search.send_keys("SIGUR ROS").await?;
    until(c, "search results", 10, "return [...document.querySelectorAll('.results .t-title')].some(a => a.textContent === 'Sigur Rós Tribute')").await?;
    c.find(Locator::XPath(
        "//ol[contains(@class,'results')]//a[text()='Sigur Rós Tribute']",
    ))
    .await?
    .click()
    .await?;
    until(c, "Sigur to play", 15, "const p = tunemesh.player; return p.playing && p.queue.current.title === 'Sigur Rós Tribute' && p.position > 0.05").await?;

    // An album rolls over to its next track by itself.
    c.goto(&format!("{}/#/albums", d.api().0)).await?;
    until(
        c,
        "the albums grid again",
        10,
        "return document.querySelectorAll('.grid .card').length >= 2",
    )
    .await?;
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
    .await?;
    c.find(Locator::XPath("//button[contains(., 'Play')]"))
        .await?
        .click()
        .await?;
    until(
        c,
        "the album to reach its third track",
        20,
        "const p = tunemesh.player; return p.queue.index === 2 && p.playing",
    )
    .await?;
    let dur = js(c, "return document.getElementById('dur').textContent").await?;
    anyhow::ensure!(dur == json!("0:01"), "duration shown: {dur}");
    let gaps = js(c, "return tunemesh.player.gaps").await?;
    eprintln!("gaps between album tracks (ms from one's end to the next playing): {gaps}");
    let gaps: Vec<f64> = serde_json::from_value(gaps)?;
    anyhow::ensure!(gaps.len() == 2, "two roll-overs measured: {gaps:?}");

    // A cold track: its full duration shows at once, and a seek lands.
    c.goto(&format!("{}/#/search?q=twenty", d.api().0)).await?;
    until(
        c,
        "the long tone",
        10,
        "return !!document.querySelector('.results .t-title')",
    )
    .await?;
    c.find(Locator::Css(".results .t-title"))
        .await?
        .click()
        .await?;
    until(c, "the tone to play", 15, "return tunemesh.player.playing && tunemesh.player.queue.current.title === 'Twenty Seconds'").await?;
    let dur = js(c, "return document.getElementById('dur').textContent").await?;
    anyhow::ensure!(
        dur == json!("0:20"),
        "a cold track shows its duration at once: {dur}"
    );
    js(c, "const s = document.getElementById('seek'); s.value = '12'; s.dispatchEvent(new Event('change')); window.seekAt = performance.now(); tunemesh.player.el.addEventListener('playing', () => { window.seekMs = performance.now() - window.seekAt; }, {once: true}); return true").await?;
    until(c, "the seek to land", 10, "const p = tunemesh.player; return p.playing && p.position >= 12 && p.position < 16 && window.seekMs !== undefined").await?;
    let seek_ms = js(c, "return window.seekMs").await?;
    eprintln!("cold seek landed in {seek_ms} ms");

    // A reload finds the queue and the track again.
    let before = js(c, "return tunemesh.queue.items.map(t => t.title)").await?;
    c.refresh().await?;
    until(c, "the player after a reload", 15, "return !!window.tunemesh && document.getElementById('now-title').textContent === 'Twenty Seconds'").await?;
    let after = js(c, "return tunemesh.queue.items.map(t => t.title)").await?;
    anyhow::ensure!(before == after, "queue before {before}, after {after}");

    // The phone layout: 390 px wide, no horizontal scrolling.
    c.set_window_size(390, 844).await?;
    c.goto(&format!("{}/#/albums", d.api().0)).await?;
    until(
        c,
        "the grid at 390 px",
        10,
        "return document.querySelectorAll('.grid .card').length >= 2",
    )
    .await?;
    let w = js(c, "return document.documentElement.scrollWidth").await?;
    let inner = js(c, "return window.innerWidth").await?;
    anyhow::ensure!(
        w.as_f64() <= inner.as_f64(),
        "horizontal scrolling at 390 px: {w} > {inner}"
    );
    std::fs::write(shots.join("albums-390x844.png"), c.screenshot().await?)?;
    eprintln!("screenshots in {}", shots.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_holder_goes_away_the_player_says_so_and_never_spins() {
    let Some((chrome, driver)) = browser_or_skip("web player offline test") else {
        return;
    };
    let lib = library();
    let home = start(lib.path(), &["--name", "home"]);
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
    let (_driver, c) = session(&chrome, &driver).await;
    let r = offline(&c, &phone, home).await;
    let _ = c.close().await;
    if let Err(e) = r {
        panic!("{e:#}\nphone log:\n{}", phone.logs());
    }
}

async fn offline(c: &fantoccini::Client, phone: &Daemon, mut home: Daemon) -> anyhow::Result<()> {
    c.goto(&login_url(phone)).await?;
    until(
        c,
        "the phone's albums",
        20,
        "return document.querySelectorAll('.grid .card').length >= 2",
    )
    .await?;
    // Mid-track: the holder is killed while the long tone plays.
    c.goto(&format!("{}/#/search?q=twenty", phone.api().0))
        .await?;
    until(
        c,
        "the long tone",
        10,
        "return !!document.querySelector('.results .t-title')",
    )
    .await?;
    c.find(fantoccini::Locator::Css(".results .t-title"))
        .await?
        .click()
        .await?;
    until(
        c,
        "the tone to play through the mesh",
        20,
        "return tunemesh.player.playing && tunemesh.player.position > 0.3",
    )
    .await?;
    home.child.kill()?;
    home.child.wait()?;
    // Whatever was buffered plays out; then the player stops or says why,
    // within the stall limit, never waiting forever.
    until(
        c,
        "the player to stop or say why",
        60,
        "const p = tunemesh.player; return !p.playing || p.error !== null",
    )
    .await?;
    // A track no online device holds: greyed out, and a click says why.
    wait_until("the phone to see the home gone", 30, || {
        phone
            .json(&["peers", "--json"])
            .as_array()
            .is_some_and(|p| p.iter().all(|x| x["connected"] != true))
    });
    c.goto(&format!("{}/#/albums", phone.api().0)).await?;
    c.refresh().await?;
    until(c, "offline albums greyed out", 15, "const cards = document.querySelectorAll('.grid .card'); return cards.length >= 2 && [...cards].every(c => c.classList.contains('offline'))").await?;
    c.goto(&format!("{}/#/search?q=sigur", phone.api().0))
        .await?;
    until(c, "the offline track", 10, "const t = document.querySelector('.results .track'); return !!t && t.classList.contains('offline')").await?;
    c.find(fantoccini::Locator::Css(".results .t-title"))
        .await?
        .click()
        .await?;
    until(c, "a message, not a spinner", 30, "const t = document.getElementById('toast'); return !t.hidden && t.textContent.includes('Cannot play') && !tunemesh.player.playing").await?;
    let msg = js(c, "return document.getElementById('toast').textContent").await?;
    eprintln!("the player said: {msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_stars_makes_a_playlist_reorders_it_and_plays_count() {
    let Some((chrome, driver)) = browser_or_skip("web player shared-state test") else {
        return;
    };
    let lib = library();
    let d = start(lib.path(), &[]);
    let (_driver, c) = session(&chrome, &driver).await;
    let r = mark_list_and_play(&c, &d).await;
    let _ = c.close().await;
    if let Err(e) = r {
        panic!("{e:#}\ndaemon log:\n{}", d.logs());
    }
    d.stop();
}

/// `GET path` on the daemon's API with its token, as JSON.
fn api_json(d: &Daemon, path: &str) -> anyhow::Result<Value> {
    let (api, token) = d.api();
    let (s, body) = get(
        &format!("{api}{path}"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    anyhow::ensure!(s == 200, "GET {path}: {s} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Wait until `f` holds for `GET path`.
async fn api_until(
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

/// Titles of a playlist's entries, as the node has them.
fn entry_titles(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["track"]["title"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn mark_list_and_play(c: &fantoccini::Client, d: &Daemon) -> anyhow::Result<()> {
    use fantoccini::Locator;
    c.goto(&login_url(d)).await?;
    until(
        c,
        "the albums grid",
        20,
        "return document.querySelectorAll('.grid .card').length >= 2",
    )
    .await?;
    // Anything the page throws from here on fails the test.
    js(c, "window.errors = []; addEventListener('error', (e) => errors.push(e.message)); addEventListener('unhandledrejection', (e) => errors.push(String(e.reason))); return true").await?;

    // A star on an album's track: pressed at once, and the node lists it.
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
    .await?;
    let star = c.find(Locator::Css(".tracks .track button.star")).await?;
    anyhow::ensure!(star.attr("aria-pressed").await?.as_deref() == Some("false"));
    let id = star.attr("data-id").await?.unwrap_or_default();
    star.click().await?;
    until(c, "the star pressed", 5, "return document.querySelector('.tracks .track button.star').getAttribute('aria-pressed') === 'true'").await?;
    api_until(d, "the star on the node", "/api/starred", |v| {
        v["tracks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["id"] == json!(id)))
    })
    .await?;

    // A playlist made on its page, then two tracks added through "Add to playlist…".
    js(c, "location.hash = '#/playlists'; return true").await?;
    until(
        c,
        "the playlists page",
        10,
        "return !!document.querySelector('button.new')",
    )
    .await?;
    c.find(Locator::Css("button.new")).await?.click().await?;
    c.find(Locator::Css(".new-playlist input"))
        .await?
        .send_keys("Road trip\n")
        .await?;
    until(
        c,
        "the new playlist's page",
        10,
        "return location.hash.startsWith('#/playlist/') && !!document.querySelector('.playlist-head h1')",
    )
    .await?;
    let pid = js(c, "return decodeURIComponent(location.hash.split('/')[2])").await?;
    let pid = pid.as_str().unwrap_or_default().to_string();
    let page_path = format!("/api/playlists/{}", urlencoding(&pid));
    js(c, "history.go(-2); return true").await?;
    until(
        c,
        "the album again",
        10,
        "return document.querySelectorAll('.tracks .track').length === 3",
    )
    .await?;
    for title in ["Opening", "Third Song"] {
        let row = c
            .find(Locator::XPath(&format!(
                "//li[contains(@class,'track')][.//a[text()='{title}']]"
            )))
            .await?;
        row.find(Locator::Css("button.add-to-playlist"))
            .await?
            .click()
            .await?;
        until(
            c,
            "the playlist picker",
            10,
            "return !!document.querySelector('.popover button.pick')",
        )
        .await?;
        c.find(Locator::Css(&format!(
            ".popover button.pick[data-playlist='{pid}']"
        )))
        .await?
        .click()
        .await?;
        until(
            c,
            "the picker to close",
            10,
            "return !document.querySelector('.popover')",
        )
        .await?;
    }
    let page = api_until(d, "two entries", &page_path, |v| {
        v["entries"].as_array().map(Vec::len) == Some(2)
    })
    .await?;
    anyhow::ensure!(entry_titles(&page) == ["Opening", "Third Song"], "{page}");

    // Reordered with the keyboard's way (Move down), then by dragging a row.
    js(
        c,
        &format!(
            "location.hash = '#/playlist/{}'; return true",
            urlencoding(&pid)
        ),
    )
    .await?;
    until(
        c,
        "the playlist's entries",
        10,
        "return document.querySelectorAll('.entries .entry').length === 2",
    )
    .await?;
    c.find(Locator::Css(".entries .entry .move-down"))
        .await?
        .click()
        .await?;
    let page = api_until(d, "the move down", &page_path, |v| {
        entry_titles(v) == ["Third Song", "Opening"]
    })
    .await?;
    until(c, "the page redrawn from the answer", 10, "return [...document.querySelectorAll('.entries .entry .t-title')].map(a => a.textContent).join() === 'Third Song,Opening'").await?;
    let first = page["entries"][0]["entry"].clone();
    // Chromium's WebDriver cannot drive HTML5 drag and drop, so the drag's
    // events are dispatched as the browser would: the 2nd row dropped on the
    // top half of the 1st.
    js(c, "const rows = document.querySelectorAll('.entries .entry'); const dt = new DataTransfer(); const r = rows[0].getBoundingClientRect(); const at = { bubbles: true, cancelable: true, dataTransfer: dt, clientY: r.top + 2 }; rows[1].dispatchEvent(new DragEvent('dragstart', at)); rows[0].dispatchEvent(new DragEvent('dragover', at)); rows[0].dispatchEvent(new DragEvent('drop', at)); rows[1].dispatchEvent(new DragEvent('dragend', at)); return true").await?;
    let page = api_until(d, "the drop", &page_path, |v| {
        entry_titles(v) == ["Opening", "Third Song"]
    })
    .await?;
    anyhow::ensure!(page["entries"][1]["entry"] == first, "{page}");

    // A play from the playlist: recorded once half of it was heard.
    c.find(Locator::Css(".entries .entry .t-title"))
        .await?
        .click()
        .await?;
    until(
        c,
        "a play recorded",
        20,
        "return tunemesh.player.scrobbles >= 1",
    )
    .await?;
    let plays = api_until(d, "the play on the node", "/api/plays", |v| {
        v["total"].as_u64() >= Some(1)
    })
    .await?;
    anyhow::ensure!(
        plays["recent"][0]["track"]["title"] == json!("Opening"),
        "{plays}"
    );
    // The queue reaches the node's shared state (another device resumes it).
    let q = api_until(d, "the queue saved", "/api/queue", |v| {
        v["tracks"][0]["title"] == json!("Opening")
    })
    .await?;
    anyhow::ensure!(
        q["changed_by"].as_str().is_some_and(|s| !s.is_empty()),
        "{q}"
    );
    js(c, "location.hash = '#/recent'; return true").await?;
    until(c, "the play under Recently played", 10, "return [...document.querySelectorAll('.recent .t-title')].some(a => a.textContent === 'Opening')").await?;

    let errors = js(c, "return window.errors").await?;
    anyhow::ensure!(errors == json!([]), "the page threw: {errors}");
    Ok(())
}

/// Percent-encode a path segment.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
