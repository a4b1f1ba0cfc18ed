-- Conversations, members, messages, read positions, the users messaging knows, and the outbox.

-- Users known from `user.registered` events: messaging never reads auth's tables.
CREATE TABLE known_users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    registered_at timestamptz NOT NULL
);

CREATE TABLE conversations (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('direct', 'group')),
    title            text,
    created_by       uuid NOT NULL,
    -- `<lower uuid>:<higher uuid>` for a direct conversation, so a pair has at most one.
    direct_key       text UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- The seq of the newest message. Sends lock this row to take the next one, which makes seqs
    -- gapless and commit-ordered per conversation.
    last_seq         bigint NOT NULL DEFAULT 0,
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE members (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    -- Highest seq the member has read; only moves forward.
    read_seq        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX members_by_user ON members (user_id);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    sender_id       uuid NOT NULL,
    client_msg_id   text NOT NULL,
    body            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, seq),
    -- A retried send finds its original instead of making a second copy.
    UNIQUE (conversation_id, sender_id, client_msg_id)
);

-- The transactional outbox (see the outbox crate).
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
