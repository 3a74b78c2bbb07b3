//! The offline mirror through the web player, on a phone joined to its
//! home: an album's Download toggle pins it, the Downloads page follows the
//! copies until they are all here, the album's rows then carry the offline
//! mark, a track row's Download toggles a pin of its own, the budget field
//! shows the node's refusal, the policy changes, and the Downloads page's
//! Remove unpins the album.

use super::common::daemon::Daemon;
use super::harness::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_downloads_an_album_to_the_phone_and_removes_it() {
    let Some((chrome, driver)) = browser_or_skip("web player downloads test") else {
        return;
    };
    let lib = library();
    let (home, phone) = home_and_phone(lib.path());
    let (_driver, c) = session(&chrome, &driver).await;
    let r = download_and_remove(&c, &phone).await;
    let _ = c.close().await;
    if let Err(e) = r {
        panic!(
            "{e:#}\nphone log:\n{}\nhome log:\n{}",
            phone.logs(),
            home.logs()
        );
    }
    phone.stop();
    home.stop();
}

/// The pins the phone lists, as (kind, id) pairs.
fn pins(v: &Value) -> Vec<(String, String)> {
    v["pins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("kind"), s("id"))
        })
        .collect()
}

async fn download_and_remove(c: &fantoccini::Client, phone: &Daemon) -> anyhow::Result<()> {
    use fantoccini::Locator;
    c.goto(&login_url(phone)).await?;
    until(
        c,
        "the phone's albums",
        20,
        "return document.querySelectorAll('.grid .card').length >= 2",
    )
    .await?;
    catch_page_errors(c).await?;
    let albums = api_json(phone, "/api/albums")?;
    let album = albums["items"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "First Album"))
        .and_then(|a| a["id"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no First Album: {albums}"))?
        .to_string();
    let key = format!("album:{album}");

    // The album page's Download: pressed at once, and the phone pins it.
    open_first_album(c).await?;
    let toggle = c
        .find(Locator::Css(&format!(
            ".album-head button.download[data-pin='{key}']"
        )))
        .await?;
    anyhow::ensure!(toggle.attr("aria-pressed").await?.as_deref() == Some("false"));
    anyhow::ensure!(
        js(
            c,
            "return document.querySelectorAll('.tracks .track .kept').length"
        )
        .await?
            == json!(0),
        "nothing is offline yet"
    );
    toggle.click().await?;
    until(c, "the Download toggle pressed", 5, &format!("return document.querySelector(\".album-head button.download[data-pin='{key}']\").getAttribute('aria-pressed') === 'true'")).await?;
    let listed = api_until(phone, "the album pinned", "/api/offline/pins", |v| {
        pins(v) == [("album".to_string(), album.clone())]
    })
    .await?;
    anyhow::ensure!(listed["pins"][0]["bitrate"] == "96", "{listed}");

    // The Downloads page, from the navigation, until the album is here.
    c.find(Locator::Css("a[data-nav='downloads']"))
        .await?
        .click()
        .await?;
    until(
        c,
        "the Downloads page",
        10,
        "return document.querySelector('.downloads')?.dataset.ready === '1'",
    )
    .await?;
    until(c, "the album's tracks done on the Downloads page", 60, &format!("const li = document.querySelector(\".dl-pins li[data-pin='{key}']\"); const box = document.querySelector('.downloads'); return !!li && li.dataset.tracks === '3' && li.dataset.done === '3' && box.dataset.done === 'true' && document.querySelector('[data-count=done]').dataset.n === '3'")).await?;
    let st = api_json(phone, "/api/offline/status")?;
    anyhow::ensure!(st["done"] == true && st["tracks_done"] == 3, "{st}");
    let shown = js(c, "return [document.querySelector('.dl-space').textContent, document.querySelector(\".dl-pins li[data-pin] .pin-done\").textContent]").await?;
    eprintln!("the Downloads page says: {shown}");
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-player");
    std::fs::create_dir_all(&shots)?;
    std::fs::write(shots.join("downloads-1280x800.png"), c.screenshot().await?)?;
    anyhow::ensure!(
        shown[1] == json!("3 of 3 tracks here"),
        "pin progress: {shown}"
    );

    // The album's rows carry the mark now.
    js(
        c,
        &format!("location.hash = '#/album/{album}'; return true"),
    )
    .await?;
    until(
        c,
        "the offline marks",
        10,
        "const rows = document.querySelectorAll('.tracks .track'); return rows.length === 3 && [...rows].every(r => r.querySelector('.kept[title=\"Available offline\"]'))",
    )
    .await?;

    std::fs::write(
        shots.join("album-offline-1280x800.png"),
        c.screenshot().await?,
    )?;

    // A track row's Download pins the track by itself, and again unpins it.
    let row = c.find(Locator::Css(".tracks .track")).await?;
    let track = row.attr("data-id").await?.unwrap_or_default();
    let button = row.find(Locator::Css("button.download")).await?;
    anyhow::ensure!(button.attr("title").await?.as_deref() == Some("Download"));
    button.click().await?;
    api_until(phone, "the track pinned", "/api/offline/pins", |v| {
        pins(v).contains(&("track".to_string(), track.clone()))
    })
    .await?;
    until(c, "the row's Remove download", 5, "return document.querySelector('.tracks .track button.download').title === 'Remove download'").await?;
    c.find(Locator::Css(".tracks .track button.download"))
        .await?
        .click()
        .await?;
    api_until(phone, "the track unpinned", "/api/offline/pins", |v| {
        pins(v) == [("album".to_string(), album.clone())]
    })
    .await?;

    // The settings: a size the node refuses says why; a good one is set;
    // the policy changes.
    js(c, "location.hash = '#/downloads'; return true").await?;
    until(
        c,
        "the Downloads page again",
        10,
        "return document.querySelector('.downloads')?.dataset.ready === '1'",
    )
    .await?;
    let budget = c.find(Locator::Id("dl-budget")).await?;
    budget.send_keys("lots\n").await?;
    until(
        c,
        "the budget refused",
        10,
        "return document.querySelector('.dl-budget .error').textContent.includes('not a size')",
    )
    .await?;
    budget.clear().await?;
    budget.send_keys("1GiB\n").await?;
    api_until(phone, "the budget set", "/api/offline/status", |v| {
        v["budget_bytes"] == 1u64 << 30
    })
    .await?;
    until(
        c,
        "the refusal gone",
        10,
        "return document.querySelector('.dl-budget .error').textContent === '' && document.querySelector('.dl-space').textContent.includes('of 1 GiB used')",
    )
    .await?;
    c.find(Locator::Id("dl-policy"))
        .await?
        .select_by_value("any")
        .await?;
    api_until(phone, "the policy set", "/api/offline/status", |v| {
        v["policy"] == "any"
    })
    .await?;

    // The page at a phone's width: no horizontal scrolling.
    c.set_window_size(390, 844).await?;
    let fits = js(
        c,
        "return document.documentElement.scrollWidth <= innerWidth",
    )
    .await?;
    std::fs::write(shots.join("downloads-390x844.png"), c.screenshot().await?)?;
    anyhow::ensure!(fits == json!(true), "horizontal scrolling at 390 px");
    c.set_window_size(1280, 800).await?;

    // Remove, on the Downloads page: the pin goes, on the node and the page.
    c.find(Locator::Css(&format!(
        ".dl-pins li[data-pin='{key}'] button.unpin"
    )))
    .await?
    .click()
    .await?;
    api_until(phone, "no pins", "/api/offline/pins", |v| {
        pins(v).is_empty()
    })
    .await?;
    until(
        c,
        "the pin gone from the page",
        10,
        "return !document.querySelector('.dl-pins li[data-pin]')",
    )
    .await?;
    // A refresh later (2 s), the page still agrees, and the album's toggle is up.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    anyhow::ensure!(
        js(c, "return !document.querySelector('.dl-pins li[data-pin]')").await? == json!(true),
        "the pin came back on the page"
    );
    js(
        c,
        &format!("location.hash = '#/album/{album}'; return true"),
    )
    .await?;
    until(c, "the album's toggle up", 10, &format!("const b = document.querySelector(\".album-head button.download[data-pin='{key}']\"); return !!b && b.getAttribute('aria-pressed') === 'false'")).await?;
    no_page_errors(c).await
}
