-- Profiles, one per registered user, created from `user.registered`.

CREATE TABLE profiles (
    user_id       uuid PRIMARY KEY,
    -- Lower-case `[a-z0-9_]`, as auth stores it. NULL until the registration event arrived (a
    -- profile edited before that exists but is not shown).
    username      text COLLATE "C" UNIQUE,
    display_name  text,
    bio           text,
    avatar_url    text,
    registered_at timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The directory: prefix search is a range scan on this index (`username >= p AND username < p+1`),
-- which is why the column sorts bytewise (COLLATE "C").
CREATE INDEX profiles_by_username ON profiles (username) WHERE username IS NOT NULL;
