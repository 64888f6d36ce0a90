-- Collections (issue 15): the ordered media attached to one entity of the product, such as
-- listing/8412 or artist/ada.
--
-- An entity belongs to the owner who first attached media to it. `version` counts the changes
-- of its collection: it is the collection's ETag, and a sync names the version it read
-- (If-Match), so of two syncs from the same version exactly one applies.
--
-- An attachment stays while its media item is deleted (reads show only items that may be
-- shown), so a restore inside the undo window puts the item back where it was; the purge
-- removes the attachment with the item.
CREATE TABLE entities (
    entity_type text NOT NULL CHECK (entity_type ~ '^[a-z][a-z0-9_-]{0,31}$'),
    entity_id   text NOT NULL CHECK (entity_id ~ '^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$'),
    owner_id    text NOT NULL,
    version     bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_type, entity_id)
);

CREATE TABLE entity_media (
    entity_type text NOT NULL,
    entity_id   text NOT NULL,
    media_id    uuid NOT NULL REFERENCES media (id),
    purpose     text NOT NULL CHECK (purpose ~ '^[a-z][a-z0-9_]{0,31}$'),
    position    integer NOT NULL CHECK (position >= 0),
    PRIMARY KEY (entity_type, entity_id, media_id),
    FOREIGN KEY (entity_type, entity_id) REFERENCES entities ON DELETE CASCADE,
    UNIQUE (entity_type, entity_id, position) DEFERRABLE INITIALLY DEFERRED
);

-- At most one profile image per entity.
CREATE UNIQUE INDEX entity_media_profile_idx ON entity_media (entity_type, entity_id)
    WHERE purpose = 'profile';
-- The collections an item belongs to (delete, purge, replacement).
CREATE INDEX entity_media_media_idx ON entity_media (media_id);
