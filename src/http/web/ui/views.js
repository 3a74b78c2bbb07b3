// The player's pages: albums (a grid of covers, paged as it scrolls),
// an album, artists, an artist, all tracks (a virtualised list: only the
// rows in sight exist, pages fetched as they come into view), search
// results, the starred items, recent and most played tracks, and the
// devices panel. Each view renders into the element it is given and
// returns nothing the caller must keep, or a cleanup function.

import { get, q } from "./api.js";
import { el, clock, span, coverUrl, ago, when } from "./util.js";
import { starButton, ratingControl, addToPlaylistButton } from "./mine.js";
import { downloadToggle, trackDownload, offlineMark } from "./offline.js";

/** Shared by the views: the queue and player, and the toast. */
let ctx;
export function setContext(c) { ctx = c; }

function holders(t) {
  const on = (t.sources || []).filter((s) => s.online).map((s) => (s.local ? "this device" : s.name));
  const all = (t.sources || []).map((s) => (s.local ? "this device" : s.name));
  if (!on.length && t.offline) return "downloaded to this device";
  return on.length ? on.join(", ") : `offline (${all.join(", ") || "no device"})`;
}

/**
 * One track in a list: plays `list` from `i`. `opts`: `number` (else the
 * track number), `album` (show the album), `note` (in place of the
 * holders: when it played, how often), `rating` (a rating control),
 * `extra` (more action buttons, as in a playlist).
 */
export function trackRow(t, i, list, opts = {}) {
  const play = () => ctx.playList(list, i);
  return el("li", { class: `track${t.online ? "" : " offline"}`, dataset: { id: t.id }, title: t.online ? "" : "No device holding this track is online" },
    el("button", { class: "num ghost", onclick: play, "aria-label": `Play ${t.title}` }, opts.number ?? (t.track ?? "")),
    el("div", { class: "t-main", ondblclick: play },
      el("a", { class: "t-title", href: "#", draggable: "false", onclick: (e) => { e.preventDefault(); play(); } }, t.title),
      el("div", { class: "muted small" }, offlineMark(t), opts.album ? [t.artist, t.album].filter(Boolean).join(" · ") : t.artist)),
    el("span", { class: "muted small holder" }, opts.note ?? holders(t)),
    el("span", { class: "muted time" }, clock(t.duration_ms / 1000)),
    el("span", { class: "actions" },
      opts.rating ? ratingControl(t.id, t, t.title) : null,
      starButton(t.id, t, t.title),
      el("button", { class: "ghost opt", title: "Play next", "aria-label": `Play ${t.title} next`, onclick: () => ctx.queue.playNext([t]) || ctx.toast(`“${t.title}” plays next`) }, "⤵"),
      el("button", { class: "ghost opt", title: "Add to queue", "aria-label": `Add ${t.title} to the queue`, onclick: () => ctx.queue.add([t]) || ctx.toast(`“${t.title}” added to the queue`) }, "+"),
      addToPlaylistButton([t]),
      trackDownload(t),
      opts.extra || null));
}

/** A row for a track no device holds now (a play or entry kept its id). */
export function goneRow(id, number, opts = {}) {
  return el("li", { class: "track gone", dataset: { id }, title: "No device holds this track now" },
    el("span", { class: "num muted" }, number ?? ""),
    el("div", { class: "t-main" }, el("span", { class: "t-title muted" }, "A track no device holds now"), el("div", { class: "muted small" }, id.slice(0, 12))),
    el("span", { class: "muted small holder" }, opts.note ?? ""),
    el("span", {}),
    el("span", { class: "actions" }, opts.extra || null));
}

export function albumCard(a) {
  // The star sits beside the link, not in it: a button inside a link is not allowed.
  return el("div", { class: "card-box" },
    el("a", { class: `card${a.online ? "" : " offline"}`, href: `#/album/${a.id}` },
      el("img", { class: "cover", loading: "lazy", alt: "", src: coverUrl(a.cover), width: 300, height: 300 }),
      el("div", { class: "card-title" }, a.name),
      el("div", { class: "muted small" }, a.artist, a.year ? ` · ${a.year}` : "")),
    starButton(`album:${a.id}`, a, a.name));
}

function artistItem(a) {
  const name = a.name || "Unknown artist";
  return el("li", {}, starButton(`artist:${a.id}`, a, name), el("a", { href: `#/artist/${a.id}` }, name),
    a.album_count != null ? el("span", { class: "muted small" }, ` ${a.album_count} albums · ${a.track_count} tracks`) : null);
}

/** Append pages of `fetchPage(offset)` into `into` as `sentinel` scrolls into view. */
function infinite(into, sentinel, fetchPage, render) {
  let offset = 0, total = Infinity, busy = false;
  const more = async () => {
    if (busy || offset >= total) return;
    busy = true;
    try {
      const p = await fetchPage(offset);
      total = p.total;
      offset += p.items.length;
      into.append(...p.items.map(render));
      if (!p.items.length) total = offset;
    } catch (e) { ctx.toast(e.message); total = offset; }
    busy = false;
    if (offset < total && sentinel.getBoundingClientRect().top < innerHeight * 2) more();
  };
  const io = new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) more(); }, { rootMargin: "800px" });
  io.observe(sentinel);
  more();
  return () => io.disconnect();
}

export function albums(view, params) {
  const sort = params.get("sort") || "artist";
  const sorts = [["artist", "Artist"], ["name", "Name"], ["year", "Year"], ["added", "Recently added"]];
  const grid = el("div", { class: "grid" });
  const sentinel = el("div", { class: "sentinel" });
  view.append(
    el("div", { class: "view-head" }, el("h1", {}, "Albums"),
      el("div", { class: "chips", role: "group", "aria-label": "Sort albums by" },
        sorts.map(([k, label]) => el("a", { class: `chip${k === sort ? " on" : ""}`, href: `#/albums?sort=${k}` }, label)))),
    grid, sentinel);
  return infinite(grid, sentinel, (o) => get(`/api/albums?sort=${sort}&offset=${o}&limit=120`), albumCard);
}

export async function album(view, id) {
  const a = await get(`/api/albums/${q(id)}`);
  const tracks = a.tracks;
  const discs = new Set(tracks.map((t) => t.disc ?? 1)).size > 1;
  const list = el("ol", { class: "tracks" });
  let disc = null;
  tracks.forEach((t, i) => {
    if (discs && t.disc !== disc) { disc = t.disc; list.append(el("li", { class: "disc muted" }, `Disc ${disc ?? 1}`)); }
    list.append(trackRow(t, i, tracks, { rating: true }));
  });
  view.append(
    el("div", { class: "album-head" },
      el("img", { class: "cover big", alt: "", src: coverUrl(a.cover, 600), width: 240, height: 240 }),
      el("div", {},
        el("div", { class: "muted small" }, "Album"),
        el("h1", {}, a.name),
        el("div", {}, el("a", { href: `#/artist/${a.artist_id}` }, a.artist)),
        el("div", { class: "muted small" }, [a.year, `${tracks.length} tracks`, span(a.duration_ms), ...(a.genres || [])].filter(Boolean).join(" · ")),
        el("div", { class: "row marks" }, starButton(`album:${a.id}`, a, a.name), ratingControl(`album:${a.id}`, a, a.name)),
        el("div", { class: "row" },
          el("button", { class: "primary", onclick: () => ctx.playList(tracks, 0) }, "▶ Play"),
          el("button", { onclick: () => { ctx.queue.setShuffle(true); ctx.playList(tracks, Math.floor(Math.random() * tracks.length)); } }, "⤮ Shuffle"),
          el("button", { onclick: () => { ctx.queue.add(tracks); ctx.toast("Album added to the queue"); } }, "+ Queue"),
          addToPlaylistButton(tracks, "Add the album to a playlist…", "Playlist"),
          downloadToggle("album", a.id, a.name)))),
    list);
}

export function artists(view) {
  const list = el("ul", { class: "artists" });
  const sentinel = el("div", { class: "sentinel" });
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Artists")), list, sentinel);
  return infinite(list, sentinel, (o) => get(`/api/artists?offset=${o}&limit=200`), artistItem);
}

export async function artist(view, id) {
  const a = await get(`/api/artists/${q(id)}`);
  const grid = el("div", { class: "grid" }, a.albums.map(albumCard));
  view.append(el("div", { class: "view-head" }, el("h1", {}, a.name),
    el("span", { class: "marks" }, starButton(`artist:${a.id}`, a, a.name), ratingControl(`artist:${a.id}`, a, a.name)),
    el("span", { class: "muted" }, `${a.album_count} albums · ${a.track_count} tracks`)), grid);
}

/** All tracks: a fixed-height virtual list over the server's pages. */
export function tracks(view) {
  const ROW = 52, PAGE = 200;
  const pages = new Map(); // page number -> items | promise
  let total = 0;
  const spacer = el("div", { class: "vspacer" });
  const rows = el("ol", { class: "tracks vrows" });
  const box = el("div", { class: "vbox" }, spacer, rows);
  const head = el("div", { class: "view-head" }, el("h1", {}, "Tracks"), el("span", { class: "muted", id: "tracks-total" }));
  view.append(head, box);
  const page = (n) => {
    if (!pages.has(n)) {
      pages.set(n, get(`/api/tracks?offset=${n * PAGE}&limit=${PAGE}`).then((p) => {
        total = p.total; pages.set(n, p.items);
        spacer.style.height = `${total * ROW}px`;
        head.querySelector("#tracks-total").textContent = `${total.toLocaleString()} tracks`;
        draw();
      }).catch((e) => { pages.delete(n); ctx.toast(e.message); }));
    }
    const v = pages.get(n);
    return Array.isArray(v) ? v : null;
  };
  const at = (i) => { const p = page(Math.floor(i / PAGE)); return p ? p[i % PAGE] : null; };
  // A play of row i plays that page from there (the queue holds real tracks).
  const listFrom = (i) => { const p = page(Math.floor(i / PAGE)); return p ? [p, i % PAGE] : [[], 0]; };
  let frame = 0;
  const draw = () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      const top = Math.max(0, -box.getBoundingClientRect().top);
      const first = Math.max(0, Math.floor(top / ROW) - 10);
      const last = Math.min(total || PAGE, first + Math.ceil(innerHeight / ROW) + 20);
      rows.style.transform = `translateY(${first * ROW}px)`;
      const out = [];
      for (let i = first; i < last; i++) {
        const t = at(i);
        if (!t) { out.push(el("li", { class: "track placeholder" }, "…")); continue; }
        const [list, k] = listFrom(i);
        out.push(trackRow(t, k, list, { number: i + 1, album: true }));
      }
      rows.replaceChildren(...out);
    });
  };
  addEventListener("scroll", draw, { passive: true });
  addEventListener("resize", draw);
  page(0);
  draw();
  return () => { removeEventListener("scroll", draw); removeEventListener("resize", draw); };
}

export async function search(view, query) {
  view.append(el("div", { class: "view-head" }, el("h1", {}, `Search: ${query}`)));
  if (!query.trim()) return;
  const started = performance.now();
  const r = await get(`/api/search?q=${q(query)}&limit=50`);
  view.dataset.searchMs = String(Math.round(performance.now() - started));
  if (!r.tracks.length && !r.albums.length && !r.artists.length) {
    view.append(el("p", { class: "muted" }, "Nothing matches."));
    return;
  }
  if (r.artists.length) view.append(el("h2", {}, "Artists"), el("ul", { class: "artists" }, r.artists.map(artistItem)));
  if (r.albums.length) view.append(el("h2", {}, "Albums"), el("div", { class: "grid" }, r.albums.map(albumCard)));
  if (r.tracks.length) view.append(el("h2", {}, "Tracks"), el("ol", { class: "tracks results" }, r.tracks.map((t, i) => trackRow(t, i, r.tracks, { number: i + 1, album: true }))));
}

export async function starred(view) {
  const r = await get("/api/starred");
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Starred"),
    r.tracks.length ? el("button", { class: "primary", onclick: () => ctx.playList(r.tracks, 0) }, "▶ Play starred tracks") : null));
  if (!r.tracks.length && !r.albums.length && !r.artists.length) {
    view.append(el("p", { class: "muted" }, "Nothing starred yet. Star a track, an album or an artist with ☆ and it shows here."));
  }
  if (r.tracks.length) view.append(el("h2", {}, "Tracks"), el("ol", { class: "tracks starred-tracks" }, r.tracks.map((t, i) => trackRow(t, i, r.tracks, { number: i + 1, album: true, rating: true }))));
  if (r.albums.length) view.append(el("h2", {}, "Albums"), el("div", { class: "grid" }, r.albums.map(albumCard)));
  if (r.artists.length) view.append(el("h2", {}, "Artists"), el("ul", { class: "artists" }, r.artists.map(artistItem)));
  if (r.absent.length) {
    view.append(el("p", { class: "muted small" }, `${r.absent.length} more starred ${r.absent.length === 1 ? "item is" : "items are"} on no device now; they show again when one has them.`));
  }
}

/** The chips between the two views of plays. */
function playsHead(title, on, total) {
  return el("div", { class: "view-head" }, el("h1", {}, title),
    el("div", { class: "chips", role: "group", "aria-label": "Plays" },
      el("a", { class: `chip${on === "recent" ? " on" : ""}`, href: "#/recent" }, "Recently played"),
      el("a", { class: `chip${on === "most" ? " on" : ""}`, href: "#/most" }, "Most played")),
    el("span", { class: "muted small" }, `${total.toLocaleString()} play${total === 1 ? "" : "s"} in all`));
}

export async function recent(view) {
  const r = await get("/api/plays?limit=200");
  view.append(playsHead("Recently played", "recent", r.total));
  if (!r.recent.length) { view.append(el("p", { class: "muted" }, "Nothing played yet.")); return; }
  const tracks = r.recent.filter((p) => p.track).map((p) => p.track);
  let k = 0;
  view.append(el("ol", { class: "tracks plays recent" }, r.recent.map((p, i) => {
    const note = el("span", { title: `${when(p.started_ms)} · ${clock(p.ms_played / 1000)} heard` }, ago(p.started_ms));
    return p.track ? trackRow(p.track, k++, tracks, { number: i + 1, album: true, note }) : goneRow(p.id, i + 1, { note });
  })));
}

export async function most(view) {
  const r = await get("/api/plays?limit=100");
  view.append(playsHead("Most played", "most", r.total));
  if (!r.most.length) { view.append(el("p", { class: "muted" }, "Nothing played yet.")); return; }
  const tracks = r.most.filter((p) => p.track).map((p) => p.track);
  let k = 0;
  view.append(el("ol", { class: "tracks plays most" }, r.most.map((p, i) => {
    const note = el("span", { title: `last ${when(p.last_played_ms)} · ${span(p.total_ms)} in all` },
      el("strong", { class: "count" }, `${p.count} play${p.count === 1 ? "" : "s"}`), ` · ${ago(p.last_played_ms)}`);
    return p.track ? trackRow(p.track, k++, tracks, { number: i + 1, album: true, note }) : goneRow(p.id, i + 1, { note });
  })));
}

export async function devices(view) {
  const [devs, peers] = await Promise.all([get("/api/devices"), get("/api/peers").catch(() => [])]);
  const byId = new Map(peers.map((p) => [p.id, p]));
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Devices")),
    el("ul", { class: "devices" }, devs.map((d) => {
      const p = byId.get(d.id);
      const online = d.this_device || (p && p.connected);
      const how = d.this_device ? "this device" : p && p.connected ? `${p.path}${p.rtt_ms != null ? ` · ${p.rtt_ms.toFixed(1)} ms` : ""}` : "offline";
      return el("li", { class: online ? "online" : "offline" },
        el("span", { class: "dot", "aria-hidden": "true" }),
        el("div", {}, el("strong", {}, d.name || d.id.slice(0, 12)), el("div", { class: "muted small" }, `${d.role} · ${how}`)));
    })));
}
