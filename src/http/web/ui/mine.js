// The owner's marks on the library, as controls: the star toggle, the
// 1–5 rating and the "Add to playlist…" picker. A change shows at once
// and is taken back, with a toast, if the node refuses it. Every control
// of one item shows the same state: a change redraws them all and is
// remembered here, so rows drawn later from older listings (the virtual
// track list, the now-playing bar) agree with it.

import { get, post, q } from "./api.js";
import { el, icon } from "./util.js";

const STAR = "M12 3.2l2.7 5.5 6.1.9-4.4 4.3 1 6.1L12 17.1 6.6 20l1-6.1-4.4-4.3 6.1-.9z";
const ADD_TO_LIST = "M4 6h12M4 11h12M4 16h7M18 13v8M14 17h8";

/** Shared with the views: the toast. */
let ctx = { toast: (m) => console.warn(m) };
export function setContext(c) { ctx = c; }

const starred = new Map(); // item id -> starred_at_ms | null, as changed here
const rated = new Map(); // item id -> rating, as changed here
/** Per item, the request in flight: changes go in order, never racing. */
const inFlight = new Map();

function serial(id, f) {
  const run = (inFlight.get(id) || Promise.resolve()).then(f, f);
  inFlight.set(id, run);
  const done = () => { if (inFlight.get(id) === run) inFlight.delete(id); };
  run.then(done, done);
  return run;
}

/** Whether `id` is starred: a change made here, else what `obj` (a listing's object) says. */
export function isStarred(id, obj) {
  return starred.has(id) ? starred.get(id) != null : !!(obj && obj.starred_at_ms != null);
}

export function ratingOf(id, obj) {
  return rated.has(id) ? rated.get(id) : (obj && obj.rating) || 0;
}

const controls = (sel, id) => document.querySelectorAll(`${sel}[data-id="${CSS.escape(id)}"]`);

function showStar(b, on) {
  b.setAttribute("aria-pressed", String(on));
  b.title = on ? "Unstar" : "Star";
}

function setStar(id, obj, at) {
  starred.set(id, at);
  if (obj) obj.starred_at_ms = at;
  for (const b of controls("button.star", id)) showStar(b, at != null);
}

/**
 * A star toggle for item `id` (a track id, `album:…` or `artist:…`, as the
 * API takes it); `obj` is the listing's object, kept in step; `name` says
 * what it stars, for screen readers and toasts.
 */
export function starButton(id, obj, name) {
  const b = el("button", { class: "ghost star", type: "button", dataset: { id }, "aria-label": `Star ${name}` }, icon(STAR));
  showStar(b, isStarred(id, obj));
  b.addEventListener("click", (e) => {
    // Cards are links: the star must not open the album too.
    e.preventDefault(); e.stopPropagation();
    const was = starred.has(id) ? starred.get(id) : obj ? obj.starred_at_ms ?? null : null;
    const on = was == null;
    setStar(id, obj, on ? Date.now() : null);
    serial(id, () => post(on ? "/api/star" : "/api/unstar", { ids: [id] })).catch((err) => {
      setStar(id, obj, was);
      ctx.toast(`Could not ${on ? "star" : "unstar"} “${name}”: ${err.message}`);
    });
  });
  return b;
}

function showRating(box, r) {
  box.dataset.rating = String(r);
  for (const b of box.querySelectorAll("button")) {
    const n = Number(b.dataset.rating);
    b.classList.toggle("on", n <= r);
    b.setAttribute("aria-pressed", String(n === r));
  }
}

function setRating(id, obj, r) {
  rated.set(id, r);
  if (obj) obj.rating = r;
  for (const box of controls(".rating", id)) showRating(box, r);
}

/** Five stars rating item `id`; a click on the current rating clears it. */
export function ratingControl(id, obj, name) {
  const box = el("span", { class: "rating", role: "group", "aria-label": `Rating of ${name}`, dataset: { id } });
  for (let n = 1; n <= 5; n++) {
    const label = `${n} star${n > 1 ? "s" : ""}`;
    box.append(el("button", {
      class: "ghost", type: "button", dataset: { rating: n }, "aria-label": label, title: label,
      onclick: (e) => {
        e.preventDefault(); e.stopPropagation();
        const was = ratingOf(id, obj);
        const r = n === was ? 0 : n;
        setRating(id, obj, r);
        serial(id, () => post("/api/rate", { id, rating: r })).catch((err) => {
          setRating(id, obj, was);
          ctx.toast(`Could not rate “${name}”: ${err.message}`);
        });
      },
    }, "★"));
  }
  showRating(box, ratingOf(id, obj));
  return box;
}

/* The "Add to playlist…" picker: one open at a time, under its button. */

let open = null; // {box, anchor, off}

export function closePicker(refocus = false) {
  if (!open) return;
  const { box, anchor, off } = open;
  open = null;
  off();
  box.remove();
  if (refocus && anchor.isConnected) anchor.focus();
}

const what = (tracks) => (tracks.length === 1 ? `“${tracks[0].title}”` : `${tracks.length} tracks`);

async function addTo(p, tracks) {
  try {
    await post(`/api/playlists/${q(p.id)}/entries`, { ids: tracks.map((t) => t.id) });
    ctx.toast(`Added ${what(tracks)} to “${p.name}”`, { label: "Open", run: () => { location.hash = `#/playlist/${q(p.id)}`; } });
    closePicker(true);
  } catch (e) { ctx.toast(`Could not add to “${p.name}”: ${e.message}`); }
}

async function createWith(name, tracks) {
  try {
    const p = await post("/api/playlists", { name, ids: tracks.map((t) => t.id) });
    ctx.toast(`Made “${p.name}” with ${what(tracks)}`, { label: "Open", run: () => { location.hash = `#/playlist/${q(p.id)}`; } });
    closePicker(true);
  } catch (e) { ctx.toast(`Could not make the playlist: ${e.message}`); }
}

function place(box, anchor) {
  const r = anchor.getBoundingClientRect();
  const w = box.offsetWidth, h = box.offsetHeight;
  const left = Math.max(8, Math.min(r.right - w, innerWidth - w - 8));
  // Below the button, or above it when the page ends first (the bar is there).
  const below = r.bottom + 4 + h < innerHeight - 90;
  box.style.left = `${left + scrollX}px`;
  box.style.top = `${(below ? r.bottom + 4 : Math.max(8, r.top - 4 - h)) + scrollY}px`;
}

async function openPicker(anchor, tracks) {
  if (open && open.anchor === anchor) { closePicker(true); return; }
  closePicker();
  if (!tracks.length) { ctx.toast("Nothing to add: no tracks here"); return; }
  const list = el("ul", { class: "pick-list" }, el("li", { class: "muted small" }, "Loading…"));
  const name = el("input", { name: "name", placeholder: "New playlist", "aria-label": "New playlist name", autocomplete: "off", required: true });
  const form = el("form", { class: "pick-new", onsubmit: (e) => { e.preventDefault(); if (name.value.trim()) createWith(name.value.trim(), tracks); } },
    name, el("button", { type: "submit", class: "primary" }, "Create"));
  const box = el("div", { class: "popover", role: "dialog", "aria-label": `Add ${what(tracks)} to a playlist` },
    el("div", { class: "pop-title" }, "Add to playlist"), list, form);
  document.body.append(box);
  const outside = (e) => { if (!box.contains(e.target) && !anchor.contains(e.target)) closePicker(); };
  const keys = (e) => { if (e.key === "Escape") { e.stopPropagation(); closePicker(true); } };
  const gone = () => closePicker();
  document.addEventListener("pointerdown", outside, true);
  box.addEventListener("keydown", keys);
  addEventListener("hashchange", gone);
  addEventListener("resize", gone);
  open = { box, anchor, off: () => {
    document.removeEventListener("pointerdown", outside, true);
    removeEventListener("hashchange", gone);
    removeEventListener("resize", gone);
    anchor.setAttribute("aria-expanded", "false");
  } };
  anchor.setAttribute("aria-expanded", "true");
  place(box, anchor);
  try {
    const all = await get("/api/playlists");
    if (!box.isConnected) return;
    list.replaceChildren(...all.map((p) => el("li", {},
      el("button", { class: "ghost pick", type: "button", dataset: { playlist: p.id }, onclick: () => addTo(p, tracks) },
        el("span", {}, p.name), el("span", { class: "muted small" }, ` ${p.entry_count}`)))));
    if (!all.length) list.replaceChildren(el("li", { class: "muted small" }, "No playlists yet: name one below."));
  } catch (e) { list.replaceChildren(el("li", { class: "error small" }, e.message)); }
  place(box, anchor);
  (box.querySelector("button.pick") || name).focus();
}

/**
 * The "Add to playlist…" button for `tracks` (an array, or a function
 * giving one when clicked); an icon, or with `text` beside it.
 */
export function addToPlaylistButton(tracks, label = "Add to playlist…", text = null) {
  return el("button", {
    class: `add-to-playlist${text ? " with-text" : " ghost"}`, type: "button", title: label, "aria-label": label,
    "aria-haspopup": "dialog", "aria-expanded": "false",
    onclick: (e) => { e.preventDefault(); e.stopPropagation(); openPicker(e.currentTarget, typeof tracks === "function" ? tracks() : tracks); },
  }, icon(ADD_TO_LIST, true), text);
}
