// The audio engine: plays the queue's current track through one of two
// <audio> elements while the other loads the next one, so an album rolls
// over without a gap; seeks by reopening the stream at the new time
// (`start=`), which works on a live encode that has no length yet; shows
// the track's full duration from the catalog at once; and drives the
// Media Session (lock screen, headset keys). Each playback is timed for
// the node's play counts (scrobble.js).

import { get } from "./api.js";
import { coverUrl } from "./util.js";
import { Scrobbler } from "./scrobble.js";

/** Seconds a stream may stall before the player gives up on it. */
const STALL_S = 20;

export class Player extends EventTarget {
  constructor(queue) {
    super();
    this.queue = queue;
    this.els = [new Audio(), new Audio()];
    for (const a of this.els) { a.preload = "auto"; a.crossOrigin = null; }
    this.active = 0;
    this.offset = 0; // seconds where the active element's stream starts
    this.loadedId = null; // track id in the active element
    this.preloaded = null; // {id, el} ready in the other element
    this.quality = localStorage.getItem("tunemesh.quality") || "auto";
    this.volume = Number(localStorage.getItem("tunemesh.volume") ?? 1);
    this.paths = new Map(); // device id -> lan | direct | relayed
    this.stallTimer = null;
    this.error = null;
    this.endedAt = null; // when the last track ended (performance.now())
    this.gaps = []; // ms from a track's end to the next one playing, as measured here
    this.scrobbler = new Scrobbler();
    for (const [i, a] of this.els.entries()) this.wire(a, i);
    this.setVolume(this.volume);
    this.mediaSession();
    this.refreshPaths();
    setInterval(() => this.refreshPaths(), 30000);
  }

  get el() { return this.els[this.active]; }
  get other() { return this.els[1 - this.active]; }
  get playing() { return !this.el.paused && !this.el.ended; }
  get position() { return this.loadedId ? this.offset + (this.el.currentTime || 0) : this.queue.position || 0; }
  get duration() { const t = this.queue.current; return t ? t.duration_ms / 1000 : 0; }
  /** Plays the node has recorded from this page. */
  get scrobbles() { return this.scrobbler.count; }

  async refreshPaths() {
    try {
      const peers = await get("/api/peers");
      this.paths = new Map(peers.filter((p) => p.connected).map((p) => [p.id, p.path]));
    } catch { /* keep the last known */ }
  }

  /** The bitrate for `t`: the user's choice, or by the path to its holder. */
  bitrateFor(t) {
    if (this.quality !== "auto") return this.quality;
    const srcs = (t.sources || []).filter((s) => s.online);
    if (srcs.some((s) => s.local)) return "192";
    const paths = srcs.map((s) => this.paths.get(s.device)).filter(Boolean);
    if (paths.includes("lan")) return "192";
    if (paths.includes("direct")) return "128";
    return "96"; // relayed, or not known yet: the thrifty choice
  }

  url(t, start) {
    const p = new URLSearchParams({ bitrate: this.bitrateFor(t) });
    if (start > 0) p.set("start", start.toFixed(2));
    return `/stream/${t.id}?${p}`;
  }

  wire(a, i) {
    a.addEventListener("timeupdate", () => {
      if (i !== this.active) return;
      this.queue.position = this.position;
      this.scrobbler.tick(this.position);
      this.emit("time");
      this.maybePreload();
    });
    a.addEventListener("ended", () => {
      if (i !== this.active) return;
      this.endedAt = performance.now();
      this.scrobbler.tick(this.position); // the last steps to the end count too
      this.advance();
    });
    a.addEventListener("playing", () => {
      if (i !== this.active) return;
      if (this.endedAt !== null) { this.gaps.push(performance.now() - this.endedAt); this.endedAt = null; }
      this.clearStall(); this.error = null; this.emit("state");
    });
    a.addEventListener("pause", () => { if (i === this.active) this.emit("state"); });
    a.addEventListener("waiting", () => { if (i === this.active) this.armStall(); });
    a.addEventListener("error", () => {
      if (i === this.active && a.src) this.fail();
      else if (this.preloaded && this.preloaded.el === a) this.preloaded = null;
    });
  }

  emit(type) { this.dispatchEvent(new Event(type)); }

  armStall() {
    this.clearStall();
    this.stallTimer = setTimeout(() => this.fail(), STALL_S * 1000);
  }

  clearStall() { clearTimeout(this.stallTimer); this.stallTimer = null; }

  fail() {
    this.clearStall();
    const t = this.queue.current;
    this.el.pause();
    this.error = t
      ? (t.online ? `Cannot play “${t.title}”: the device holding it does not answer.` : `Cannot play “${t.title}”: no device holding it is online.`)
      : "Cannot play this track.";
    this.emit("error");
    this.emit("state");
  }

  /** Play the queue's current track from `start` seconds. */
  load(start = 0, autoplay = true) {
    if (start !== 0 || !this.preloaded) this.endedAt = null; // a gap is measured only on roll-over
    const t = this.queue.current;
    this.clearStall();
    this.error = null;
    if (!t) { this.el.removeAttribute("src"); this.el.load(); this.loadedId = null; this.scrobbler.start(null); this.emit("track"); return; }
    if (this.preloaded && this.preloaded.id === t.id && start === 0) {
      // The next track is loaded already: switch elements, no gap.
      this.el.pause();
      this.active = 1 - this.active;
      this.preloaded = null;
    } else {
      this.el.src = this.url(t, start);
    }
    this.other.pause();
    this.offset = start;
    this.loadedId = t.id;
    this.scrobbler.start(t, start);
    this.setVolume(this.volume);
    if (autoplay) this.el.play().catch(() => this.emit("state"));
    this.mediaMetadata(t);
    this.emit("track");
    this.emit("state");
  }

  /** Load the next track into the spare element when this one nears its end. */
  maybePreload() {
    const left = this.duration - this.position;
    if (left > 15 || this.preloaded) return;
    const i = this.queue.following(false);
    const t = this.queue.items[i];
    if (!t || i === this.queue.index) return;
    this.other.src = this.url(t, 0);
    this.other.load();
    this.preloaded = { id: t.id, el: this.other };
  }

  advance() {
    if (this.queue.next(false)) this.load(0);
    else { this.emit("state"); this.emit("end"); }
  }

  toggle() {
    if (!this.queue.current) return;
    if (this.loadedId !== this.queue.current.id) { this.load(this.queue.position || 0); return; }
    if (this.el.paused) this.el.play().catch(() => {}); else this.el.pause();
  }

  next() { if (this.queue.next(true)) this.load(0); }

  prev() {
    if (this.position > 3) {
      // Back to the start is hearing it again: a new playback.
      this.seek(0);
      this.scrobbler.start(this.queue.current, 0);
    } else if (this.queue.prev()) this.load(0);
  }

  /** Seek to `s` seconds: a new stream from there (the preloaded next stays). */
  seek(s) {
    const t = this.queue.current;
    if (!t) return;
    s = Math.max(0, Math.min(s, this.duration - 0.25));
    const fresh = this.loadedId !== t.id; // nothing loaded yet (after a reload): a new playback
    const wasPlaying = this.playing || fresh;
    if (this.preloaded && this.preloaded.el === this.el) this.preloaded = null;
    this.el.src = this.url(t, s);
    this.offset = s;
    this.loadedId = t.id;
    this.queue.position = s;
    if (fresh) this.scrobbler.start(t, s); else this.scrobbler.jumped(s);
    if (wasPlaying) this.el.play().catch(() => {});
    this.emit("time");
  }

  setVolume(v) {
    this.volume = Math.max(0, Math.min(1, v));
    for (const a of this.els) a.volume = this.volume;
    localStorage.setItem("tunemesh.volume", String(this.volume));
  }

  setQuality(q) {
    this.quality = q;
    localStorage.setItem("tunemesh.quality", q);
    this.preloaded = null;
    if (this.loadedId) this.seek(this.position);
  }

  mediaSession() {
    if (!("mediaSession" in navigator)) return;
    const ms = navigator.mediaSession;
    const on = (a, f) => { try { ms.setActionHandler(a, f); } catch { /* not supported */ } };
    on("play", () => this.toggle());
    on("pause", () => this.el.pause());
    on("previoustrack", () => this.prev());
    on("nexttrack", () => this.next());
    on("seekto", (d) => this.seek(d.seekTime));
    on("seekbackward", (d) => this.seek(this.position - (d.seekOffset || 10)));
    on("seekforward", (d) => this.seek(this.position + (d.seekOffset || 10)));
    this.addEventListener("time", () => {
      try {
        if (this.duration > 0) ms.setPositionState({ duration: this.duration, position: Math.min(this.position, this.duration), playbackRate: 1 });
      } catch { /* an odd moment */ }
    });
    this.addEventListener("state", () => { ms.playbackState = this.playing ? "playing" : "paused"; });
  }

  mediaMetadata(t) {
    if (!("mediaSession" in navigator) || typeof MediaMetadata === "undefined") return;
    const src = (size) => ({ src: new URL(coverUrl(t.cover, size), location.href).href, sizes: `${size}x${size}` });
    navigator.mediaSession.metadata = new MediaMetadata({
      title: t.title, artist: t.artist, album: t.album,
      artwork: t.cover ? [src(96), src(256), src(512)] : [],
    });
  }
}
