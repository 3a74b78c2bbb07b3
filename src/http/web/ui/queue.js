// The play queue: what plays now and next, shuffle and repeat. Kept in
// localStorage, so a reload finds it (and the position) again.

const KEY = "tunemesh.queue.v1";

/** What the queue keeps of a track (enough to show and play it). */
export function slim(t) {
  return {
    id: t.id, title: t.title, artist: t.artist, album: t.album, album_id: t.album_id,
    duration_ms: t.duration_ms, cover: t.cover, online: t.online,
    starred_at_ms: t.starred_at_ms ?? null, rating: t.rating || 0,
    sources: (t.sources || []).map((s) => ({ device: s.device, name: s.name, local: s.local, online: s.online })),
  };
}

export class Queue extends EventTarget {
  constructor() {
    super();
    this.items = [];
    this.index = -1;
    this.shuffle = false;
    this.repeat = "off"; // off | all | one
    this.position = 0; // seconds into the current track, for reloads
    this.unshuffled = null;
    this.load();
  }

  load() {
    try {
      const s = JSON.parse(localStorage.getItem(KEY) || "null");
      if (s && Array.isArray(s.items)) Object.assign(this, s);
    } catch { /* a damaged entry is dropped */ }
    if (this.index >= this.items.length) this.index = this.items.length - 1;
  }

  save() {
    const { items, index, shuffle, repeat, position, unshuffled } = this;
    try { localStorage.setItem(KEY, JSON.stringify({ items, index, shuffle, repeat, position, unshuffled })); } catch { /* full: keep going */ }
  }

  changed() { this.save(); this.dispatchEvent(new Event("change")); }

  get current() { return this.items[this.index] ?? null; }

  /** Replace the queue with `tracks` and start at `start`. */
  playNow(tracks, start = 0) {
    this.items = tracks.map(slim);
    this.index = Math.min(start, this.items.length - 1);
    this.unshuffled = null;
    if (this.shuffle) this.shuffleRest();
    this.position = 0;
    this.changed();
  }

  /** Put `tracks` right after the current one. */
  playNext(tracks) {
    this.items.splice(this.index + 1, 0, ...tracks.map(slim));
    if (this.index < 0) this.index = 0;
    this.changed();
  }

  /** Put `tracks` at the end. */
  add(tracks) {
    this.items.push(...tracks.map(slim));
    if (this.index < 0) this.index = 0;
    this.changed();
  }

  move(from, to) {
    if (from === to || from < 0 || to < 0 || from >= this.items.length || to >= this.items.length) return;
    const [t] = this.items.splice(from, 1);
    this.items.splice(to, 0, t);
    if (this.index === from) this.index = to;
    else if (from < this.index && to >= this.index) this.index--;
    else if (from > this.index && to <= this.index) this.index++;
    this.changed();
  }

  remove(i) {
    if (i < 0 || i >= this.items.length) return;
    this.items.splice(i, 1);
    if (i < this.index) this.index--;
    else if (i === this.index && this.index >= this.items.length) this.index = this.items.length - 1;
    this.changed();
  }

  clear() {
    this.items = []; this.index = -1; this.unshuffled = null; this.position = 0;
    this.changed();
  }

  /** The index that plays after the current one ends; -1 for none. */
  following(manual) {
    if (!this.items.length) return -1;
    if (this.repeat === "one" && !manual) return this.index;
    if (this.index + 1 < this.items.length) return this.index + 1;
    return this.repeat === "all" ? 0 : -1;
  }

  go(i) {
    if (i < 0 || i >= this.items.length) return false;
    this.index = i; this.position = 0;
    this.changed();
    return true;
  }

  next(manual = true) { return this.go(this.following(manual)); }

  prev() {
    if (this.index > 0) return this.go(this.index - 1);
    return this.repeat === "all" ? this.go(this.items.length - 1) : false;
  }

  setShuffle(on) {
    if (on === this.shuffle) return;
    this.shuffle = on;
    if (on) {
      this.unshuffled = this.items.map((t) => t.id);
      this.shuffleRest();
    } else if (this.unshuffled) {
      const cur = this.current;
      const order = new Map(this.unshuffled.map((id, i) => [id, i]));
      this.items.sort((a, b) => (order.get(a.id) ?? 1e9) - (order.get(b.id) ?? 1e9));
      this.index = cur ? this.items.indexOf(cur) : -1;
      this.unshuffled = null;
    }
    this.changed();
  }

  /** Shuffle what comes after the current track (Fisher–Yates). */
  shuffleRest() {
    const rest = this.items.slice(this.index + 1);
    for (let i = rest.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [rest[i], rest[j]] = [rest[j], rest[i]];
    }
    this.items.splice(this.index + 1, rest.length, ...rest);
  }

  cycleRepeat() {
    this.repeat = { off: "all", all: "one", one: "off" }[this.repeat] || "off";
    this.changed();
  }
}
