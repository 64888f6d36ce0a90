-- Events that no job emits (issue 15): `collection_updated` after a sync of a collection
-- through the API has no job behind it, so an event's job is optional. A job's own stream
-- (`job_id = ...`) never matches these rows.
ALTER TABLE job_events ALTER COLUMN job_id DROP NOT NULL;
