//! Ed25519 signing keys: created on first start, kept in the database, rotated without downtime.
//!
//! A key signs for `rotation` (default 30 days) from its `active_at`. Its successor is created an
//! hour before that window ends, so it is in the JWKS, and in every verifier's cache, before the
//! first token it signs exists. A key stays published until every token it signed has expired
//! (`retire_at`), then it is dropped. Replicas share the keys through the database; creating one
//! happens under an advisory lock so two replicas starting together do not both make a key.
//! Private keys are sealed under the key-encryption key, when one is given ([`crate::sealing`]).

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use rand::RngCore;
use realchat_runtime::jwt::PublicKey;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::RwLock;

use crate::{
    error::Error,
    sealing::{KeyEncryption, Stored},
};

/// Lock id for key creation (an arbitrary constant, unique within the `auth` database).
const KEY_LOCK: i64 = 0x5245_414c_4b45_5953; // "REALKEYS"

/// How long before a key's signing window ends its successor is published.
const PREPUBLISH: Duration = Duration::from_secs(3600);

/// One key as the signer needs it.
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub encoding: jsonwebtoken::EncodingKey,
    pub public: PublicKey,
    pub active_at: OffsetDateTime,
    pub retire_at: OffsetDateTime,
}

/// The keys currently published, newest first.
#[derive(Clone)]
pub struct KeyRing {
    pool: PgPool,
    rotation: Duration,
    token_ttl: Duration,
    sealing: Arc<KeyEncryption>,
    keys: Arc<RwLock<Vec<SigningKeyRecord>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    private_der: Option<Vec<u8>>,
    sealed_private: Option<Vec<u8>>,
    kek_id: Option<String>,
    public_key: Vec<u8>,
    active_at: OffsetDateTime,
    retire_at: OffsetDateTime,
}

impl KeyRow {
    fn stored(&self) -> Result<Stored, Error> {
        match (&self.private_der, &self.sealed_private, &self.kek_id) {
            (Some(der), None, None) => Ok(Stored::Clear(der.clone())),
            (None, Some(bytes), Some(kek_id)) => Ok(Stored::Sealed {
                bytes: bytes.clone(),
                kek_id: kek_id.clone(),
            }),
            _ => Err(Error::Internal(anyhow::anyhow!(
                "signing key {} has neither a clear nor a sealed private key",
                self.kid
            ))),
        }
    }
}

/// Binds a stored private key to the columns of `signing_keys`.
fn columns(stored: Stored) -> (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>) {
    match stored {
        Stored::Clear(der) => (Some(der), None, None),
        Stored::Sealed { bytes, kek_id } => (None, Some(bytes), Some(kek_id)),
    }
}

impl KeyRing {
    /// Loads the keys, creating the first one or a successor when due.
    pub async fn load(
        pool: PgPool,
        rotation: Duration,
        token_ttl: Duration,
        sealing: KeyEncryption,
        discard_unopenable: bool,
    ) -> Result<Self, Error> {
        if discard_unopenable {
            Self::discard_unopenable(&pool, &sealing).await?;
        }
        if sealing.current_id().is_none() {
            tracing::warn!(
                "signing keys are stored unsealed: a copy of the auth database can mint tokens; \
                 set REALCHAT_AUTH_KEY_ENCRYPTION_KEY"
            );
        }
        let ring = Self {
            pool,
            rotation,
            token_ttl,
            sealing: Arc::new(sealing),
            keys: Arc::new(RwLock::new(Vec::new())),
        };
        ring.maintain().await?;
        Ok(ring)
    }

    /// Deletes the keys sealed under a key-encryption key that was not given: for a throwaway
    /// topology whose key-encryption key was lost with its data directory while its database
    /// stayed (`cargo xtask up` after the directory was removed). Tokens they signed stop
    /// working; new keys are made.
    async fn discard_unopenable(pool: &PgPool, sealing: &KeyEncryption) -> Result<(), Error> {
        let discarded = sqlx::query(
            "DELETE FROM signing_keys WHERE kek_id IS NOT NULL AND NOT (kek_id = ANY($1))",
        )
        .bind(sealing.known_ids())
        .execute(pool)
        .await?
        .rows_affected();
        if discarded > 0 {
            tracing::warn!(
                keys = discarded,
                "discarded signing keys sealed under a key-encryption key that was not given"
            );
        }
        Ok(())
    }

    /// Creates keys that are due, drops retired ones and reloads. Safe to call from every replica.
    pub async fn maintain(&self) -> Result<(), Error> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        let newest: Option<OffsetDateTime> =
            sqlx::query_scalar("SELECT max(active_at) FROM signing_keys WHERE retire_at > now()")
                .fetch_one(&mut *tx)
                .await?;
        let next_active_at = match newest {
            None => Some(now),
            Some(active_at) => {
                let window_end = active_at + self.rotation;
                (window_end - PREPUBLISH <= now).then_some(window_end.max(now))
            }
        };
        if let Some(active_at) = next_active_at {
            self.create_key(&mut tx, active_at).await?;
        }
        sqlx::query("DELETE FROM signing_keys WHERE retire_at < now() - interval '1 day'")
            .execute(&mut *tx)
            .await?;
        self.seal_in(&mut tx).await?;
        tx.commit().await?;
        self.reload().await
    }

    /// Seals every key under the current key-encryption key, in one transaction under the key
    /// lock (`auth seal-keys`, after a rotation); returns how many were sealed anew.
    pub async fn seal_all(&self) -> Result<usize, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        let sealed = self.seal_in(&mut tx).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    /// Seals anew the keys stored in clear or under another key-encryption key.
    async fn seal_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<usize, Error> {
        let Some(current) = self.sealing.current_id() else {
            return Ok(0);
        };
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, private_der, sealed_private, kek_id, public_key, active_at, retire_at
             FROM signing_keys WHERE kek_id IS DISTINCT FROM $1",
        )
        .bind(current)
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let private = self.sealing.open(&row.kid, &row.stored()?)?;
            let (clear, sealed, kek_id) = columns(self.sealing.seal(&row.kid, &private)?);
            sqlx::query(
                "UPDATE signing_keys SET private_der = $2, sealed_private = $3, kek_id = $4
                 WHERE kid = $1",
            )
            .bind(&row.kid)
            .bind(clear)
            .bind(sealed)
            .bind(kek_id)
            .execute(&mut **tx)
            .await?;
        }
        if !rows.is_empty() {
            tracing::info!(
                keys = rows.len(),
                kek.id = current,
                "sealed signing keys under the key-encryption key"
            );
        }
        Ok(rows.len())
    }

    async fn create_key(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        active_at: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| Error::Internal(anyhow::anyhow!("encoding a new key: {e}")))?;
        let public = key.verifying_key().to_bytes();
        let kid = uuid::Uuid::now_v7().simple().to_string();
        // Verifiers must accept tokens this key signed until the last of them expires.
        let retire_at = active_at + self.rotation + self.token_ttl + Duration::from_secs(300);
        let (clear, sealed, kek_id) = columns(self.sealing.seal(&kid, der.as_bytes())?);
        sqlx::query(
            "INSERT INTO signing_keys
                 (kid, private_der, sealed_private, kek_id, public_key, active_at, retire_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&kid)
        .bind(clear)
        .bind(sealed)
        .bind(kek_id)
        .bind(public.as_slice())
        .bind(active_at)
        .bind(retire_at)
        .execute(&mut **tx)
        .await?;
        tracing::info!(key.kid = %kid, %active_at, "created a signing key");
        Ok(())
    }

    async fn reload(&self) -> Result<(), Error> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, private_der, sealed_private, kek_id, public_key, active_at, retire_at
             FROM signing_keys WHERE retire_at > now() ORDER BY active_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .into_iter()
            .map(|row| {
                let private = self.sealing.open(&row.kid, &row.stored()?)?;
                Ok(SigningKeyRecord {
                    encoding: jsonwebtoken::EncodingKey::from_ed_der(&private),
                    public: PublicKey {
                        kid: row.kid.clone(),
                        x: URL_SAFE_NO_PAD.encode(&row.public_key),
                    },
                    kid: row.kid,
                    active_at: row.active_at,
                    retire_at: row.retire_at,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        *self.keys.write().await = keys;
        Ok(())
    }

    /// The key that signs now: the newest one whose window has started.
    pub async fn current(&self) -> Result<SigningKeyRecord, Error> {
        let now = OffsetDateTime::now_utc();
        self.keys
            .read()
            .await
            .iter()
            .find(|k| k.active_at <= now && now < k.retire_at)
            .cloned()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no active signing key")))
    }

    /// Every published key, newest first (including a successor not yet signing).
    pub async fn published(&self) -> Vec<PublicKey> {
        self.keys
            .read()
            .await
            .iter()
            .map(|k| k.public.clone())
            .collect()
    }
}
