// The media library page: uploads with real progress, a responsive grid, a detail view,
// delete with undo, and the items that are not in the gallery with why (in words and the
// error code) and a Retry where it can help, and the Collections panel (collections.js).
// Talks to the API only through mediajobs-client.js.
import { createMediaClient, MediaError } from "/static/mediajobs-client.js";
import { createCollectionsPanel } from "/static/collections.js";

// A sentence for each error code a user can meet; the code is shown next to it.
const MESSAGES = {
  too_small: "This photo is too small.",
  model_dimension_changed: "The search model changed; an operator needs to reindex.",
  file_too_large: "This file is too large.",
  unsupported_type: "This file type is not supported.",
  corrupt_image: "This file is damaged and cannot be read.",
  aspect_ratio_out_of_range: "This photo is too narrow or too wide.",
  too_many_pixels: "This photo has too many pixels.",
  empty_file: "This file is empty.",
  too_many_uploads: "Too many uploads at once; try again in a moment.",
  imaging_crashed: "Reading this image crashed the image processor.",
  imaging_out_of_memory: "This image needs more memory than processing may use.",
  imaging_timeout: "Processing this image took too long.",
  source_missing: "The uploaded file is no longer in storage.",
  logo_missing: "The watermark logo of the ingest profile cannot be read.",
  run_not_found: "This ingest run no longer exists.",
  media_deleted: "The photo was deleted while it was being processed.",
  media_not_found: "This photo no longer exists.",
  media_not_processable: "This photo was not in a state that can be processed.",
  invalid_payload: "The job for this photo was malformed.",
  cancelled: "Processing was cancelled.",
  job_cancelled: "Processing was cancelled.",
  lease_expired: "The worker processing this photo stopped.",
  internal_error: "Something went wrong on our side.",
  storage_unavailable: "Storage could not be reached.",
  storage_denied: "Storage refused the request.",
  upload_rejected: "Storage refused the upload.",
  network_error: "The connection failed.",
  review_provider_disabled: "The review could not run: no review service is set up.",
  review_webhook_not_configured: "The review could not run: the review service has no address.",
  review_webhook_refused: "The review service refused the request.",
  review_timeout: "The review service did not answer in time.",
  review_unavailable: "The review service could not be reached.",
  review_invalid_response: "The review service's answer could not be read.",
  not_retryable: "This can no longer be retried.",
  semantic_search_off: "Search by meaning is off on this server (no model, or no pgvector).",
  not_embedded: "This photo has not been analysed yet; try again in a moment.",
  invalid_query: "Type a few words to search for.",
};
const TYPE_NAMES = {
  "image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP", "image/heic": "HEIC",
  "image/heif": "HEIC", "image/avif": "AVIF", "image/gif": "GIF", "image/tiff": "TIFF",
};
const BADGES = { in_review: "In review", failed: "Failed", rejected: "Rejected" };
const $ = (id) => document.getElementById(id);

async function signIn() {
  let token = localStorage.getItem("mediajobs.token");
  if (!token || tokenExpired(token)) {
    const response = await fetch("/dev/token", { method: "POST" });
    if (!response.ok) throw new Error("sign-in is only automatic in development");
    const body = await response.json();
    token = body.token;
    localStorage.setItem("mediajobs.token", token);
  }
  return token;
}

function tokenExpired(token) {
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return claims.exp * 1000 < Date.now() + 60_000;
  } catch {
    return true;
  }
}

function userOf(token) {
  return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub;
}

const token = await signIn();
$("who").textContent = `Signed in as ${userOf(token)}`;
const media = createMediaClient({ baseURL: "", getToken: () => signIn() });
const rules = await media.rules();
$("rules").textContent =
  `${formatNames(rules.acceptedTypes).join(", ")} · ` +
  `up to ${(rules.maxSourceBytes / 1048576).toFixed(0)} MB · at least ${rules.minWidth}×${rules.minHeight}`;
const collections = createCollectionsPanel({ media, rules });

/** "image/heic", "image/heif" -> "HEIC": the names people know, once each. */
function formatNames(types) {
  return [...new Set(types.map((t) => TYPE_NAMES[t] || t.replace(/^image\//, "").toUpperCase()))];
}

/** A sentence for an error code; unknown codes get a general one (the code is shown too). */
function sentence(code) {
  return MESSAGES[code] || "This photo could not be processed.";
}

// -- uploads --------------------------------------------------------------------------------

function checkLocally(file) {
  const ext = (file.name.match(/\.[^.]+$/) || [""])[0].toLowerCase();
  if (ext && !rules.acceptedExtensions.includes(ext)) return "unsupported_type";
  if (file.type && !file.type.startsWith("image/")) return "unsupported_type";
  if (file.size === 0) return "empty_file";
  if (file.size > rules.maxSourceBytes) return "file_too_large";
  return null;
}

/** One row per chosen file; `rows` finds a row by its item once the server named it. */
const rows = new Map();

function uploadRow(file) {
  const row = document.createElement("li");
  row.className = "upload";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = file.name;
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = "Waiting";
  const again = document.createElement("button");
  again.type = "button";
  again.className = "retry";
  again.textContent = "Retry";
  again.hidden = true;
  again.setAttribute("aria-label", `Retry ${file.name}`);
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Progress of ${file.name}`);
  row.append(name, state, again, bar);
  $("uploads").append(row);
  return { row, state, bar, again, file };
}

async function uploadOne(file) {
  const entry = uploadRow(file);
  const local = checkLocally(file);
  if (local) return fail(entry, local);
  await run(entry, (options) => media.upload(file, options));
}

/** Run an upload (or the rest of one) for a row, showing its progress and its outcome. */
async function run(entry, start) {
  const { row, state, bar, again } = entry;
  row.classList.remove("failed", "queued");
  delete row.dataset.error;
  again.hidden = true;
  bar.hidden = false;
  try {
    const item = await start({
      onProgress: (p) => {
        bar.value = Math.round(p.fraction * 100);
        bar.dataset.value = String(bar.value);
        if (p.mediaId) follows(entry, p.mediaId);
        row.classList.toggle("queued", p.phase === "queued");
        state.textContent =
          p.phase === "uploading" ? `Uploading ${Math.round((p.loaded / p.total) * 100)}%`
          : p.phase === "queued" ? QUEUED[p.code] || QUEUED.server
          : p.phase === "processing" ? "Processing" : "Done";
      },
    });
    follows(entry, item.id);
    show(entry, item);
  } catch (error) {
    const failure = error instanceof MediaError ? error : new MediaError("network_error", String(error));
    if (failure.mediaId) follows(entry, failure.mediaId);
    fail(entry, failure.code, failure.message);
    // Worth trying again: a complete the server kept turning away (only the complete is sent
    // again: the bytes are stored), or an upload cut off on the way (it starts over).
    if (failure.pendingUpload) {
      offer(entry, () => run(entry, (options) => media.completeUpload(failure.pendingUpload, options)));
    } else if (!failure.mediaId && (failure.code === "network_error" || failure.status === 429 || failure.status >= 500)) {
      offer(entry, () => run(entry, (options) => media.upload(entry.file, options)));
    }
  }
  await refresh();
}

const QUEUED = {
  too_many_uploads: "Queued: waiting for earlier uploads to finish",
  server: "Queued: waiting for the server",
};

function offer(entry, action) {
  entry.again.hidden = false;
  entry.again.onclick = () => action();
}

function follows(entry, mediaId) {
  entry.row.dataset.mediaId = mediaId;
  rows.set(mediaId, entry);
}

/** A row says where its item is now: the item's review (or a retry) may end after the upload. */
function show(entry, item) {
  const { row, state, bar } = entry;
  row.classList.remove("failed", "queued", "done", "retrying");
  delete row.dataset.error;
  if (item.status === "ready") {
    row.classList.add("done");
    state.textContent = "Ready";
  } else if (item.status === "in_review" && !(item.review && item.review.status === "error")) {
    row.classList.add("done");
    state.textContent = "Waiting for review";
  } else if (item.status === "rejected") {
    fail(entry, "rejected", item.review && item.review.reason
      ? `Not accepted by review: ${item.review.reason}` : "Not accepted by review.");
  } else if (item.status === "in_review" || item.status === "failed") {
    const code = (item.failedJob && item.failedJob.error.code) || (item.error && item.error.code)
      || (item.review && item.review.code) || "failed";
    fail(entry, code);
  } else {
    return; // pending or processing: the upload itself is still showing its progress
  }
  bar.hidden = row.classList.contains("failed");
}

function fail(entry, code, message) {
  const { row, state, bar } = entry;
  row.classList.remove("done", "queued");
  row.classList.add("failed");
  row.dataset.error = code;
  state.textContent = code === "rejected" ? message : MESSAGES[code] || message || `Failed (${code})`;
  bar.hidden = true;
}

function take(files) {
  for (const file of files) uploadOne(file);
}

$("picker").addEventListener("change", (e) => { take(e.target.files); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("picker").click(); } });

// -- the grid -------------------------------------------------------------------------------

function srcset(item) {
  const seen = new Set();
  return Object.values(item.variants)
    .filter((v) => !seen.has(v.width) && seen.add(v.width))
    .sort((a, b) => a.width - b.width)
    .map((v) => `${v.url} ${v.width}w`)
    .join(", ");
}

function card(item) {
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.id = item.id;
  li.dataset.status = item.status;
  const label = item.altText || item.filename || "photo";
  const variant = item.variants.card || Object.values(item.variants)[0];
  const why = reason(item);
  if (variant) {
    li.append(thumbnail(item, variant, label));
  } else {
    // Nothing to show but the reason: it fills the tile.
    const box = document.createElement("div");
    box.className = "thumb";
    if (why) box.append(why);
    li.append(box);
  }
  if (BADGES[item.status]) {
    const badge = document.createElement("span");
    badge.className = `badge ${item.status}`;
    badge.textContent = BADGES[item.status];
    li.append(badge);
  }
  if (variant && why) li.append(why);
  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = item.filename || "";
  name.title = item.filename || "";
  const actions = document.createElement("span");
  actions.className = "actions";
  // The server attaches any live item of the owner's; the gallery's are the ones worth adding.
  if (item.status === "ready") actions.append(collections.addButton(item, label));
  if (item.status === "ready") {
    const like = document.createElement("button");
    like.className = "similar";
    like.type = "button";
    like.textContent = "Similar";
    like.setAttribute("aria-label", `Photos similar to ${label}`);
    like.addEventListener("click", () => {
      $("search-q").value = ""; // the grid no longer shows that query's results
      showView({ kind: "similar", item, label });
    });
    actions.append(like);
  }
  if (item.failedJob && item.failedJob.error.retryable) {
    const again = document.createElement("button");
    again.className = "retry";
    again.type = "button";
    again.textContent = "Retry";
    again.setAttribute("aria-label", `Retry ${label}`);
    again.addEventListener("click", () => retry(item, li, again));
    actions.append(again);
  }
  const del = document.createElement("button");
  del.className = "delete";
  del.type = "button";
  del.textContent = "Delete";
  del.setAttribute("aria-label", `Delete ${label}`);
  del.addEventListener("click", () => remove(item));
  actions.append(del);
  meta.append(name, actions);
  li.append(meta);
  return li;
}

function thumbnail(item, variant, label) {
  const open = document.createElement("button");
  open.className = "open";
  open.type = "button";
  open.setAttribute("aria-label", `Open ${label}`);
  if (item.blurDataURL) open.style.backgroundImage = `url("${item.blurDataURL}")`;
  const img = document.createElement("img");
  // The placeholder goes once the image is there: it would show through transparent pixels.
  const loaded = () => {
    open.style.backgroundImage = "";
    open.classList.add("loaded");
  };
  img.addEventListener("load", loaded, { once: true });
  img.src = variant.url;
  img.srcset = srcset(item);
  img.sizes = "(max-width: 480px) 50vw, 220px";
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = label;
  img.width = variant.width;
  img.height = variant.height;
  if (img.complete && img.naturalWidth > 0) loaded();
  open.append(img);
  open.addEventListener("click", () => showDetail(item));
  return open;
}

/** Why an item is not in the gallery, in words and with its code; null when it just waits. */
function reason(item) {
  let code = null;
  let text = null;
  if (item.status === "failed") {
    code = (item.error && item.error.code) || (item.failedJob && item.failedJob.error.code) || "failed";
    text = sentence(code);
  } else if (item.status === "in_review" && item.review && item.review.status === "error") {
    code = (item.failedJob && item.failedJob.error.code) || item.review.code || "review_failed";
    text = sentence(code);
  } else if (item.status === "in_review") {
    text = "Waiting for review.";
  } else if (item.status === "rejected") {
    const why = item.review && item.review.reason;
    text = why ? `Not accepted by review: ${why}` : "Not accepted by review.";
  } else {
    return null;
  }
  const p = document.createElement("p");
  p.className = "reason";
  const words = document.createElement("span");
  words.className = "reason-text";
  words.textContent = text;
  p.append(words);
  if (code) {
    // Long codes may wrap after an underscore on a narrow tile, never inside a word.
    const tag = document.createElement("code");
    code.split("_").forEach((part, i) => {
      if (i > 0) tag.append("_", document.createElement("wbr"));
      tag.append(part);
    });
    p.append(" ", tag);
  }
  return p;
}

async function retry(item, li, button) {
  button.disabled = true;
  button.textContent = "Retrying…";
  li.classList.add("retrying");
  const words = li.querySelector(".reason-text");
  if (words) words.textContent = "Trying again…";
  const entry = rows.get(item.id);
  if (entry) {
    entry.row.classList.remove("failed");
    entry.row.classList.add("retrying");
    entry.state.textContent = "Trying again…";
  }
  try {
    const { jobId } = await media.retry(item.failedJob.id);
    li.dataset.retryJob = jobId;
    await media.follow(jobId); // a new failure shows on the refreshed tile
  } catch (error) {
    const code = error instanceof MediaError ? error.code : "network_error";
    toast(`Could not retry ${item.filename || "this photo"}: ${sentence(code)}`);
  }
  for (const list of Object.keys(shown)) delete shown[list]; // this tile said "Retrying…"
  await refresh();
}

function showDetail(item) {
  const large = item.variants.detail || item.variants.preview || Object.values(item.variants).pop();
  if (!large) return;
  const img = $("detail-img");
  img.src = large.url;
  img.alt = item.altText || item.filename || "photo";
  $("detail-tags").textContent = item.tags && item.tags.length ? `Tags: ${item.tags.join(", ")}` : "";
  $("detail").showModal();
}

// -- search and similar ---------------------------------------------------------------------

/** What the grid shows: the gallery (null), a search, or the photos similar to one. */
let view = null;

async function viewItems() {
  if (view.kind === "search") {
    const found = await media.search(view.q, { limit: 60 });
    const how = found.mode === "semantic"
      ? `by meaning (model ${found.model})`
      : `by words in tags, captions and names${found.reason ? ` (search by meaning is off: ${found.reason})` : ""}`;
    return { items: found.items, status: `${found.items.length} ${found.items.length === 1 ? "photo" : "photos"} for “${view.q}”, ${how}.` };
  }
  const found = await media.similar(view.item.id, { limit: 60 });
  return { items: found.items, status: `${found.items.length} photos similar to ${view.label}, nearest first.` };
}

async function showView(next) {
  view = next;
  $("search-clear").hidden = view === null;
  $("library-title").textContent = view === null ? "Your photos" : view.kind === "search" ? "Search results" : "Similar photos";
  if (view === null) $("search-status").textContent = "";
  try {
    await refresh();
  } catch (error) {
    const code = error instanceof MediaError ? error.code : "network_error";
    const detail = code === "invalid_query" && error.message ? ` (${error.message})` : "";
    view = null;
    $("search-clear").hidden = true;
    $("library-title").textContent = "Your photos";
    $("search-status").textContent = "";
    toast(sentence(code) + detail);
    await refresh();
  }
}

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("search-q").value.trim();
  showView(q ? { kind: "search", q } : null);
});
$("search-clear").addEventListener("click", () => {
  $("search-q").value = "";
  showView(null);
});

async function refresh() {
  let results = null;
  if (view !== null) {
    results = await viewItems();
    $("search-status").textContent = results.status;
  }
  const [ready, review, failed, rejected] = await Promise.all([
    results ? Promise.resolve(results) : media.list({ limit: 200 }),
    media.list({ status: "in_review", limit: 50 }),
    media.list({ status: "failed", limit: 50 }),
    media.list({ status: "rejected", limit: 50 }),
  ]);
  // Rows of this tab's uploads follow their items (a review that failed, a retry that worked).
  for (const item of [...ready.items, ...review.items, ...failed.items, ...rejected.items]) {
    const entry = rows.get(item.id);
    if (entry && !entry.row.classList.contains("queued")) show(entry, item);
  }
  render("grid", ready.items);
  $("empty").hidden = ready.items.length > 0 || view !== null;
  const others = [...failed.items, ...review.items, ...rejected.items];
  render("pending", others);
  $("pending-title").hidden = others.length === 0;
}

/** Tiles are rebuilt only when their items changed: every job's end refetches, and a rebuild
 *  would reload every image and reset a tile being clicked. */
const shown = {};
function render(listId, items) {
  const key = JSON.stringify(items);
  if (shown[listId] === key) return;
  shown[listId] = key;
  $(listId).replaceChildren(...items.map(card));
  collections.markCards(); // the new tiles' Add buttons
}

// -- delete with undo -----------------------------------------------------------------------

let toastTimer = null;

/** A message in the toast, without Undo. */
function toast(text) {
  $("toast-text").textContent = text;
  $("toast-undo").hidden = true;
  $("toast").hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => ($("toast").hidden = true), 8000);
}

async function remove(item) {
  await media.remove(item.id);
  await refresh();
  $("toast-text").textContent = `Deleted ${item.filename || "photo"}.`;
  $("toast").hidden = false;
  const undo = $("toast-undo");
  undo.hidden = false;
  undo.onclick = async () => {
    $("toast").hidden = true;
    await media.restore(item.path);
    await refresh();
  };
  undo.focus();
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => ($("toast").hidden = true), rules.undoWindowSeconds * 1000);
}

// Jobs end outside this tab's own uploads too (reviews, retries, other tabs): refetch then.
let refreshTimer = null;
const ENDED = /(_complete|_failed)$|^job_cancelled$|^resync$/;
media.events({
  onEvent: (event) => {
    if (!ENDED.test(event.type)) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 200);
  },
});
await refresh();
document.body.dataset.ready = "true";
