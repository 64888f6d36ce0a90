// mediajobs browser client: one ES module, no build step. Served at /static/mediajobs-client.js.
//
//   import { createMediaClient } from "/static/mediajobs-client.js";
//   const media = createMediaClient({ baseURL: "", getToken: async () => token });
//   const item = await media.upload(file, { onProgress: (p) => bar.value = p.fraction });
//
// Progress is real: bytes sent (XMLHttpRequest upload events), then the job's own
// upload_progress events over one shared EventSource. Nothing is simulated.

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
 *   acceptedExtensions: string[], variants: {name: string, size: number}[]}} MediaRules
 * @typedef {{phase: "uploading"|"processing"|"done", fraction: number, loaded?: number,
 *   total?: number, message?: string}} UploadProgress
 * @typedef {{type: string, id: string|null, data: any}} MediaEvent
 */

/** An API or job error with a machine-readable code. */
export class MediaError extends Error {
  /** @param {string} code @param {string} message @param {number} [status] */
  constructor(code, message, status) {
    super(message);
    this.name = "MediaError";
    this.code = code;
    this.status = status;
  }
}

const TERMINAL = /(_complete|_failed)$|^job_cancelled$/;
const EVENT_TYPES = [
  "upload_started", "upload_progress", "upload_complete", "upload_failed",
  "review_started", "review_progress", "review_complete", "review_failed",
  "delete_started", "delete_progress", "delete_complete", "delete_failed",
  "generation_started", "generation_progress", "generation_complete", "generation_failed",
  "ingest_started", "ingest_progress", "ingest_complete", "ingest_failed",
  "job_started", "job_progress", "job_complete", "job_failed", "job_cancelled",
  "resync", "stream_expired",
];

/**
 * @param {{baseURL?: string, getToken: () => Promise<string>|string}} options
 */
export function createMediaClient({ baseURL = "", getToken }) {
  const base = baseURL.replace(/\/$/, "");

  /** @param {string} path @param {RequestInit & {json?: any}} [init] */
  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    headers.set("Authorization", `Bearer ${await getToken()}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set("Content-Type", "application/json");
      body = JSON.stringify(init.json);
    }
    const response = await fetch(base + path, { ...init, headers, body });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const error = (data && data.error) || { code: "http_" + response.status, message: text };
      throw new MediaError(error.code, error.message, response.status);
    }
    return data;
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

  /** Resolves with the terminal event of a job (using what the stream already saw). */
  function waitForJob(jobId, onEvent) {
    return new Promise((resolve) => {
      const handle = (event) => {
        if (!event.data || event.data.jobId !== jobId) return;
        if (onEvent) onEvent(event);
        if (TERMINAL.test(event.type)) {
          listeners.delete(handle);
          resolve(event);
        }
      };
      for (const event of seen.get(jobId) || []) handle(event);
      listeners.add(handle);
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

  /**
   * Upload a file and follow its processing. Resolves with the ready item; rejects with a
   * MediaError whose code says why (too_small, corrupt_image, file_too_large, ...).
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
    const body = { objectPath: init.objectPath };
    if (purpose) body.purpose = purpose;
    if (replaces) body.replaces = replaces;
    if (altText) body.altText = altText;
    const { jobId, mediaId } = await api("/media/upload/complete", { method: "POST", json: body, signal });
    onProgress({ phase: "processing", fraction: 0.5 });
    const last = await waitForJob(jobId, (event) => {
      if (event.type.endsWith("_progress") && typeof event.data.progress === "number") {
        onProgress({ phase: "processing", fraction: 0.5 + event.data.progress * 0.5, message: event.data.message });
      }
    });
    if (!last.type.endsWith("_complete")) {
      const error = (last.data && last.data.error) || { code: "cancelled", message: "cancelled" };
      throw new MediaError(error.code, error.message);
    }
    onProgress({ phase: "done", fraction: 1 });
    return get(mediaId);
  }

  // -- the library -------------------------------------------------------------------------

  /** @param {{status?: string, purpose?: string, prefix?: string, cursor?: string, limit?: number}} [query]
   *  @returns {Promise<{items: MediaItem[], nextCursor: string|null}>} */
  function list(query = {}) {
    const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v != null).map(([k, v]) => [k, String(v)]));
    return api(`/media${params.toString() ? "?" + params : ""}`);
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

  /** @returns {Promise<MediaRules>} */
  function rules() {
    return fetch(`${base}/v1/meta/media-rules`).then((r) => r.json());
  }

  function close() {
    clearTimeout(renewTimer);
    if (source) source.close();
    source = null;
    listeners.clear();
  }

  return { upload, events, list, get, remove, restore, retry, follow, rules, close };
}
