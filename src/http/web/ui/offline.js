// The offline mirror in the player: a Download toggle for an album or a
// playlist, the same for one track in its row, the mark on tracks a whole
// copy of which is on this device, and the Downloads page (space used of
// the budget, counts, downloads in progress, failures, the pins, the
// budget and the network policy), refreshed every 2 s while it is open.
// Like the star, a toggle shows its change at once and takes it back, with
// a toast, if the node refuses it; every toggle of one pin agrees.

import { get, post, put, q } from "./api.js";
import { el, icon, size } from "./util.js";

const DOWN = "M12 4v11M7 10l5 5 5-5M5 20h14";
/** A filled disc with an arrow cut out of it (even-odd fill). */
const KEPT = "M12 2a10 10 0 110 20 10 10 0 010-20zM11 6v7.2l-2.6-2.6-1.4 1.4 5 5 5-5-1.4-1.4-2.6 2.6V6z";
const REFRESH_MS = 2000;

/** Shared with the views: the toast. */
let ctx = { toast: (m) => console.warn(m) };
export function setContext(c) { ctx = c; }

/** The pins as the node last listed them, with changes made here: "kind:id" -> pin. */
const pins = new Map();
/** Titles of tracks seen in rows, for the Downloads page (the status names ids only). */
const titles = new Map();
/** Changes go one at a time, in order; the pins are drawn from the last answer only. */
let chain = Promise.resolve(), waiting = 0;
/** Bumped by every change: a listing asked for before one is stale. */
let generation = 0;

const keyOf = (kind, id) => `${kind}:${id}`;

function show(b, on) {
  b.setAttribute("aria-pressed", String(on));
  b.title = on ? "Remove download" : "Download";
}

function redraw() {
  for (const b of document.querySelectorAll("button.download[data-pin]")) show(b, pins.has(b.dataset.pin));
}

function setPins(list) {
  pins.clear();
  for (const p of list) pins.set(keyOf(p.kind, p.id), p);
  redraw();
}

/** Ask the node for its pins (at start, and when a page with a toggle opens). */
export function loadPins() {
  const asked = generation;
  return get("/api/offline/pins").then((r) => { if (waiting === 0 && asked === generation) setPins(r.pins); return r.pins; },
    () => null); // refused or gone: a toggle says why when pressed
}

/**
 * Pin (`on`) or unpin `kind`/`id` (the default bitrate, or `bitrate`);
 * `name` says what, for toasts. Resolves to the pins as they now are, or
 * null when the node refused.
 */
function change(kind, id, on, name, bitrate) {
  const key = keyOf(kind, id);
  const before = pins.get(key);
  if (on) pins.set(key, before || { kind, id, name, bitrate: bitrate || "96", tracks: 0, done: 0 });
  else pins.delete(key);
  redraw();
  waiting++;
  generation++;
  chain = chain.then(async () => {
    try {
      const r = await post(on ? "/api/offline/pins" : "/api/offline/pins/remove", { kind, id, bitrate });
      if (--waiting === 0) setPins(r.pins);
      return r.pins;
    } catch (e) {
      waiting--;
      // Unpinning what is not pinned (gone from another device, the CLI): done.
      if (!on && e.status === 404) { if (waiting === 0) await loadPins(); return [...pins.values()]; }
      if (before) pins.set(key, before); else pins.delete(key);
      redraw();
      ctx.toast(`Could not ${on ? "download" : "remove the download of"} “${name}”: ${e.message}`);
      return null;
    }
  });
  return chain;
}

function toggle(b, kind, id, name) {
  const key = keyOf(kind, id);
  b.dataset.pin = key;
  show(b, pins.has(key));
  b.addEventListener("click", (e) => {
    e.preventDefault(); e.stopPropagation();
    change(kind, id, !pins.has(key), name);
  });
  return b;
}

/** The Download toggle of an album or a playlist page (`kind` "album" or "playlist"). */
export function downloadToggle(kind, id, name) {
  const b = el("button", { class: "download with-text", type: "button", "aria-label": `Download ${name}` }, icon(DOWN, true), "Download");
  loadPins();
  return toggle(b, kind, id, name);
}

/** A track row's Download / Remove download button. */
export function trackDownload(t) {
  titles.set(t.id, t.title);
  const b = el("button", { class: "ghost opt download", type: "button", "aria-label": `Download ${t.title}` }, icon(DOWN, true));
  return toggle(b, "track", t.id, t.title);
}

/** The mark of a track kept on this device, or nothing. */
export function offlineMark(t) {
  if (!t.offline) return null;
  return el("span", { class: "kept", role: "img", title: "Available offline", "aria-label": "Available offline" }, icon(KEPT));
}

/* The Downloads page. */

const KINDS = { track: "Track", album: "Album", artist: "Artist", playlist: "Playlist", starred: "Starred", library: "Whole library" };
const POLICIES = [["lan", "Local network only"], ["direct", "Local network or direct (no relay)"], ["any", "Any path, relayed too"]];
const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

function bar(value, max, label) {
  return el("progress", { class: "meter", max: String(Math.max(1, max)), value: String(Math.min(value, max)), "aria-label": label });
}

/** The page: returns its cleanup (the refresh timer stops). */
export function downloads(view) {
  const box = el("div", { class: "downloads" });
  const error = el("p", { class: "error", role: "alert" });
  const space = el("section", { class: "dl-space" });
  const counts = el("ul", { class: "dl-counts" });
  const notes = el("div", { class: "dl-notes" });
  const active = el("section", { class: "dl-active" });
  const failed = el("section", { class: "dl-failed" });
  const pinList = el("section", { class: "dl-pins" });
  const devices = new Map();
  let status = null, list = null, busy = false, named = false;

  // The settings: drawn once, so a refresh never clobbers what is being typed.
  const budget = el("input", { name: "budget", autocomplete: "off", placeholder: "4 GiB", "aria-label": "Budget for downloads", required: true });
  const budgetError = el("span", { class: "error small", role: "alert" });
  const budgetForm = el("form", { class: "inline-form dl-budget" },
    el("label", { for: "dl-budget" }, "Space for downloads"), budget,
    el("button", { type: "submit", class: "primary" }, "Set"), budgetError);
  budget.id = "dl-budget";
  budgetForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    budgetError.textContent = "";
    const b = budgetForm.querySelector("button");
    b.disabled = true;
    try {
      status = await put("/api/offline/budget", { budget: budget.value.trim() });
      budget.value = "";
      draw();
      ctx.toast(`Downloads may take ${size(status.budget_bytes)}`);
    } catch (err) { budgetError.textContent = err.message; }
    b.disabled = false;
  });
  const policy = el("select", { name: "policy", class: "dl-policy", id: "dl-policy" },
    POLICIES.map(([v, label]) => el("option", { value: v }, label)));
  policy.addEventListener("change", async () => {
    const was = status && status.policy;
    policy.disabled = true;
    try { status = await put("/api/offline/policy", { policy: policy.value }); draw(); } catch (err) {
      if (was) policy.value = was;
      ctx.toast(`Could not change the policy: ${err.message}`);
    }
    policy.disabled = false;
  });
  const settings = el("section", { class: "dl-settings" }, el("h2", {}, "Settings"), budgetForm,
    el("div", { class: "inline-form" }, el("label", { for: "dl-policy" }, "Download over"), policy));

  box.append(el("div", { class: "view-head" }, el("h1", {}, "Downloads")), error, space, counts, notes, active, failed, pinList, settings);
  view.append(box);

  const title = (id) => titles.get(id) || id.slice(0, 12);
  const device = (id) => (id ? devices.get(id) || id.slice(0, 12) : "");

  /** Titles for ids no row has shown yet: the pinned albums' and playlists' tracks, once. */
  const learnNames = async () => {
    named = true;
    const asked = (list || []).filter((p) => p.kind === "album" || p.kind === "playlist").slice(0, 20).map((p) =>
      get(p.kind === "album" ? `/api/albums/${q(p.id)}` : `/api/playlists/${q(p.id)}`).then((r) => {
        for (const t of r.tracks || (r.entries || []).map((e) => e.track).filter(Boolean)) titles.set(t.id, t.title);
      }, () => {}));
    const devs = get("/api/devices").then((ds) => { for (const d of ds) devices.set(d.id, d.name || d.id.slice(0, 12)); }, () => {});
    await Promise.all([...asked, devs]);
  };

  const remove = async (p) => {
    const left = await change(p.kind, p.id, false, p.name);
    if (!left) return;
    list = left;
    draw();
    refresh();
    ctx.toast(`Removed the download of “${p.name}”`, { label: "Undo", run: () => change(p.kind, p.id, true, p.name, p.bitrate).then(refresh) });
  };

  const draw = () => {
    if (!status || !list) return;
    const s = status;
    box.dataset.done = String(s.done);
    space.replaceChildren(el("h2", {}, "Space"),
      bar(s.used_bytes, s.budget_bytes, "Space used of the budget"),
      el("div", { class: "muted small" }, `${size(s.used_bytes)} of ${size(s.budget_bytes)} used`,
        s.prefetched ? ` · ${plural(s.prefetched, "queued track")} fetched ahead (up to ${size(s.prefetch_budget_bytes)})` : ""));
    const count = (k, n, text, cls = "") => el("li", { class: cls, dataset: { count: k, n: String(n) } }, el("strong", {}, n.toLocaleString()), ` ${text}`);
    counts.replaceChildren(
      count("done", s.tracks_done, "here"),
      count("queued", s.tracks_queued, "queued"),
      count("preparing", s.tracks_preparing, "being prepared"),
      count("failed", s.tracks_failed.length, "failed", s.tracks_failed.length ? "error" : ""),
      count("over", s.tracks_over_budget, s.short_bytes ? `waiting for space (the downloads need ${size(s.short_bytes)} more)` : "waiting for space"));
    notes.replaceChildren(...[
      s.waiting ? el("p", { class: "dl-waiting notice" }, `Waiting: ${s.waiting}`) : null,
      s.done && list.length ? el("p", { class: "dl-done muted" }, s.tracks_over_budget ? "Everything that fits is here." : "Everything is here.") : null,
    ].filter(Boolean));
    active.replaceChildren(...(s.downloading.length ? [el("h2", {}, "Downloading"), el("ol", { class: "dl-list" }, s.downloading.map((d) => el("li", { dataset: { track: d.track } },
      el("div", { class: "dl-what" }, el("span", {}, title(d.track)),
        el("span", { class: "muted small" }, `${size(d.have_bytes)} of ${size(d.len_bytes)}${d.from ? ` from ${device(d.from)}` : ""}`)),
      bar(d.have_bytes, d.len_bytes, `Downloading ${title(d.track)}`))))] : []));
    failed.replaceChildren(...(s.tracks_failed.length ? [el("h2", {}, "Failed"), el("ul", { class: "dl-list" }, s.tracks_failed.map((f) => el("li", { dataset: { track: f.track } },
      el("div", { class: "dl-what" }, el("span", {}, title(f.track)), el("span", { class: "muted small" }, f.bitrate === "original" ? "original" : `${f.bitrate} kb/s`)),
      el("div", { class: "error small" }, f.reason))))] : []));
    pinList.replaceChildren(el("h2", {}, "Kept on this device"), list.length
      ? el("ul", { class: "dl-list" }, list.map((p) => el("li", { dataset: { pin: keyOf(p.kind, p.id), done: String(p.done), tracks: String(p.tracks) } },
        el("div", { class: "dl-what" },
          p.kind === "album" ? el("a", { href: `#/album/${q(p.id)}` }, p.name) : p.kind === "playlist" ? el("a", { href: `#/playlist/${q(p.id)}` }, p.name) : el("span", {}, p.name || KINDS[p.kind]),
          el("span", { class: "muted small" }, `${KINDS[p.kind] || p.kind} · ${p.bitrate === "original" ? "original" : `${p.bitrate} kb/s`}`),
          el("span", { class: "muted small pin-done" }, `${p.done} of ${plural(p.tracks, "track")} here`)),
        bar(p.done, p.tracks, `${p.name} downloaded`),
        el("button", { class: "unpin", type: "button", "aria-label": `Remove the download of ${p.name}`, onclick: () => remove(p) }, "Remove"))))
      : el("p", { class: "muted" }, "Nothing kept yet: press Download on an album or a playlist, or on a track's row."));
    budget.placeholder = size(s.budget_bytes);
    if (!policy.disabled && document.activeElement !== policy) policy.value = s.policy;
  };

  const refresh = async () => {
    if (busy || !box.isConnected) return;
    busy = true;
    try {
      const asked = generation;
      const [s, p] = await Promise.all([get("/api/offline/status"), get("/api/offline/pins")]);
      status = s; list = p.pins;
      if (waiting === 0 && asked === generation) setPins(list);
      const unknown = [...s.downloading, ...s.tracks_failed].some((d) => !titles.has(d.track));
      if (!named && (unknown || s.downloading.some((d) => d.from))) await learnNames();
      error.textContent = "";
      draw();
      box.dataset.ready = "1";
    } catch (e) { error.textContent = e.message; }
    busy = false;
  };

  refresh();
  const timer = setInterval(() => { if (box.isConnected) refresh(); else clearInterval(timer); }, REFRESH_MS);
  return () => clearInterval(timer);
}
