// The media library page: uploads with real progress, a responsive grid, a detail view,
// delete with undo. Talks to the API only through mediajobs-client.js.
import { createMediaClient, MediaError } from "/static/mediajobs-client.js";

const MESSAGES = {
  too_small: "This photo is too small.",
  file_too_large: "This file is too large.",
  unsupported_type: "This file type is not supported.",
  type_mismatch: "The file's contents do not match its type or name.",
  corrupt_image: "This file is damaged and cannot be read.",
  aspect_ratio_out_of_range: "This photo is too narrow or too wide.",
  too_many_pixels: "This photo has too many pixels.",
  empty_file: "This file is empty.",
  too_many_uploads: "Too many uploads at once; try again in a moment.",
};
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
  `${rules.acceptedExtensions.join(", ")} · up to ${(rules.maxSourceBytes / 1048576).toFixed(0)} MB · ` +
  `at least ${rules.minWidth}×${rules.minHeight}`;

// -- uploads --------------------------------------------------------------------------------

function checkLocally(file) {
  const ext = (file.name.match(/\.[^.]+$/) || [""])[0].toLowerCase();
  if (ext && !rules.acceptedExtensions.includes(ext)) return "unsupported_type";
  if (file.type && !file.type.startsWith("image/")) return "unsupported_type";
  if (file.size === 0) return "empty_file";
  if (file.size > rules.maxSourceBytes) return "file_too_large";
  return null;
}

function uploadRow(file) {
  const row = document.createElement("li");
  row.className = "upload";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = file.name;
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = "Waiting";
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Progress of ${file.name}`);
  row.append(name, state, bar);
  $("uploads").append(row);
  return { row, state, bar };
}

async function uploadOne(file) {
  const { row, state, bar } = uploadRow(file);
  const local = checkLocally(file);
  if (local) return fail(row, state, bar, local);
  try {
    await media.upload(file, {
      onProgress: (p) => {
        bar.value = Math.round(p.fraction * 100);
        bar.dataset.value = String(bar.value);
        state.textContent =
          p.phase === "uploading" ? `Uploading ${Math.round((p.loaded / p.total) * 100)}%`
          : p.phase === "processing" ? "Processing" : "Done";
      },
    });
    row.classList.add("done");
    state.textContent = "Ready";
    await refresh();
  } catch (error) {
    fail(row, state, bar, error instanceof MediaError ? error.code : "network_error", error.message);
    await refresh();
  }
}

function fail(row, state, bar, code, message) {
  row.classList.add("failed");
  row.dataset.error = code;
  state.textContent = MESSAGES[code] || message || `Failed (${code})`;
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
  const open = document.createElement("button");
  open.className = "open";
  open.type = "button";
  const label = item.altText || item.filename || "photo";
  open.setAttribute("aria-label", `Open ${label}`);
  if (item.blurDataURL) open.style.backgroundImage = `url("${item.blurDataURL}")`;
  const card = item.variants.card || Object.values(item.variants)[0];
  if (card) {
    const img = document.createElement("img");
    img.src = card.url;
    img.srcset = srcset(item);
    img.sizes = "(max-width: 480px) 50vw, 220px";
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = label;
    img.width = card.width;
    img.height = card.height;
    open.append(img);
  }
  open.addEventListener("click", () => showDetail(item));
  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("span");
  name.textContent = item.filename || "";
  meta.append(name);
  if (item.status !== "ready") {
    const badge = document.createElement("span");
    badge.className = `badge ${item.status}`;
    badge.textContent = item.status === "in_review" ? "In review" : item.status;
    if (item.error) badge.title = item.error.message;
    meta.append(badge);
  }
  const del = document.createElement("button");
  del.className = "delete";
  del.type = "button";
  del.textContent = "Delete";
  del.setAttribute("aria-label", `Delete ${label}`);
  del.addEventListener("click", () => remove(item));
  meta.append(del);
  li.append(open, meta);
  return li;
}

function showDetail(item) {
  const large = item.variants.detail || item.variants.preview || Object.values(item.variants).pop();
  if (!large) return;
  const img = $("detail-img");
  img.src = large.url;
  img.alt = item.altText || item.filename || "photo";
  $("detail").showModal();
}

async function refresh() {
  const [ready, review, failed] = await Promise.all([
    media.list({ limit: 200 }),
    media.list({ status: "in_review", limit: 50 }),
    media.list({ status: "failed", limit: 50 }),
  ]);
  $("grid").replaceChildren(...ready.items.map(card));
  $("empty").hidden = ready.items.length > 0;
  const others = [...review.items, ...failed.items];
  $("pending").replaceChildren(...others.map(card));
  $("pending-title").hidden = others.length === 0;
}

// -- delete with undo -----------------------------------------------------------------------

let toastTimer = null;
async function remove(item) {
  await media.remove(item.id);
  await refresh();
  $("toast-text").textContent = `Deleted ${item.filename || "photo"}.`;
  $("toast").hidden = false;
  const undo = $("toast-undo");
  undo.onclick = async () => {
    $("toast").hidden = true;
    await media.restore(item.path);
    await refresh();
  };
  undo.focus();
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => ($("toast").hidden = true), rules.undoWindowSeconds * 1000);
}

media.events({ onEvent: (event) => { if (event.type === "resync") refresh(); } });
await refresh();
document.body.dataset.ready = "true";
