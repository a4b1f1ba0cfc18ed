-- Private signing keys sealed under a key-encryption key that is not in the database (see
-- sealing.rs): `sealed_private` holds nonce, ciphertext and tag, `kek_id` the fingerprint of the
-- key that sealed it. `private_der` stays for keys written without one.
ALTER TABLE signing_keys ALTER COLUMN private_der DROP NOT NULL;
ALTER TABLE signing_keys ADD COLUMN sealed_private bytea, ADD COLUMN kek_id text;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_private_once CHECK (
    (private_der IS NULL) <> (sealed_private IS NULL)
    AND (sealed_private IS NULL) = (kek_id IS NULL)
);
