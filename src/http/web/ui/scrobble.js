// Plays, as the node records them: a playback of a track counts once it
// has really been heard for half its length or four minutes, whichever
// comes first. Heard time is summed from the position's steps while it
// moves with the clock, so a seek forward adds nothing. Each start of a
// track is one playback (a replay counts again). A play the node cannot
// take now (offline, logged out) waits in a small outbox in localStorage
// and goes later with its original start time: when the node answers
// again, after the next play that goes through, or every minute.

import { post, link } from "./api.js";

const OUTBOX = "tunemesh.plays.v1";
/** Plays kept at most while the node is away (the oldest go first). */
const MAX_KEPT = 500;
const RETRY_MS = 60000;
/** A play counts after this many seconds heard, even of a long track. */
const ENOUGH_S = 240;

function kept() {
  try {
    const v = JSON.parse(localStorage.getItem(OUTBOX) || "[]");
    return Array.isArray(v) ? v : [];
  } catch { return []; }
}

function keep(plays) {
  try {
    if (plays.length) localStorage.setItem(OUTBOX, JSON.stringify(plays.slice(-MAX_KEPT)));
    else localStorage.removeItem(OUTBOX);
  } catch { /* storage full or off: the play is lost, playback goes on */ }
}

/** Worth trying again later: the node was away, or wants a login first. */
function retryable(e) {
  return e.status === 0 || e.status === 401 || e.status === 429 || e.status >= 500;
}

export class Scrobbler {
  constructor() {
    this.count = 0; // plays the node took from this page
    this.current = null; // the playback being timed
    this.flushing = false;
    setInterval(() => this.flush(), RETRY_MS);
    link.addEventListener("back", () => this.flush());
    addEventListener("online", () => this.flush());
    this.flush();
  }

  /** A playback of `t` starts at `pos` seconds into it (null: nothing plays). */
  start(t, pos = 0) {
    const dur = t && t.duration_ms > 0 ? t.duration_ms / 2000 : ENOUGH_S;
    this.current = t ? {
      id: t.id, need: Math.min(dur, ENOUGH_S), startedAt: Date.now(),
      heard: 0, last: { pos, at: performance.now() }, done: false,
    } : null;
  }

  /** The position jumped to `pos` (a seek): nothing between counts. */
  jumped(pos) {
    if (this.current) this.current.last = { pos, at: performance.now() };
  }

  /** The position is now `pos` seconds. */
  tick(pos) {
    const c = this.current;
    if (!c || c.done) return;
    const at = performance.now();
    const step = pos - c.last.pos, wall = (at - c.last.at) / 1000;
    // Listening moves the position with the clock; a bigger step is a jump.
    if (step > 0 && step <= wall + 0.5) c.heard += step;
    c.last = { pos, at };
    if (c.heard >= c.need) {
      c.done = true;
      this.send({ id: c.id, started_at_ms: c.startedAt, ms_played: Math.round(c.heard * 1000) });
    }
  }

  async send(play) {
    try {
      await post("/api/plays", play);
      this.count++;
      this.flush();
    } catch (e) {
      if (retryable(e)) keep([...kept(), play]);
    }
  }

  /** Send what waited in the outbox, oldest first. */
  async flush() {
    if (this.flushing) return;
    const box = kept();
    if (!box.length) return;
    this.flushing = true;
    // Taken out first, so another tab flushing at once finds it empty.
    keep([]);
    const again = [];
    for (let i = 0; i < box.length; i++) {
      try {
        await post("/api/plays", box[i]);
        this.count++;
      } catch (e) {
        if (!retryable(e)) continue; // refused for good (an unknown track): dropped
        again.push(...box.slice(i)); // still away: the rest waits too
        break;
      }
    }
    if (again.length) keep([...again, ...kept()]);
    this.flushing = false;
  }
}
