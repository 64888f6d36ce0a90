-- Events that are not a job's own (issue 15): `collection_updated` belongs to the owner's
-- stream, whether a sync through the API or a job changed the collection (the job is named
-- in its data), so an event's job is optional. A job's own stream (`job_id = ...`) never
-- matches these rows.
ALTER TABLE job_events ALTER COLUMN job_id DROP NOT NULL;
