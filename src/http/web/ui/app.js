// The player's entry: logs in (a one-time code in the URL's fragment, or
// an account's password), then routes `#/…` to the views and wires the
// transport bar (with a star for what plays), the queue panel and the
// keyboard to the player.

import { get, post, link } from "./api.js";
import { Queue } from "./queue.js";
import { Player } from "./player.js";
import * as views from "./views.js";
import * as playlists from "./playlists.js";
import * as mine from "./mine.js";
import * as offline from "./offline.js";
import { startQueueSync } from "./queuesync.js";
import { el, clock, debounce, coverUrl } from "./util.js";

const $ = (id) => document.getElementById(id);

async function login() {
  const m = location.hash.match(/^#code=([a-z0-9]+)/i);
  if (m) {
    // The code leaves the address bar and the history before anything else.
    history.replaceState(null, "", location.pathname + "#/albums");
    try { await post("/api/web/login", { code: m[1] }); } catch (e) {
      const me = await get("/api/web/me");
      return showLogin(e.message, me.accounts);
    }
  }
  const me = await get("/api/web/me");
  return me.user ? me : showLogin(null, me.accounts);
}

async function showLogin(error, accounts) {
  $("login").hidden = false;
  $("app").hidden = true;
  $("login-fields").hidden = !accounts;
  $("login-hint").textContent = accounts
    ? "Log in with your account, or run “tunemesh open” on the device itself."
    : "Run “tunemesh open” on this device to log in.";
  $("login-error").textContent = error || "";
  return new Promise((resolve) => {
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("login-error").textContent = "";
      try {
        const me = await post("/api/web/login", { user: $("login-user").value, password: $("login-password").value });
        $("login").hidden = true;
        resolve(me);
      } catch (e) { $("login-error").textContent = e.message; }
    });
  });
}

function toast(msg, action) {
  const t = $("toast");
  t.replaceChildren(el("span", {}, msg), action ? el("button", { onclick: () => { t.hidden = true; action.run(); } }, action.label) : "");
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, action ? 12000 : 3500);
}

/** Pages whose nav entry is another's: a playlist is under Playlists. */
const NAV_OF = { playlist: "playlists", album: "albums", artist: "artists" };

let cleanup = null;
async function route() {
  const view = $("view");
  if (cleanup) { cleanup(); cleanup = null; }
  view.replaceChildren();
  const [path, query] = (location.hash.slice(1) || "/albums").split("?");
  const params = new URLSearchParams(query || "");
  const [, kind, id] = path.split("/");
  mine.closePicker();
  const nav = NAV_OF[kind] || kind || "albums";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("on", a.dataset.nav === nav);
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  view.dataset.view = kind || "albums";
  try {
    switch (kind) {
      case "album": await views.album(view, decodeURIComponent(id)); break;
      case "artists": cleanup = views.artists(view); break;
      case "artist": await views.artist(view, decodeURIComponent(id)); break;
      case "tracks": cleanup = views.tracks(view); break;
      case "search": await views.search(view, params.get("q") || ""); break;
      case "devices": await views.devices(view); break;
      case "playlists": await playlists.playlists(view); break;
      case "playlist": await playlists.playlist(view, decodeURIComponent(id)); break;
      case "starred": await views.starred(view); break;
      case "recent": await views.recent(view); break;
      case "most": await views.most(view); break;
      case "downloads": cleanup = offline.downloads(view); break;
      default: cleanup = views.albums(view, params);
    }
  } catch (e) {
    view.append(el("p", { class: "error" }, e.message));
  }
  view.dataset.ready = "1";
}

function wire(queue, player) {
  const play = $("play"), seek = $("seek");
  let dragging = false;
  const renderTime = () => {
    const d = player.duration;
    seek.max = String(d || 0);
    if (!dragging) seek.value = String(Math.min(player.position, d));
    $("pos").textContent = clock(dragging ? Number(seek.value) : player.position);
    $("dur").textContent = clock(d);
  };
  const renderTrack = () => {
    const t = queue.current;
    $("now-title").textContent = t ? t.title : "Nothing playing";
    $("now-artist").textContent = t ? `${t.artist} · ${t.album}` : "";
    $("now-cover").src = coverUrl(t && t.cover, 96);
    $("now-mark").replaceChildren(t ? mine.starButton(t.id, t, t.title) : "");
    document.title = t ? `${t.title} · ${t.artist} — tunemesh` : "tunemesh";
    renderTime();
    renderQueue();
  };
  const renderState = () => {
    play.setAttribute("aria-label", player.playing ? "Pause" : "Play");
    $("shuffle").setAttribute("aria-pressed", String(queue.shuffle));
    $("repeat").setAttribute("aria-pressed", String(queue.repeat !== "off"));
    $("repeat-one").hidden = queue.repeat !== "one";
    document.body.dataset.playing = player.playing ? "1" : "0";
  };
  const renderQueue = () => {
    const list = $("queue-list");
    list.replaceChildren(...queue.items.map((t, i) => el("li", {
      class: `${i === queue.index ? "current" : ""}${t.online ? "" : " offline"}`, draggable: "true",
      ondragstart: (e) => e.dataTransfer.setData("text/plain", String(i)),
      ondragover: (e) => e.preventDefault(),
      ondrop: (e) => { e.preventDefault(); queue.move(Number(e.dataTransfer.getData("text/plain")), i); },
    },
      el("a", { href: "#", onclick: (e) => { e.preventDefault(); queue.go(i); player.load(0); } }, t.title),
      el("span", { class: "muted small" }, ` ${t.artist}`),
      el("span", { class: "q-actions" },
        el("button", { class: "ghost", title: "Move up", onclick: () => queue.move(i, i - 1) }, "↑"),
        el("button", { class: "ghost", title: "Move down", onclick: () => queue.move(i, i + 1) }, "↓"),
        el("button", { class: "ghost", title: "Remove", onclick: () => queue.remove(i) }, "✕")))));
  };
  player.addEventListener("time", renderTime);
  player.addEventListener("track", renderTrack);
  player.addEventListener("state", renderState);
  player.addEventListener("error", () => {
    const next = queue.items.findIndex((t, i) => i > queue.index && t.online);
    toast(player.error, next >= 0 ? { label: "Play next playable", run: () => { queue.go(next); player.load(0); } } : null);
  });
  queue.addEventListener("change", () => { renderQueue(); renderState(); });
  play.addEventListener("click", () => player.toggle());
  $("next").addEventListener("click", () => player.next());
  $("prev").addEventListener("click", () => player.prev());
  $("shuffle").addEventListener("click", () => queue.setShuffle(!queue.shuffle));
  $("repeat").addEventListener("click", () => queue.cycleRepeat());
  seek.addEventListener("input", () => { dragging = true; renderTime(); });
  seek.addEventListener("change", () => { dragging = false; player.seek(Number(seek.value)); });
  const vol = $("volume");
  vol.value = String(player.volume);
  vol.addEventListener("input", () => player.setVolume(Number(vol.value)));
  const quality = $("quality");
  quality.value = player.quality;
  quality.addEventListener("change", () => player.setQuality(quality.value));
  $("queue-toggle").addEventListener("click", () => { $("queue").hidden = !$("queue").hidden; });
  $("queue-close").addEventListener("click", () => { $("queue").hidden = true; });
  $("queue-clear").addEventListener("click", () => { queue.clear(); player.load(0, false); });
  $("queue-clear").before(mine.addToPlaylistButton(() => queue.items, "Save the queue to a playlist…"));
  const search = $("search");
  search.addEventListener("input", debounce(() => {
    const v = search.value.trim();
    if (v) location.hash = `#/search?q=${encodeURIComponent(v)}`;
  }, 120));
  $("logout").addEventListener("click", async () => {
    try { await post("/api/web/logout"); } catch { /* gone anyway */ }
    location.reload();
  });
  document.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName) && e.target.type !== "range";
    if (e.key === "Escape" && e.target === search) { search.blur(); return; }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const keys = {
      " ": () => player.toggle(),
      ArrowLeft: () => player.seek(player.position - 10),
      ArrowRight: () => player.seek(player.position + 10),
      n: () => player.next(),
      p: () => player.prev(),
      "/": () => { search.focus(); search.select(); },
    };
    const f = keys[e.key];
    if (f) { e.preventDefault(); f(); }
  });
  renderTrack();
  renderState();
}

async function main() {
  const me = await login();
  $("login").hidden = true;
  $("app").hidden = false;
  document.body.dataset.user = me.user || "";
  const queue = new Queue();
  await startQueueSync(queue);
  const player = new Player(queue);
  const ctx = {
    queue, player, toast,
    playList: (tracks, i) => { queue.playNow(tracks, i); player.load(0); },
  };
  views.setContext(ctx);
  playlists.setContext(ctx);
  mine.setContext(ctx);
  offline.setContext(ctx);
  offline.loadPins();
  wire(queue, player);
  addEventListener("hashchange", route);
  // A session that ended under an open page: save the queue, then start
  // over at the login (the reload asks /api/web/me, which says who is in).
  link.addEventListener("logged-out", () => { queue.save(); location.reload(); }, { once: true });
  addEventListener("beforeunload", () => queue.save());
  // Exposed for the end-to-end tests and the curious: read-only use.
  window.tunemesh = { queue, player };
  await route();
}

main().catch((e) => { document.body.append(el("p", { class: "error" }, `tunemesh: ${e.message}`)); });
