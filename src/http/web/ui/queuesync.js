// The play queue in the owner's shared state: saved to the node a moment
// after each change (and now and then while a track plays), so another
// device, or Subsonic's getPlayQueue later, can pick it up; an empty queue
// at startup takes the saved one. The last save wins, as everywhere.

import { get, put } from "./api.js";
import { slim } from "./queue.js";
import { debounce } from "./util.js";

/** Saves at most this often while the position moves (seconds). */
const POSITION_EVERY = 30;

export async function startQueueSync(queue) {
  if (queue.items.length === 0) await restore(queue);
  let saved = -1;
  const save = debounce(async () => {
    const ids = queue.items.map((t) => t.id);
    const current = Math.max(0, Math.min(queue.index, ids.length - 1));
    const position = Math.floor((queue.position || 0) * 1000);
    try {
      await put("/api/queue", { ids, current, position_ms: position });
      saved = queue.position || 0;
    } catch { /* offline: the next change or tick tries again */ }
  }, 2000);
  queue.addEventListener("change", save);
  setInterval(() => {
    if (Math.abs((queue.position || 0) - saved) >= POSITION_EVERY) save();
  }, 5000);
}

async function restore(queue) {
  let q;
  try { q = await get("/api/queue"); } catch { return; }
  if (!q || !q.tracks || q.tracks.length === 0) return;
  const currentId = q.ids[q.current];
  const at = Math.max(0, q.tracks.findIndex((t) => t.id === currentId));
  queue.items = q.tracks.map(slim);
  queue.index = at;
  queue.position = q.tracks[at] && q.tracks[at].id === currentId ? q.position_ms / 1000 : 0;
  queue.changed();
}
