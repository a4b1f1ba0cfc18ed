-- Outbox payloads live for the seconds between commit and the relay's delete, so compressing them
-- buys nothing, and a message.created of a 1,000-member group (36 KB, mostly member ids) cost
-- PostgreSQL about 1 ms to compress with pglz, which then gave up on it (random ids barely
-- compress) and stored it whole anyway. EXTERNAL keeps large payloads out of line, uncompressed.
-- Only the column's setting changes: no rewrite, and rows already stored keep their form.
ALTER TABLE outbox ALTER COLUMN payload SET STORAGE EXTERNAL;
