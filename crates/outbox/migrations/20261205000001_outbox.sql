-- The outbox table, as every service that publishes through this crate has it. The crate applies
-- its migrations after the service's own, with a history table of its own, so the table's shape
-- is decided here once. Services created it in their own migrations before this one existed
-- (auth's and messaging's first ones), which is why the table may already be there.
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,            -- a `Topic`'s logical name, e.g. `messages`
    key         text NOT NULL,            -- the Kafka key: conversation or user id
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    traceparent text NOT NULL DEFAULT '',
    payload     bytea NOT NULL,           -- an encoded `realchat.events.v1.Envelope`
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Rows live for the moments between commit and the relay's delete, so compressing a payload buys
-- nothing, and a large one (a 1,000-member group's message.created, 36 KB of mostly random ids)
-- cost PostgreSQL about 1 ms to try with pglz before storing it whole anyway. EXTERNAL keeps
-- large payloads out of line, uncompressed. Only the column's setting changes: no rewrite.
ALTER TABLE outbox ALTER COLUMN payload SET STORAGE EXTERNAL;
