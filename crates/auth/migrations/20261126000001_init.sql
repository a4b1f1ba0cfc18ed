-- Users, refresh-token families and the keys that sign access tokens.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Lower-cased on the way in (see domain::Username), so this is case-insensitively unique.
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- One family per login. Every refresh token a login ever rotates through belongs to it, so a
-- replayed (stolen) token can revoke them all at once.
CREATE TABLE refresh_families (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE INDEX refresh_families_user ON refresh_families (user_id);

-- Refresh tokens are stored as SHA-256 of the opaque token: a database leak yields nothing usable.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id  uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when the token is exchanged; presenting it again is theft.
    used_at    timestamptz
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Ed25519 signing keys. The newest active key signs; every key until its `retire_at` is in the JWKS
-- (a key retires once no token it signed can still be valid).
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    private_der bytea NOT NULL,
    public_key  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Published before it signs, so every verifier has fetched it by then.
    active_at   timestamptz NOT NULL,
    retire_at   timestamptz NOT NULL
);
