// The node's JSON API, as the player calls it: same origin, the session
// cookie, JSON in and out, errors as exceptions with the server's message.

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/**
 * Fires "back" when the node answers again after a call found it gone, so
 * what waited for it (plays kept while offline) can go at once; and
 * "logged-out" when the session is no longer good (it expired, or the node
 * restarted: sessions live in its memory), so the page can ask to log in.
 */
export const link = new EventTarget();
let unreachable = false;

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try { r = await fetch(path, init); } catch (e) { unreachable = true; throw new ApiError(0, "the node does not answer"); }
  if (unreachable) { unreachable = false; link.dispatchEvent(new Event("back")); }
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (r.status === 401 && !path.startsWith("/api/web/")) link.dispatchEvent(new Event("logged-out"));
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || `${r.status} ${r.statusText}`);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});
export const put = (path, body) => call("PUT", path, body ?? {});
export const patch = (path, body) => call("PATCH", path, body ?? {});
export const del = (path) => call("DELETE", path);

/** Quote one query value. */
export const q = encodeURIComponent;
