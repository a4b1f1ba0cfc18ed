-- The transactional outbox (see the outbox crate): `user.registered` leaves through it.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text NOT NULL,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    traceparent text NOT NULL DEFAULT '',
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
