//! The web player end to end: a real daemon, its real HTTP listeners, and
//! (when one is installed) a real Chromium driven through chromedriver,
//! doing what a person does: log in with the URL `tunemesh open` prints,
//! search, click a track, hear it advance, seek on a cold track, reload
//! and find the queue, at desktop and phone sizes.
//!
//! Without Chromium and chromedriver the browser test says SKIPPED loudly
//! (CI installs both, and there it fails instead of skipping).
//!
//! `shared_state.rs`: stars, ratings, playlists and plays through the page.
//! `downloads.rs`: the offline mirror's toggles and Downloads page on a phone.

#[path = "../common/mod.rs"]
mod common;
mod downloads;
mod harness;
mod shared_state;

use common::daemon::{wait_until, Daemon};
use common::*;
use harness::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_searches_plays_seeks_and_reloads() {
    let lib = library();
    browser_test("web player browser test", || start(lib.path(), &[]), browse).await;
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
    open_first_album(c).await?;
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
