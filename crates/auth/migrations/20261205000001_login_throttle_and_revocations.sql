-- Failed logins per user, for the growing delay between guesses at one account (see
-- store::claim_login_attempt). Only users that exist have a row, so the table is bounded by
-- `users`; a success deletes the row.
CREATE TABLE login_failures (
    user_id         uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- Failures in a row, counted again from one once the last is older than the forget window.
    failures        integer NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    -- No attempt is checked before this; an attempt taken while throttled moves it on, so
    -- guesses sent at once do not all get through when it passes.
    next_allowed_at timestamptz NOT NULL
);

-- Verifiers ask every second for families revoked lately (store::revoked_sessions).
CREATE INDEX refresh_families_revoked ON refresh_families (revoked_at) WHERE revoked_at IS NOT NULL;
