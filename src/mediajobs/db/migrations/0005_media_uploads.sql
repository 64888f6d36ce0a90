-- Uploads that were started (upload/init) and not completed yet.
--
-- The object key holds a sanitized file name (what every store can hold); the name the user
-- gave, with its original characters, waits here until upload/complete copies it onto the
-- media row (`original_filename`) and removes this row, in the transaction that creates the
-- item. A row that stays names an upload that was never completed (its presigned URL
-- expired, or complete refused it).
CREATE TABLE media_uploads (
    object_key    text PRIMARY KEY,  -- media/{owner}/uploads/{uuid}/{sanitized name}
    owner_id      text NOT NULL,     -- the token's sub
    display_name  text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 255),
    declared_type text,              -- the content type the presigned upload binds
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX media_uploads_created_idx ON media_uploads (created_at);
