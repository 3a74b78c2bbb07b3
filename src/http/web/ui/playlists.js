// Playlists: the list of them (and making one), and a playlist's page:
// play it, rename or delete it, remove an entry, and reorder entries by
// dragging a row or with its Move up / Move down buttons (the keyboard's
// and touch screens' way). Every change is drawn from the node's answer,
// which is the playlist as it now is.

import { get, post, patch, del, q } from "./api.js";
import { el, span, ago, when, coverUrl } from "./util.js";
import { trackRow, goneRow } from "./views.js";
import { addToPlaylistButton } from "./mine.js";
import { downloadToggle } from "./offline.js";

/** Shared with the views: the queue and player, and the toast. */
let ctx;
export function setContext(c) { ctx = c; }

const count = (n) => `${n} track${n === 1 ? "" : "s"}`;
const href = (id) => `#/playlist/${q(id)}`;

/** A small inline form: one or more fields, Save and Cancel. */
function inlineForm(cls, fields, submitLabel, onsubmit, oncancel) {
  const form = el("form", { class: `inline-form ${cls}` }, fields,
    el("button", { type: "submit", class: "primary" }, submitLabel),
    oncancel ? el("button", { type: "button", onclick: oncancel }, "Cancel") : null);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const b = form.querySelector("button[type=submit]");
    b.disabled = true;
    try { await onsubmit(); } finally { b.disabled = false; }
  });
  form.addEventListener("keydown", (e) => { if (e.key === "Escape" && oncancel) { e.stopPropagation(); oncancel(); } });
  return form;
}

export async function playlists(view) {
  const all = await get("/api/playlists");
  const name = el("input", { name: "name", placeholder: "Name", "aria-label": "New playlist name", autocomplete: "off", required: true });
  const form = inlineForm("new-playlist", [name], "Create", async () => {
    try {
      const p = await post("/api/playlists", { name: name.value.trim() });
      location.hash = href(p.id);
    } catch (e) { ctx.toast(`Could not make the playlist: ${e.message}`); }
  }, () => { form.hidden = true; newBtn.hidden = false; newBtn.focus(); });
  form.hidden = true;
  const newBtn = el("button", { class: "primary new", onclick: () => { form.hidden = false; newBtn.hidden = true; name.focus(); } }, "+ New playlist");
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Playlists"), newBtn, form));
  if (!all.length) {
    view.append(el("p", { class: "muted" }, "No playlists yet. Make one here, or add tracks to a new one with ", el("span", { "aria-hidden": "true" }, "≡+"), " on any track."));
    return;
  }
  view.append(el("ul", { class: "playlists" }, all.map((p) => el("li", { dataset: { playlist: p.id } },
    el("a", { href: href(p.id) }, p.name),
    el("span", { class: "muted small", title: `changed ${when(p.changed_ms)}` }, `${count(p.entry_count)} · changed ${ago(p.changed_ms)}`),
    p.comment ? el("div", { class: "muted small comment" }, p.comment) : null))));
}

export async function playlist(view, id) {
  let page = await get(`/api/playlists/${q(id)}`);
  const head = el("div", { class: "album-head playlist-head" });
  const list = el("ol", { class: "tracks entries" });
  view.append(head, list);
  const url = (rest = "") => `/api/playlists/${q(page.id)}${rest}`;
  const tracks = () => page.entries.filter((e) => e.track).map((e) => e.track);

  // Changes go one at a time, in order; only the last answer is drawn
  // (an earlier one would undo, for a moment, what was shown since).
  let chain = Promise.resolve(), waiting = 0;
  /** Send a change; draw the answer, or the playlist as it was (`before`) with the error. */
  const change = (f, failMsg, before = page) => {
    waiting++;
    chain = chain.then(async () => {
      try {
        const next = await f();
        if (--waiting === 0 && list.isConnected) { page = next; draw(); }
        return next;
      } catch (e) {
        waiting--;
        if (list.isConnected) { page = before; draw(); }
        ctx.toast(`${failMsg}: ${e.message}`);
        return null;
      }
    });
    return chain;
  };

  /** Move `entry` to position `to`; `sel` is the button to keep the focus on. */
  const moveTo = (entry, to, sel = null) => {
    const from = page.entries.findIndex((e) => e.entry === entry);
    if (from < 0 || to < 1 || to > page.entries.length || from + 1 === to) return;
    // Shown moved at once; the answer then says where it really is.
    const entries = [...page.entries];
    const [e] = entries.splice(from, 1);
    entries.splice(to - 1, 0, e);
    const before = page;
    page = { ...page, entries: entries.map((x, i) => ({ ...x, position: i + 1 })) };
    draw();
    focusEntry(entry, sel);
    change(() => post(url("/move"), { entry, to }), "Could not move it", before).then(() => focusEntry(entry, sel));
  };

  /** Keep the focus on the moved entry's button (the other one at an end), as rows are redrawn. */
  const focusEntry = (entry, sel) => {
    if (!sel) return;
    const row = [...list.children].find((r) => r.dataset.entry === entry);
    if (!row) return;
    const b = [sel, ".move-up", ".move-down"].map((s) => row.querySelector(s)).find((x) => x && !x.disabled);
    if (b) b.focus();
  };

  const remove = (e) => {
    change(() => post(url("/remove"), { entries: [e.entry] }), "Could not remove it").then((p) => {
      if (!p) return;
      const title = e.track ? `“${e.track.title}”` : "The track";
      ctx.toast(`${title} removed from “${p.name}”`, { label: "Undo", run: () => change(() => post(url("/entries"), { ids: [e.id], at: e.position }), "Could not put it back") });
    });
  };

  // Drag and drop: the row dragged, and where it would land.
  let dragged = null;
  const clearMarks = () => { for (const r of list.querySelectorAll(".drop-before, .drop-after")) r.classList.remove("drop-before", "drop-after"); };
  const dropAt = (row, ev) => {
    const r = row.getBoundingClientRect();
    return ev.clientY < r.top + r.height / 2 ? "before" : "after";
  };

  const entryRow = (e, k, playable) => {
    const n = page.entries.length;
    const extra = [
      el("button", { class: "ghost move-up", title: "Move up", "aria-label": "Move up", disabled: e.position === 1, onclick: () => moveTo(e.entry, e.position - 1, ".move-up") }, "↑"),
      el("button", { class: "ghost move-down", title: "Move down", "aria-label": "Move down", disabled: e.position === n, onclick: () => moveTo(e.entry, e.position + 1, ".move-down") }, "↓"),
      el("button", { class: "ghost remove", title: "Remove from the playlist", "aria-label": "Remove from the playlist", onclick: () => remove(e) }, "✕"),
    ];
    const row = e.track
      ? trackRow(e.track, k, playable, { number: e.position, album: true, extra })
      : goneRow(e.id, e.position, { extra });
    row.classList.add("entry");
    row.dataset.entry = e.entry;
    row.dataset.position = String(e.position);
    row.draggable = true;
    row.addEventListener("dragstart", (ev) => {
      dragged = e.entry;
      ev.dataTransfer.effectAllowed = "move";
      ev.dataTransfer.setData("application/x-tunemesh-entry", e.entry);
      ev.dataTransfer.setData("text/plain", e.track ? e.track.title : e.id);
      row.classList.add("dragging");
    });
    row.addEventListener("dragend", () => { dragged = null; row.classList.remove("dragging"); clearMarks(); });
    row.addEventListener("dragover", (ev) => {
      if (!dragged) return; // not one of ours (a file, a link)
      ev.preventDefault();
      ev.dataTransfer.dropEffect = "move";
      const side = dropAt(row, ev);
      if (!row.classList.contains(`drop-${side}`)) { clearMarks(); row.classList.add(`drop-${side}`); }
    });
    row.addEventListener("dragleave", (ev) => { if (!row.contains(ev.relatedTarget)) row.classList.remove("drop-before", "drop-after"); });
    row.addEventListener("drop", (ev) => {
      ev.preventDefault();
      const entry = ev.dataTransfer.getData("application/x-tunemesh-entry") || dragged;
      const side = dropAt(row, ev);
      clearMarks();
      const from = page.entries.findIndex((x) => x.entry === entry) + 1;
      if (!from) return;
      // Its new place, counted after it leaves its old one.
      let to = side === "before" ? e.position : e.position + 1;
      if (from < to) to--;
      moveTo(entry, to);
    });
    return row;
  };

  const rename = () => {
    const name = el("input", { name: "name", value: page.name, "aria-label": "Playlist name", autocomplete: "off", required: true });
    const comment = el("input", { name: "comment", value: page.comment || "", placeholder: "Comment", "aria-label": "Comment", autocomplete: "off" });
    const form = inlineForm("rename", [name, comment], "Save", async () => {
      const body = { name: name.value.trim(), comment: comment.value.trim() };
      if (await change(() => patch(url(), body), "Could not rename it")) ctx.toast("Saved");
    }, () => draw());
    head.querySelector("h1").replaceWith(form);
    name.focus(); name.select();
  };

  const deleteIt = async () => {
    if (!confirm(`Delete the playlist “${page.name}”? This cannot be undone.`)) return;
    try {
      await del(url());
      ctx.toast(`Deleted “${page.name}”`);
      location.hash = "#/playlists";
    } catch (e) { ctx.toast(`Could not delete it: ${e.message}`); }
  };

  const draw = () => {
    const playable = tracks();
    const cover = playable.find((t) => t.cover);
    head.replaceChildren(
      el("img", { class: "cover big", alt: "", src: coverUrl(cover && cover.cover, 600), width: 240, height: 240 }),
      el("div", {},
        el("div", { class: "muted small" }, "Playlist"),
        el("h1", {}, page.name),
        page.comment ? el("div", { class: "comment" }, page.comment) : null,
        el("div", { class: "muted small" }, [count(page.entry_count), page.duration_ms ? span(page.duration_ms) : null, `changed ${ago(page.changed_ms)}`].filter(Boolean).join(" · ")),
        el("div", { class: "row" },
          el("button", { class: "primary", disabled: !playable.length, onclick: () => ctx.playList(playable, 0) }, "▶ Play"),
          el("button", { disabled: !playable.length, onclick: () => { ctx.queue.setShuffle(true); ctx.playList(playable, Math.floor(Math.random() * playable.length)); } }, "⤮ Shuffle"),
          el("button", { disabled: !playable.length, onclick: () => { ctx.queue.add(playable); ctx.toast("Playlist added to the queue"); } }, "+ Queue"),
          addToPlaylistButton(playable, "Add these tracks to another playlist…", "Playlist"),
          downloadToggle("playlist", page.id, page.name),
          el("button", { class: "rename", onclick: rename }, "Rename"),
          el("button", { class: "delete", onclick: deleteIt }, "Delete"))));
    let k = 0;
    list.replaceChildren(...page.entries.map((e) => entryRow(e, e.track ? k++ : k, playable)));
    if (!page.entries.length) list.append(el("li", { class: "muted empty" }, "Empty. Add tracks with ≡+ on any track row."));
    list.dataset.order = page.entries.map((e) => e.entry).join(",");
  };
  draw();
}
