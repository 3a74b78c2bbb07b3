//! The owner's shared state through the web player: a star on an album
//! page, a playlist made, filled from track menus and reordered (buttons and
//! drag and drop), a play recorded by the scrobbling rule, the queue saved.

use super::common::daemon::Daemon;
use super::harness::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_stars_makes_a_playlist_reorders_it_and_plays_count() {
    let lib = library();
    let setup = || start(lib.path(), &[]);
    browser_test("web player shared-state test", setup, mark_list_and_play).await;
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
    catch_page_errors(c).await?;

    // A star on an album's track: pressed at once, and the node lists it.
    open_first_album(c).await?;
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

    no_page_errors(c).await
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
