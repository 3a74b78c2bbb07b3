// Small helpers shared by the player's modules: DOM building, time and
// size formatting, debouncing.

/** Build an element: el("div", {class: "x", onclick: f}, child, "text"). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** 215.4 -> "3:35"; 3725 -> "1:02:05". */
export function clock(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
  const s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, h = Math.floor(seconds / 3600);
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** A total time for humans: "47 min", "2 h 5 min". */
export function span(ms) {
  const min = Math.round(ms / 60000);
  return min >= 60 ? `${Math.floor(min / 60)} h ${min % 60} min` : `${min} min`;
}

export function debounce(f, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

/** The URL of a cover, or of the placeholder icon. */
export function coverUrl(cover, size = 300) {
  return cover ? `/api/cover/${cover}?size=${size}` : document.querySelector("link[rel=icon]").href;
}

/** An inline SVG icon (24×24 viewBox) from path data; `stroke` for line art. */
export function icon(d, stroke = false) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", stroke ? "ic stroke" : "ic");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const p = document.createElementNS(ns, "path");
  p.setAttribute("d", d);
  svg.append(p);
  return svg;
}

/** When, for humans: "just now", "5 min ago", "3 h ago", "yesterday 21:04", "Tue 09:12", "4 Mar 2023". */
export function ago(ms, now = Date.now()) {
  const s = (now - ms) / 1000;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.max(1, Math.round(s / 60))} min ago`;
  const d = new Date(ms);
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  if (s < 6 * 3600) return `${Math.floor(s / 3600)} h ago`;
  const midnight = new Date(now).setHours(0, 0, 0, 0);
  if (ms >= midnight) return `today ${time}`;
  if (ms >= midnight - 86400000) return `yesterday ${time}`;
  if (ms >= midnight - 6 * 86400000) return `${d.toLocaleDateString(undefined, { weekday: "short" })} ${time}`;
  const year = d.getFullYear() === new Date(now).getFullYear() ? undefined : "numeric";
  return d.toLocaleDateString(undefined, { day: "numeric", month: "short", year });
}

/** A full date and time, for a title attribute. */
export function when(ms) {
  return new Date(ms).toLocaleString();
}

/** Bytes for humans, in the units budgets are written in: "512 B", "3.4 MiB", "4 GiB". */
export function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  const v = i === 0 || n >= 100 || Number.isInteger(n) ? String(Math.round(n)) : n.toFixed(1).replace(/\.0$/, "");
  return `${v} ${units[i]}`;
}
