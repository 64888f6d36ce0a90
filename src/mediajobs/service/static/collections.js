// The Collections panel of the media library page: open an entity's collection (listing/8412),
// add photos from the library, reorder them (drag and drop, or the Up and Down buttons),
// give each a purpose (one profile at most), save the whole list guarded by its ETag, and
// preview the public read. Follows `collection_updated` events on the client's one stream.
// Talks to the API only through mediajobs-client.js.
import { MediaError } from "/static/mediajobs-client.js";

/**
 * @typedef {import("/static/mediajobs-client.js").MediaItem} MediaItem
 * @typedef {import("/static/mediajobs-client.js").MediaRules} MediaRules
 * @typedef {import("/static/mediajobs-client.js").Collection} Collection
 * @typedef {import("/static/mediajobs-client.js").PublicMedia} PublicMedia
 * @typedef {{mediaId: string, purpose: string, media: MediaItem|null}} Entry An item being
 *   edited: `media` is null for one added from the library before it was ever read.
 */

// The API's own rules for an entity's type and id (400 invalid_entity otherwise).
const ENTITY_TYPE = /^[a-z][a-z0-9_-]{0,31}$/;
const ENTITY_ID = /^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$/;
const PROFILE = "profile";
// The ETag of a collection nobody has made yet: a save If-Match it creates it only if no one
// else did meanwhile.
const NEW_COLLECTION = '"c0"';

// A sentence for each code a collection's read or save can answer; the code is shown too.
const MESSAGES = {
  stale_collection: "This collection was changed elsewhere (another tab or device, or a photo in it was deleted or replaced) since you opened it, so your changes were not saved. Reload it to see the current version; your edits here will be lost.",
  second_profile: "A collection can have only one profile photo.",
  duplicate_media: "A photo is in the collection twice.",
  media_not_found: "A photo in the collection no longer exists; remove it and save again.",
  entity_not_found: "This collection belongs to another user.",
  invalid_entity: "The entity type is lowercase letters, digits, - and _ (starting with a letter); the id is letters, digits, . _ ~ and -.",
  invalid_field: "The collection could not be saved as it is.",
  network_error: "The connection failed.",
};
const STATUS_NAMES = {
  pending: "Waiting", processing: "Processing", in_review: "In review", failed: "Failed",
  rejected: "Rejected", deleted: "Deleted",
};

/**
 * Build the panel over the page's elements (ids in index.html).
 * @param {{media: ReturnType<typeof import("/static/mediajobs-client.js").createMediaClient>,
 *   rules: MediaRules}} options
 * @returns {{addButton: (item: MediaItem, label: string) => HTMLButtonElement,
 *   markCards: () => void}} `addButton` makes a library card's "Add" button;
 *   `markCards` updates every such button after the library was rendered.
 */
export function createCollectionsPanel({ media, rules }) {
  const $ = (id) => document.getElementById(id);
  const purposes = rules.collectionPurposes;
  const plain = purposes.includes("gallery") ? "gallery" : purposes.find((p) => p !== PROFILE);
  const maxItems = rules.collectionMaxItems;

  /** The open collection: `etag` null and `version` null while nothing was saved yet.
   * @type {null|{type: string, id: string, etag: string|null, version: number|null,
   *   saved: string, entries: Entry[]}} */
  let open = null;
  let loading = null; // AbortController of the read in flight
  let saving = false;
  let newerSeen = 0; // the highest version an event announced while a save was in flight
  let discardArmed = null; // "type/id" that a second Open may replace despite unsaved edits
  let publicEtag = null;
  /** @type {Map<string, HTMLLIElement>} one row per item, kept across reorders */
  const rows = new Map();
  let dragging = null;

  const list = $("collection-items");

  // -- state ---------------------------------------------------------------------------------

  const snapshot = (entries) => JSON.stringify(entries.map(({ mediaId, purpose }) => ({ mediaId, purpose })));
  const dirty = () => open !== null && snapshot(open.entries) !== open.saved;
  const nameOf = (entry) => (entry.media && (entry.media.altText || entry.media.filename)) || "photo";
  const entityName = () => `${open.type}/${open.id}`;

  function say(text) {
    $("collection-status").textContent = text;
  }

  function notice(text, { reload = true } = {}) {
    $("collection-notice-text").textContent = text;
    $("collection-reload").hidden = !reload;
    $("collection-notice").hidden = false;
  }

  function clearNotice() {
    $("collection-notice").hidden = true;
  }

  /** Show a collection read from the server as the new saved state. */
  function take(type, id, collection, etag) {
    const entries = collection
      ? collection.items.map((i) => ({ mediaId: i.mediaId, purpose: i.purpose, media: i.media }))
      : [];
    open = { type, id, etag, version: collection ? collection.version : null, saved: snapshot(entries), entries };
    rows.clear();
    clearNotice();
    render();
  }

  // -- open, save, reload --------------------------------------------------------------------

  /** Read a collection and show it; `reason` says why it is read again (an event's). */
  async function openCollection(type, id, reason = null) {
    if (loading) loading.abort();
    const controller = new AbortController();
    loading = controller;
    if (!open || open.type !== type || open.id !== id) publicEtag = null;
    say(`${reason ? "Reloading" : "Opening"} ${type}/${id}…`);
    try {
      const { collection, etag } = await media.collections.get(type, id, { signal: controller.signal });
      take(type, id, collection, etag);
      say(reason
        ? `${type}/${id} changed elsewhere (${reason}): now version ${collection.version}, ${count(collection.items.length)}.`
        : `Opened ${type}/${id}: ${count(collection.items.length)}.`);
    } catch (error) {
      if (error instanceof MediaError && error.code === "aborted") return;
      if (error instanceof MediaError && error.code === "entity_not_found") {
        take(type, id, null, NEW_COLLECTION); // saved only if nobody made it meanwhile
        say(`${type}/${id} has no photos yet: a new collection. Add photos from your library, then save.`);
      } else {
        say(explain(error, `Could not open ${type}/${id}`));
        return;
      }
    } finally {
      if (loading === controller) loading = null;
    }
    if (!$("public-view").hidden) await showPublic();
  }

  async function save() {
    if (!open || saving) return;
    if (!dirty()) {
      say(open.version === null
        ? "Nothing to save yet: add photos from your library first."
        : "Nothing to save: no changes since the last save.");
      return;
    }
    const keepFocus = document.activeElement === $("collection-save"); // it is disabled meanwhile
    saving = true;
    newerSeen = 0;
    render();
    const { type, id } = open;
    say(`Saving ${type}/${id}…`);
    try {
      const { collection, etag } = await media.collections.sync(type, id, open.entries, { ifMatch: open.etag });
      if (!open || open.type !== type || open.id !== id) return; // another one was opened meanwhile
      take(type, id, collection, etag);
      say(`Saved ${type}/${id}: ${count(collection.items.length)}, version ${collection.version}.`);
      if (!$("public-view").hidden) await showPublic();
    } catch (error) {
      if (error instanceof MediaError && error.code === "stale_collection") {
        notice(MESSAGES.stale_collection);
        say("Not saved: the collection changed elsewhere.");
      } else {
        say(explain(error, "Not saved"));
      }
    } finally {
      saving = false;
      render();
      if (keepFocus && !$("collection-save").hidden) $("collection-save").focus();
    }
    // An event that arrived during the save and announced a later version than ours.
    if (open && newerSeen > (open.version ?? 0)) changedElsewhere("sync");
  }

  /** Another tab, device or job changed the open collection. */
  function changedElsewhere(reason) {
    if (saving) return;
    if (dirty()) {
      notice(`This collection changed elsewhere (${reason}). Reload to see it; your unsaved edits here will be lost.`);
      return;
    }
    openCollection(open.type, open.id, reason);
  }

  media.events({
    onEvent: (event) => {
      if (!open) return;
      if (event.type === "resync") return changedElsewhere("history lost"); // events may be missing
      if (event.type !== "collection_updated" || !event.data) return;
      const { entityType, entityId, version, reason } = event.data;
      if (entityType !== open.type || entityId !== open.id) return;
      if (saving) {
        newerSeen = Math.max(newerSeen, version);
        return;
      }
      // A sync (or a replacement, a purge) moves the version: one the panel has seen is its own
      // save, or older. A review, a delete, a restore or an item becoming ready leaves the
      // version as it is but changes what the items show: always read again.
      const moved = reason === "sync" || reason === "replaced" || reason === "purged";
      if (moved && open.version !== null && version <= open.version) return;
      changedElsewhere(reason);
    },
  });

  // -- editing -------------------------------------------------------------------------------

  function add(item) {
    if (!open) return;
    if (open.entries.some((e) => e.mediaId === item.id)) return;
    if (open.entries.length >= maxItems) {
      say(`A collection holds at most ${maxItems} photos.`);
      return;
    }
    open.entries.push({ mediaId: item.id, purpose: plain, media: item });
    render();
    say(`Added ${nameOf(open.entries.at(-1))} at position ${open.entries.length} of ${open.entries.length}. Not saved yet.`);
  }

  function remove(mediaId) {
    const at = open.entries.findIndex((e) => e.mediaId === mediaId);
    if (at < 0) return;
    const [gone] = open.entries.splice(at, 1);
    rows.delete(mediaId);
    render();
    // Keep the keyboard where it was: the next row's Remove, else the previous one's.
    const next = open.entries[at] || open.entries[at - 1];
    if (next) rows.get(next.mediaId).querySelector(".remove").focus();
    else $("collection-save").focus(); // the last one: Save is what comes next
    say(`Removed ${nameOf(gone)}. Not saved yet.`);
  }

  function move(mediaId, to) {
    const from = open.entries.findIndex((e) => e.mediaId === mediaId);
    if (from < 0 || to < 0 || to >= open.entries.length || to === from) return;
    const [entry] = open.entries.splice(from, 1);
    open.entries.splice(to, 0, entry);
    render();
    say(`Moved ${nameOf(entry)} to position ${to + 1} of ${open.entries.length}. Not saved yet.`);
  }

  /** Set a purpose; a new profile turns the previous one into the plain purpose. */
  function setPurpose(mediaId, purpose) {
    const entry = open.entries.find((e) => e.mediaId === mediaId);
    if (!entry) return;
    const demoted = [];
    if (purpose === PROFILE) {
      for (const other of open.entries) {
        if (other !== entry && other.purpose === PROFILE) {
          other.purpose = plain;
          demoted.push(nameOf(other));
        }
      }
    }
    entry.purpose = purpose;
    render();
    const was = demoted.length ? ` ${demoted.join(", ")} is now ${plain}.` : "";
    say(`${nameOf(entry)} is now ${purpose}.${was} Not saved yet.`);
  }

  // -- rendering -----------------------------------------------------------------------------

  function render() {
    $("collection").hidden = open === null;
    if (open === null) return markCards();
    $("collection-name").textContent = entityName();
    $("collection-version").textContent = open.version === null ? "new" : `version ${open.version}`;
    $("collection-empty").hidden = open.entries.length > 0;
    const focused = document.activeElement;
    const total = open.entries.length;
    const wanted = open.entries.map((entry, at) => {
      const row = rows.get(entry.mediaId) || buildRow(entry);
      rows.set(entry.mediaId, row);
      updateRow(row, entry, at, total);
      return row;
    });
    // Rows are moved only when the order changed: a moved row loses the focus.
    const current = [...list.children];
    if (current.length !== wanted.length || wanted.some((row, at) => current[at] !== row)) {
      list.replaceChildren(...wanted);
    }
    if (focused instanceof HTMLElement && focused.isConnected && focused !== document.activeElement) {
      // A moved row's button keeps the focus, or its neighbour when it became disabled.
      const fallback = focused.classList.contains("up") ? ".down" : ".up";
      (focused.disabled ? focused.closest("li").querySelector(fallback) : focused).focus();
    }
    const isDirty = dirty();
    $("collection").dataset.dirty = String(isDirty);
    const saveButton = $("collection-save");
    saveButton.disabled = saving;
    saveButton.textContent = saving ? "Saving…" : isDirty ? "Save changes" : "Save";
    markCards();
  }

  /** @param {Entry} entry */
  function buildRow(entry) {
    const row = document.createElement("li");
    row.className = "entry";
    row.dataset.id = entry.mediaId;
    row.draggable = true;
    const el = (tag, className) => Object.assign(document.createElement(tag), { className });
    const handle = el("span", "handle");
    handle.setAttribute("aria-hidden", "true");
    handle.textContent = "⠿";
    const thumb = el("span", "entry-thumb");
    const main = el("div", "entry-main");
    const name = el("span", "entry-name");
    const badge = el("span", "entry-status");
    const purposeLabel = el("label", "purpose-label");
    const select = el("select", "purpose");
    for (const purpose of purposes) select.append(new Option(purpose, purpose));
    select.addEventListener("change", () => setPurpose(entry.mediaId, select.value));
    purposeLabel.append("Purpose ", select);
    const profileLabel = document.createElement("label");
    profileLabel.className = "profile-choice";
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "collection-profile";
    radio.className = "profile";
    radio.addEventListener("change", () => radio.checked && setPurpose(entry.mediaId, PROFILE));
    profileLabel.append(radio, " Profile");
    profileLabel.hidden = !purposes.includes(PROFILE);
    main.append(name, badge, purposeLabel, profileLabel);
    const actions = document.createElement("div");
    actions.className = "entry-actions";
    const up = button("up", "↑", () => move(entry.mediaId, open.entries.indexOf(entry) - 1));
    const down = button("down", "↓", () => move(entry.mediaId, open.entries.indexOf(entry) + 1));
    const drop = button("remove", "Remove", () => remove(entry.mediaId));
    actions.append(up, down, drop);
    row.append(handle, thumb, main, actions);

    row.addEventListener("dragstart", (event) => {
      if (!(event.target instanceof HTMLLIElement)) return; // a drag that began in a control
      dragging = entry.mediaId;
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", entry.mediaId);
      row.classList.add("dragging");
    });
    row.addEventListener("dragend", () => {
      dragging = null;
      row.classList.remove("dragging");
      clearDropMarks();
    });
    return row;
  }

  function button(className, text, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.textContent = text;
    b.addEventListener("click", onClick);
    return b;
  }

  /** @param {HTMLLIElement} row @param {Entry} entry */
  function updateRow(row, entry, at, total) {
    const label = nameOf(entry);
    const item = entry.media;
    const thumb = row.querySelector(".entry-thumb");
    const variant = item && (item.variants.thumb || item.variants.card || Object.values(item.variants)[0]);
    if (variant && !thumb.firstChild) {
      const img = image(variant.url, item.blurDataURL, "", variant.width, variant.height);
      img.draggable = false; // the row is dragged, not its picture
      thumb.append(img);
    }
    row.querySelector(".entry-name").textContent = `${at + 1}. ${(item && item.filename) || label}`;
    const status = item ? item.status : null;
    const badge = row.querySelector(".entry-status");
    badge.hidden = !status || status === "ready";
    badge.textContent = STATUS_NAMES[status] || "";
    row.dataset.purpose = entry.purpose;
    row.dataset.status = status || "";
    const select = row.querySelector(".purpose");
    if (!purposes.includes(entry.purpose) && ![...select.options].some((o) => o.value === entry.purpose)) {
      select.append(new Option(entry.purpose, entry.purpose)); // no longer configured: kept as it is
    }
    select.value = entry.purpose;
    select.setAttribute("aria-label", `Purpose of ${label}`);
    const radio = row.querySelector(".profile");
    radio.checked = entry.purpose === PROFILE;
    radio.setAttribute("aria-label", `${label} is the profile photo`);
    const up = row.querySelector(".up");
    const down = row.querySelector(".down");
    up.disabled = at === 0;
    down.disabled = at === total - 1;
    up.setAttribute("aria-label", `Move ${label} up`);
    down.setAttribute("aria-label", `Move ${label} down`);
    row.querySelector(".remove").setAttribute("aria-label", `Remove ${label} from the collection`);
  }

  /** An <img> over its blur placeholder; the placeholder goes once the image is in. */
  function image(src, blur, alt, width, height, { srcset, sizes } = {}) {
    const img = document.createElement("img");
    if (blur) img.style.backgroundImage = `url("${blur}")`;
    img.addEventListener("load", () => {
      img.style.backgroundImage = "";
      img.classList.add("loaded");
    }, { once: true });
    if (srcset) img.srcset = srcset;
    if (sizes) img.sizes = sizes;
    img.src = src;
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    if (width && height) {
      img.width = width;
      img.height = height;
    }
    return img;
  }

  // Drag and drop: the dragged row goes before or after the row under the pointer.
  function dropPlace(event) {
    const over = event.target instanceof Element ? event.target.closest("li.entry") : null;
    if (!over) return { over: null, index: open.entries.length };
    const box = over.getBoundingClientRect();
    const before = event.clientY < box.top + box.height / 2;
    const at = open.entries.findIndex((e) => e.mediaId === over.dataset.id);
    return { over, before, index: at + (before ? 0 : 1) };
  }

  function clearDropMarks() {
    for (const row of list.querySelectorAll(".drop-before, .drop-after")) row.classList.remove("drop-before", "drop-after");
  }

  list.addEventListener("dragover", (event) => {
    if (!dragging || !open) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    const { over, before } = dropPlace(event);
    clearDropMarks();
    if (over && over.dataset.id !== dragging) over.classList.add(before ? "drop-before" : "drop-after");
  });
  list.addEventListener("drop", (event) => {
    if (!dragging || !open) return;
    event.preventDefault();
    const from = open.entries.findIndex((e) => e.mediaId === dragging);
    let { index } = dropPlace(event);
    if (index > from) index -= 1; // the row leaves its old place first
    clearDropMarks();
    const id = dragging;
    dragging = null;
    move(id, index);
  });

  // -- the library's Add buttons ---------------------------------------------------------------

  function addButton(item, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "add";
    b.dataset.id = item.id;
    b.dataset.label = label;
    b.textContent = "Add";
    b.hidden = true;
    // aria-disabled, not disabled: a disabled button drops the keyboard focus to <body>.
    b.addEventListener("click", () => {
      if (b.getAttribute("aria-disabled") !== "true") add(item);
    });
    return b;
  }

  function markCards() {
    const inside = new Set(open ? open.entries.map((e) => e.mediaId) : []);
    const full = open !== null && open.entries.length >= maxItems;
    for (const b of document.querySelectorAll(".card button.add")) {
      b.hidden = open === null;
      if (open === null) continue;
      const added = inside.has(b.dataset.id);
      b.setAttribute("aria-disabled", String(added || full));
      b.textContent = added ? "Added" : "Add";
      b.setAttribute("aria-label", added
        ? `${b.dataset.label} is in ${entityName()}`
        : `Add ${b.dataset.label} to ${entityName()}`);
    }
  }

  // -- the public view ------------------------------------------------------------------------

  async function showPublic() {
    if (!open) return;
    const view = $("public-view");
    view.hidden = false;
    $("collection-public").setAttribute("aria-expanded", "true");
    const { type, id } = open;
    try {
      const answer = await media.collections.public(type, id, { ifNoneMatch: publicEtag, cache: "no-cache" });
      if (!open || open.type !== type || open.id !== id) return;
      if (answer.notModified) return;
      publicEtag = answer.etag;
      renderPublic(answer.collection);
    } catch (error) {
      publicEtag = null;
      const body = $("public-body");
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = error instanceof MediaError && error.code === "entity_not_found"
        ? "Nothing public yet: the collection has not been saved."
        : explain(error, "The public view could not be read");
      body.replaceChildren(p);
      delete body.dataset.entity;
    }
  }

  function hidePublic() {
    $("public-view").hidden = true;
    $("collection-public").setAttribute("aria-expanded", "false");
  }

  /** @param {import("/static/mediajobs-client.js").PublicCollection} view */
  function renderPublic(view) {
    const body = $("public-body");
    body.dataset.entity = `${view.entityType}/${view.entityId}`;
    const card = document.createElement("article");
    card.className = "public-card";
    const cover = document.createElement("div");
    cover.className = "public-cover";
    if (view.cover) {
      cover.dataset.id = view.cover.id;
      cover.append(publicImage(view.cover, "(min-width: 1000px) 400px, 100vw", "Cover photo"));
    }
    const profile = document.createElement("div");
    profile.className = "public-profile";
    if (view.profileImage) {
      profile.dataset.id = view.profileImage.id;
      profile.append(publicImage(view.profileImage, "72px", "Profile photo"));
    }
    const title = document.createElement("p");
    title.className = "public-title";
    title.textContent = `${view.entityType} ${view.entityId} · ${count(view.items.length)}`;
    const items = document.createElement("ul");
    items.className = "public-items";
    items.setAttribute("aria-label", `Photos of ${view.entityType} ${view.entityId}`);
    view.items.forEach((pm, at) => {
      const li = document.createElement("li");
      li.dataset.id = pm.id;
      li.dataset.purpose = pm.purpose;
      li.append(publicImage(pm, "(min-width: 1000px) 190px, 50vw", `Photo ${at + 1} of ${view.items.length}`));
      items.append(li);
    });
    card.append(cover, profile, title, items);
    if (view.items.length === 0) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "No photo is public yet: none is ready and reviewed.";
      card.append(p);
    }
    body.replaceChildren(card);
  }

  /** @param {PublicMedia} pm */
  function publicImage(pm, sizes, fallbackAlt) {
    return image(pm.src, pm.blurDataURL, pm.altText || fallbackAlt, pm.width, pm.height, { srcset: pm.srcset, sizes });
  }

  // -- wiring ---------------------------------------------------------------------------------

  function count(n) {
    return n === 1 ? "1 photo" : `${n} photos`;
  }

  function explain(error, prefix) {
    const code = error instanceof MediaError ? error.code : "network_error";
    const words = MESSAGES[code] || (error && error.message) || "Something went wrong.";
    return `${prefix}: ${words} (${code})`;
  }

  $("collection-open").addEventListener("submit", (event) => {
    event.preventDefault();
    const typeInput = $("entity-type");
    const idInput = $("entity-id");
    const type = typeInput.value.trim();
    const id = idInput.value.trim();
    const typeOk = ENTITY_TYPE.test(type);
    const idOk = ENTITY_ID.test(id);
    typeInput.setAttribute("aria-invalid", String(!typeOk));
    idInput.setAttribute("aria-invalid", String(!idOk));
    if (!typeOk || !idOk) {
      say(`Cannot open ${type || "?"}/${id || "?"}: ${MESSAGES.invalid_entity}`);
      (typeOk ? idInput : typeInput).focus();
      return;
    }
    const target = `${type}/${id}`;
    if (dirty() && discardArmed !== target) {
      discardArmed = target;
      notice(`${entityName()} has unsaved changes. Save them, or press Open again to discard them and open ${target}.`, { reload: false });
      return;
    }
    discardArmed = null;
    openCollection(type, id);
  });
  $("collection-save").addEventListener("click", save);
  $("collection-reload").addEventListener("click", async () => {
    if (!open) return;
    await openCollection(open.type, open.id);
    $("collection-save").focus(); // Reload is hidden now: the keyboard goes on from Save
  });
  $("collection-public").addEventListener("click", () => {
    if ($("public-view").hidden) showPublic();
    else hidePublic();
  });

  return { addButton, markCards };
}
