// mediajobs browser client: one ES module, no build step. Served at /static/mediajobs-client.js.
//
//   import { createMediaClient } from "/static/mediajobs-client.js";
//   const media = createMediaClient({ baseURL: "", getToken: async () => token });
//   const item = await media.upload(file, { onProgress: (p) => bar.value = p.fraction });
//
// Progress is real: bytes sent (XMLHttpRequest upload events), then the job's own
// upload_progress events over one shared EventSource. Nothing is simulated.
//
// Collections (the ordered media of an entity such as listing/8412) are read and saved whole,
// with the collection's ETag guarding against a lost update:
//
//   const { collection, etag } = await media.collections.get("listing", "8412");
//   await media.collections.sync("listing", "8412", items, { ifMatch: etag }); // 412: stale_collection
//   const view = await media.collections.public("listing", "8412");            // no token

/**
 * @typedef {{url: string, width: number, height: number}} VariantRef
 * @typedef {{id: string, path: string, status: string, kind: string, purpose: string,
 *   width: number|null, height: number|null, url: string|null,
 *   variants: Record<string, VariantRef>, blurDataURL: string|null, altText: string|null,
 *   sortOrder: number, createdAt: string, jobId: string|null, filename: string|null,
 *   error: {code: string, message: string}|null, review: object|null,
 *   failedJob: FailedJob|null}} MediaItem
 * @typedef {{id: string, kind: string,
 *   error: {code: string, message: string, retryable: boolean}}} FailedJob The job that
 *   stopped an item (its processing, or its review); `retry(id)` runs it again when
 *   `error.retryable`.
 * @typedef {{maxBatchSize: number, maxSourceBytes: number, minWidth: number,
 *   minHeight: number, minAspectRatio: number, maxAspectRatio: number,
 *   maxMegapixels: number, undoWindowSeconds: number, acceptedTypes: string[],
 *   acceptedExtensions: string[], variants: {name: string, size: number}[],
 *   collectionPurposes: string[], collectionMaxItems: number}} MediaRules
 * @typedef {{phase: "uploading"|"queued"|"processing"|"done", fraction: number,
 *   loaded?: number, total?: number, message?: string, code?: string, retryIn?: number,
 *   jobId?: string, mediaId?: string}} UploadProgress `queued`: the bytes are stored and
 *   the upload waits to be completed, for a slot under the policy's `maxBatchSize`
 *   (`code` "too_many_uploads") or for the server to answer again (`code` of the 503, or
 *   "network_error"); `retryIn` is the wait in ms before the next try, when one is set.
 * @typedef {{objectPath: string, purpose?: string, replaces?: string, altText?: string}}
 *   PendingUpload An upload whose bytes are in storage but whose `complete` did not go
 *   through; `completeUpload(pending)` finishes it without sending the bytes again.
 * @typedef {{type: string, id: string|null, data: any}} MediaEvent
 * @typedef {{mediaId: string, purpose: string, position: number, media: MediaItem}}
 *   CollectionItem One item of a collection, in the owner's view: `media` is the item as
 *   `get()` returns it, whatever its status (a deleted one keeps its place until a sync
 *   leaves it out).
 * @typedef {{entityType: string, entityId: string, ownerId: string, version: number,
 *   items: CollectionItem[]}} Collection The owner's view of an entity's collection, items
 *   in order (`position` 0, 1, ...).
 * @typedef {{mediaId: string, purpose: string}} CollectionEntry What `collections.sync()`
 *   sends for each item (other fields, e.g. a `CollectionItem`'s, are left out).
 * @typedef {{id: string, src: string, thumbnailSrc: string, srcset: string,
 *   blurDataURL: string|null, width: number, height: number, altText: string|null,
 *   purpose: string}} PublicMedia An item as anyone may see it: `srcset` is the HTML
 *   attribute's value ("url 320w, url 640w, ...").
 * @typedef {{entityType: string, entityId: string, items: PublicMedia[],
 *   profileImage: PublicMedia|null, cover: PublicMedia|null}} PublicCollection The public
 *   read: only items that are ready and passed review, in order.
 */

/**
 * An API or job error with a machine-readable code. `status` is the HTTP status (none for a
 * job's error or a lost connection); `retryAfter` the server's Retry-After in seconds, or
 * null; `pendingUpload`, when set, is an upload whose bytes are stored: pass it to
 * `completeUpload()` to finish it; `mediaId` is the item a job error belongs to.
 */
export class MediaError extends Error {
  /**
   * @param {string} code @param {string} message @param {number} [status]
   * @param {{retryAfter?: number|null, pendingUpload?: PendingUpload|null, mediaId?: string|null}} [extra]
   */
  constructor(code, message, status, extra = {}) {
    super(message);
    this.name = "MediaError";
    this.code = code;
    this.status = status;
    this.retryAfter = extra.retryAfter ?? null;
    this.pendingUpload = extra.pendingUpload ?? null;
    this.mediaId = extra.mediaId ?? null;
  }
}

// Waiting out a `complete` the server turned away for now (429 too_many_uploads, a 502/503/
// 504, a lost connection; `complete` is idempotent, so sending it again is safe): the
// server's Retry-After when it sends one, else exponential backoff with "equal jitter"
// (attempt n waits d/2 + random(0, d/2), d = min(CAP, BASE * 2^n); M. Brooker, "Exponential
// Backoff And Jitter", AWS Architecture Blog, 2015), for at most WAIT_TOTAL_MS in all.
const WAIT_BASE_MS = 1_000;
const WAIT_CAP_MS = 30_000;
const WAIT_TOTAL_MS = 300_000; // five minutes: time for a full batch of 20 photos to finish
const TEMPORARY_STATUS = new Set([429, 502, 503, 504]);

/** Whether a failed request may succeed if sent again later. @param {unknown} error */
function temporary(error) {
  return error instanceof MediaError &&
    (TEMPORARY_STATUS.has(error.status) || (error.status === undefined && error.code === "network_error"));
}

/** Retry-After (delta-seconds or an HTTP date) in seconds, or null. @param {string|null} value */
function retryAfterSeconds(value) {
  if (!value) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
}

/** Resolves after `ms`, or rejects with an `aborted` MediaError when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(new MediaError("aborted", "cancelled"));
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new MediaError("aborted", "cancelled"));
    }, { once: true });
  });
}

const TERMINAL = /(_complete|_failed)$|^job_cancelled$/;
const FINISHED = { succeeded: "job_complete", failed: "job_failed", cancelled: "job_cancelled" };
const EVENT_TYPES = [
  "upload_started", "upload_progress", "upload_complete", "upload_failed",
  "review_started", "review_progress", "review_complete", "review_failed",
  "delete_started", "delete_progress", "delete_complete", "delete_failed",
  "generation_started", "generation_progress", "generation_complete", "generation_failed",
  "ingest_scan_started", "ingest_scan_progress", "ingest_scan_complete", "ingest_scan_failed",
  "ingest_progress",
  "job_started", "job_progress", "job_complete", "job_failed", "job_cancelled",
  "collection_updated", "resync", "stream_expired",
];

/**
 * @param {{baseURL?: string, getToken: () => Promise<string>|string, maxInFlight?: number,
 *   completeWaitMs?: number}} options `maxInFlight`: how many of this client's uploads may
 *   be processing at once (default: the site policy's `maxBatchSize`, read from `rules()`
 *   when a batch starts); `completeWaitMs`: how long an upload's `complete` is retried
 *   while the server turns it away for now (default 300 000).
 */
export function createMediaClient({ baseURL = "", getToken, maxInFlight, completeWaitMs = WAIT_TOTAL_MS }) {
  const base = baseURL.replace(/\/$/, "");

  /**
   * One request to the API: resolves with the parsed body and the response (for its
   * headers); a 304 resolves with `data` null. Rejects with a MediaError: the server's
   * `{"error": {code, message}}`, else `http_<status>`; `network_error`; `aborted`.
   * @param {string} path @param {RequestInit & {json?: any, anonymous?: boolean}} [init]
   *   `anonymous`: send no token (public reads)
   * @returns {Promise<{data: any, response: Response}>}
   */
  async function request(path, init = {}) {
    const { json, anonymous, ...rest } = init;
    const headers = new Headers(rest.headers || {});
    if (!anonymous) headers.set("Authorization", `Bearer ${await getToken()}`);
    let body = rest.body;
    if (json !== undefined) {
      headers.set("Content-Type", "application/json");
      body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(base + path, { ...rest, headers, body });
    } catch (error) {
      if (error && error.name === "AbortError") throw new MediaError("aborted", "cancelled");
      throw new MediaError("network_error", `the request failed: ${error && error.message}`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null; // e.g. a proxy's HTML error page
    }
    if (!response.ok && response.status !== 304) {
      const error = (data && data.error) || { code: "http_" + response.status, message: text };
      const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
      throw new MediaError(error.code, error.message, response.status, { retryAfter });
    }
    return { data, response };
  }

  /** The body of one request to the API (see `request`). @param {string} path
   *  @param {RequestInit & {json?: any}} [init] */
  async function api(path, init = {}) {
    return (await request(path, init)).data;
  }

  // -- events: ONE EventSource per client for all of the user's jobs -----------------------

  /** @type {Set<(e: MediaEvent) => void>} */
  const listeners = new Set();
  /** @type {Map<string, MediaEvent[]>} events seen per job, for late followers */
  const seen = new Map();
  let source = null;
  let lastEventId = null;
  let renewTimer = null;
  let opening = null;

  function dispatch(type, message) {
    const data = message.data ? JSON.parse(message.data) : null;
    const event = { type, id: message.lastEventId || null, data };
    if (message.lastEventId) lastEventId = message.lastEventId;
    if (data && data.jobId) {
      const list = seen.get(data.jobId) || [];
      list.push(event);
      seen.set(data.jobId, list);
    }
    for (const listener of listeners) listener(event);
    if (type === "stream_expired") reopen();
  }

  async function open() {
    const { ticket, expiresAt } = await api("/events/ticket", { method: "POST" });
    const params = new URLSearchParams({ ticket });
    if (lastEventId) params.set("lastEventId", lastEventId);
    const next = new EventSource(`${base}/events?${params}`);
    for (const type of EVENT_TYPES) next.addEventListener(type, (m) => dispatch(type, m));
    next.onerror = () => {
      // EventSource reconnects by itself with Last-Event-ID; a closed one needs a new ticket.
      if (next.readyState === EventSource.CLOSED) reopen();
    };
    const old = source;
    source = next;
    if (old) old.close();
    // Renew a minute before the ticket runs out, resuming from the last id seen.
    clearTimeout(renewTimer);
    const ms = new Date(expiresAt).getTime() - Date.now() - 60_000;
    renewTimer = setTimeout(reopen, Math.max(ms, 5_000));
  }

  function reopen() {
    if (!opening) opening = open().catch(() => setTimeout(reopen, 3_000)).finally(() => (opening = null));
    return opening;
  }

  function ensureStream() {
    if (!source && !opening) return reopen();
    return opening || Promise.resolve();
  }

  /**
   * Follow every event of the user's jobs. Returns a function that stops listening.
   * A `resync` event means history was lost: refetch state (e.g. `list()`).
   * @param {{onEvent: (e: MediaEvent) => void}} handlers
   */
  function events({ onEvent }) {
    listeners.add(onEvent);
    ensureStream();
    return () => listeners.delete(onEvent);
  }

  /** Resolves with the terminal event of a job (using what the stream already saw). After
   *  a `resync` (history lost: its terminal event may be among it) the job is read over
   *  REST, and a finished job resolves with a `job_complete`, `job_failed` or
   *  `job_cancelled` event made from its record. */
  function waitForJob(jobId, onEvent) {
    return new Promise((resolve) => {
      let done = false;
      const finish = (event) => {
        if (done) return;
        done = true;
        listeners.delete(handle);
        resolve(event);
      };
      const handle = (event) => {
        if (event.type === "resync") {
          api(`/jobs/${encodeURIComponent(jobId)}`).then((job) => {
            const type = FINISHED[job.state];
            if (type) finish({ type, id: null, data: { jobId, result: job.result, error: job.error } });
          }).catch(() => {}); // still unknown: the live stream goes on
          return;
        }
        if (!event.data || event.data.jobId !== jobId || done) return;
        if (onEvent) onEvent(event);
        if (TERMINAL.test(event.type)) finish(event);
      };
      for (const event of seen.get(jobId) || []) handle(event);
      if (!done) listeners.add(handle);
      ensureStream();
    });
  }

  // -- uploads -----------------------------------------------------------------------------

  /** PUT or POST straight to storage with real byte progress. */
  function send(upload, file, onBytes, signal) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(upload.method, upload.uploadURL);
      let body = file;
      if (upload.method === "POST") {
        body = new FormData();
        for (const [k, v] of Object.entries(upload.fields || {})) body.append(k, v);
        body.append("file", file);
      } else {
        for (const [k, v] of Object.entries(upload.headers || {})) xhr.setRequestHeader(k, v);
      }
      xhr.upload.onprogress = (e) => e.lengthComputable && onBytes(e.loaded, e.total);
      xhr.onload = () =>
        xhr.status < 300 ? resolve() : reject(new MediaError("upload_rejected", xhr.responseText, xhr.status));
      xhr.onerror = () => reject(new MediaError("network_error", "the upload failed"));
      if (signal) signal.addEventListener("abort", () => { xhr.abort(); reject(new MediaError("aborted", "cancelled")); });
      xhr.send(body);
    });
  }

  // -- how many uploads are processing at once ----------------------------------------------
  // The server refuses a complete beyond the policy's maxBatchSize items processing per user
  // (429 too_many_uploads). Rather than be refused, this client holds each upload's complete
  // until one of its own earlier uploads has finished processing.

  let limit = maxInFlight ?? Infinity;
  let active = 0;
  /** @type {{grant: () => void}[]} */
  const waiting = [];
  let limitRead = null;

  /** Read maxBatchSize afresh (it is an admin setting; the rules are cacheable for 30 s). */
  function readLimit() {
    if (maxInFlight != null) return Promise.resolve();
    if (!limitRead) {
      limitRead = loadRules({ cache: "no-cache" })
        .then((r) => { if (Number.isInteger(r.maxBatchSize) && r.maxBatchSize >= 1) limit = r.maxBatchSize; })
        .catch(() => {}) // no rules: the server's 429s still pace the uploads
        .finally(() => { limitRead = null; grant(); });
    }
    return limitRead;
  }

  function grant() {
    while (active < limit && waiting.length) {
      active += 1;
      waiting.shift().grant();
    }
  }

  /** A processing slot; resolves with its release function. */
  async function acquire(signal, onQueued) {
    if (active === 0 && waiting.length === 0) readLimit(); // a new batch: the limit may have changed
    if (limitRead) await limitRead;
    if (active < limit && waiting.length === 0) {
      active += 1;
    } else {
      onQueued();
      await new Promise((resolve, reject) => {
        const entry = { grant: resolve };
        waiting.push(entry);
        if (signal) signal.addEventListener("abort", () => {
          const at = waiting.indexOf(entry);
          if (at >= 0) waiting.splice(at, 1);
          if (at >= 0) reject(new MediaError("aborted", "cancelled"));
        }, { once: true });
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      active -= 1;
      grant();
    };
  }

  /** POST /media/upload/complete, sent again while the server turns it away for now. */
  async function completeWithWait(pending, onProgress, signal) {
    const started = Date.now();
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await api("/media/upload/complete", { method: "POST", json: pending, signal });
      } catch (error) {
        if (!temporary(error)) throw error;
        if (error.status === 429) readLimit(); // the limit may have been lowered
        const d = Math.min(WAIT_CAP_MS, WAIT_BASE_MS * 2 ** attempt);
        const wait = error.retryAfter != null ? error.retryAfter * 1000 : d / 2 + Math.random() * (d / 2);
        // A wait that would run past the budget gives up now (the caller can try later).
        if (Date.now() - started + wait > completeWaitMs) throw error;
        onProgress({ phase: "queued", fraction: 0.5, code: error.code, retryIn: Math.round(wait) });
        await sleep(wait, signal);
      }
    }
  }

  /**
   * Finish an upload whose bytes are stored (`MediaError.pendingUpload`, or what `upload()`
   * does after sending them): waits for a processing slot (`maxInFlight`), sends `complete`
   * (again while the server answers 429/502/503/504 or the connection fails: Retry-After or
   * backoff, for at most `completeWaitMs`), then follows the job. Resolves with the item;
   * rejects with a MediaError, whose `pendingUpload` is set when finishing it later may work.
   * @param {PendingUpload} pending
   * @param {{onProgress?: (p: UploadProgress) => void, signal?: AbortSignal}} [options]
   * @returns {Promise<MediaItem>}
   */
  async function completeUpload(pending, { onProgress = () => {}, signal } = {}) {
    await ensureStream(); // open before the job exists: no event can be missed
    let release;
    try {
      release = await acquire(signal, () => onProgress({ phase: "queued", fraction: 0.5, code: "too_many_uploads" }));
    } catch (error) {
      error.pendingUpload = pending;
      throw error;
    }
    try {
      let accepted;
      try {
        accepted = await completeWithWait(pending, onProgress, signal);
      } catch (error) {
        if (temporary(error) || error.code === "aborted") error.pendingUpload = pending;
        throw error;
      }
      const { jobId, mediaId } = accepted;
      onProgress({ phase: "processing", fraction: 0.5, jobId, mediaId });
      const last = await waitForJob(jobId, (event) => {
        if (event.type.endsWith("_progress") && typeof event.data.progress === "number") {
          onProgress({ phase: "processing", fraction: 0.5 + event.data.progress * 0.5, message: event.data.message, jobId, mediaId });
        }
      });
      if (!last.type.endsWith("_complete")) {
        const error = (last.data && last.data.error) || { code: "cancelled", message: "cancelled" };
        throw new MediaError(error.code, error.message, undefined, { mediaId });
      }
      onProgress({ phase: "done", fraction: 1, jobId, mediaId });
      return get(mediaId);
    } finally {
      release();
    }
  }

  /**
   * Upload a file and follow its processing. Resolves with the item (ready, or in_review
   * when the policy reviews photos); rejects with a MediaError whose code says why
   * (too_small, corrupt_image, file_too_large, ...). Once the bytes are stored it finishes
   * like `completeUpload()`: it queues for a slot under `maxInFlight`, and waits out a
   * server that turns the complete away for now.
   * @param {File|Blob & {name?: string}} file
   * @param {{onProgress?: (p: UploadProgress) => void, purpose?: string, replaces?: string,
   *   altText?: string, signal?: AbortSignal}} [options]
   * @returns {Promise<MediaItem>}
   */
  async function upload(file, { onProgress = () => {}, purpose, replaces, altText, signal } = {}) {
    await ensureStream(); // open before the job exists: no event can be missed
    const init = await api("/media/upload/init", {
      method: "POST",
      json: { filename: file.name || "upload", contentType: file.type || "", size: file.size },
      signal,
    });
    await send(init, file, (loaded, total) =>
      onProgress({ phase: "uploading", fraction: (loaded / total) * 0.5, loaded, total }), signal);
    /** @type {PendingUpload} */
    const pending = { objectPath: init.objectPath };
    if (purpose) pending.purpose = purpose;
    if (replaces) pending.replaces = replaces;
    if (altText) pending.altText = altText;
    return completeUpload(pending, { onProgress, signal });
  }

  // -- the library -------------------------------------------------------------------------

  /** @param {{status?: string, purpose?: string, prefix?: string, cursor?: string, limit?: number}} [query]
   *  @returns {Promise<{items: MediaItem[], nextCursor: string|null}>} */
  function list(query = {}) {
    const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v != null).map(([k, v]) => [k, String(v)]));
    return api(`/media${params.toString() ? "?" + params : ""}`);
  }

  const queryString = (query) => {
    const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v != null).map(([k, v]) => [k, String(v)]));
    return params.toString() ? "?" + params : "";
  };

  /**
   * Search the library by words (`GET /media/search`): semantic when the server has a model
   * and pgvector, else full-text; `mode` in the answer says which, `reason` why not semantic.
   * @param {string} q
   * @param {{mode?: "auto"|"semantic"|"text", cursor?: string, limit?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<{items: (MediaItem & {score: number})[], nextCursor: string|null, mode: string, model?: string, reason?: string}>}
   */
  function search(q, { signal, ...query } = {}) {
    return api(`/media/search${queryString({ q, ...query })}`, { signal });
  }

  /**
   * Items that look like this one (`GET /media/{id}/similar`, by its embedding). Rejects with
   * a MediaError `semantic_search_off` or `not_embedded` (409) when it cannot answer.
   * @param {string} id @param {{cursor?: string, limit?: number, signal?: AbortSignal}} [options]
   */
  function similar(id, { signal, ...query } = {}) {
    return api(`/media/${encodeURIComponent(id)}/similar${queryString(query)}`, { signal });
  }

  /**
   * Near-duplicates of an item (`GET /media/{id}/duplicates`): resized or re-encoded copies
   * (perceptual hash) and byte-identical ones, each with `bits` and `identical`.
   * @param {string} id @param {{cursor?: string, limit?: number, signal?: AbortSignal}} [options]
   */
  function duplicates(id, { signal, ...query } = {}) {
    return api(`/media/${encodeURIComponent(id)}/duplicates${queryString(query)}`, { signal });
  }

  /**
   * Add and remove the owner's own tags (`PATCH /media/{id}` `{tags: {add, remove}}`).
   * @param {string} id @param {{add?: string[], remove?: string[]}} tags
   * @returns {Promise<MediaItem>}
   */
  function tag(id, { add = [], remove = [] } = {}) {
    return api(`/media/${encodeURIComponent(id)}`, { method: "PATCH", json: { tags: { add, remove } } });
  }

  /** @param {string} id @returns {Promise<MediaItem>} */
  function get(id) {
    return api(`/media/${encodeURIComponent(id)}`);
  }

  /** Hide now (undo with restore() inside the undo window). @param {string} pathOrId */
  function remove(pathOrId) {
    return api(`/media/${pathOrId.split("/").map(encodeURIComponent).join("/")}`, { method: "DELETE" });
  }

  /** @param {string} path @returns {Promise<MediaItem>} */
  function restore(path) {
    return api("/media/restore", { method: "POST", json: { path } });
  }

  /**
   * Run a failed job again (`POST /jobs/{id}/retry`; only when its error is retryable, e.g.
   * an item's `failedJob`). Resolves with the new job's id once it is queued; follow it with
   * `follow(jobId)`. Rejects with a MediaError (`not_retryable`, `job_not_found`).
   * @param {string} jobId @returns {Promise<{jobId: string, retryOf: string}>}
   */
  async function retry(jobId) {
    await ensureStream(); // open before the new job exists: no event can be missed
    return api(`/jobs/${encodeURIComponent(jobId)}/retry`, { method: "POST" });
  }

  /**
   * Follow one job to its end. Resolves with its terminal event (`*_complete`, `*_failed` or
   * `job_cancelled`); `onEvent` sees each of its events on the way.
   * @param {string} jobId @param {(e: MediaEvent) => void} [onEvent]
   * @returns {Promise<MediaEvent>}
   */
  function follow(jobId, onEvent) {
    return waitForJob(jobId, onEvent);
  }

  async function loadRules(init = {}) {
    const response = await fetch(`${base}/v1/meta/media-rules`, init);
    if (!response.ok) throw new MediaError("http_" + response.status, "the rules could not be read", response.status);
    return response.json();
  }

  /** @returns {Promise<MediaRules>} */
  function rules() {
    return loadRules();
  }

  // -- collections -------------------------------------------------------------------------

  /** `/entities/{type}/{id}` with both parts encoded. */
  function entityPath(type, id) {
    return `${encodeURIComponent(type)}/${encodeURIComponent(id)}`;
  }

  const collections = {
    /**
     * The owner's view of an entity's collection (`GET /entities/{type}/{id}/media`).
     * Resolves with it and its ETag (`"c<version>"`, for `sync`'s `ifMatch`); rejects with a
     * MediaError `entity_not_found` (404) when nothing was ever attached to the entity, or it
     * is another user's, `invalid_entity` (400) for a malformed type or id.
     * @param {string} type @param {string} id @param {{signal?: AbortSignal}} [options]
     * @returns {Promise<{collection: Collection, etag: string|null}>}
     */
    async get(type, id, { signal } = {}) {
      const { data, response } = await request(`/entities/${entityPath(type, id)}/media`, { signal });
      return { collection: data, etag: response.headers.get("ETag") };
    },

    /**
     * Replace the collection with `items`, in order (`PUT /entities/{type}/{id}/media`).
     * With `ifMatch` (the ETag `get` or a previous `sync` gave) it applies only if nobody
     * changed the collection since: else it rejects with a MediaError `stale_collection`
     * (412). Other refusals: `second_profile`, `duplicate_media`, `invalid_field` (422),
     * `media_not_found`, `entity_not_found` (404). Sending the same list twice keeps the
     * version. Resolves with the owner's view and its new ETag.
     * @param {string} type @param {string} id @param {CollectionEntry[]} items
     * @param {{ifMatch?: string|null, signal?: AbortSignal}} [options]
     * @returns {Promise<{collection: Collection, etag: string|null}>}
     */
    async sync(type, id, items, { ifMatch, signal } = {}) {
      const headers = ifMatch ? { "If-Match": ifMatch } : {};
      const json = { items: items.map(({ mediaId, purpose }) => ({ mediaId, purpose })) };
      try {
        const { data, response } = await request(`/entities/${entityPath(type, id)}/media`, { method: "PUT", headers, json, signal });
        return { collection: data, etag: response.headers.get("ETag") };
      } catch (error) {
        // A 412 is always a stale collection, whatever body a proxy on the way sent.
        if (error instanceof MediaError && error.status === 412 && error.code !== "stale_collection") {
          throw new MediaError("stale_collection", error.message || "the collection changed", 412);
        }
        throw error;
      }
    },

    /**
     * The public read, without a token (`GET /public/entities/{type}/{id}`): the items that
     * are ready and passed review, the profile image and the cover. With `ifNoneMatch` (an
     * ETag it gave before) an unchanged collection resolves with `{notModified: true, etag}`.
     * `cache` is the fetch cache mode (the answer is cacheable for `max-age`; "no-cache"
     * asks the server every time). Rejects with a MediaError `entity_not_found` (404).
     * @param {string} type @param {string} id
     * @param {{ifNoneMatch?: string|null, signal?: AbortSignal, cache?: RequestCache}} [options]
     * @returns {Promise<{collection: PublicCollection, etag: string|null, notModified?: false}
     *   | {notModified: true, etag: string|null}>}
     */
    async public(type, id, { ifNoneMatch, signal, cache } = {}) {
      const headers = ifNoneMatch ? { "If-None-Match": ifNoneMatch } : {};
      const { data, response } = await request(`/public/entities/${entityPath(type, id)}`, { headers, signal, cache, anonymous: true });
      const etag = response.headers.get("ETag");
      if (response.status === 304) return { notModified: true, etag: etag || ifNoneMatch || null };
      return { collection: data, etag, notModified: false };
    },
  };

  function close() {
    clearTimeout(renewTimer);
    if (source) source.close();
    source = null;
    listeners.clear();
  }

  return {
    upload, completeUpload, events, list, get, search, similar, duplicates, tag, remove, restore,
    retry, follow, rules, collections, close,
  };
}
