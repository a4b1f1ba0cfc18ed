//! Access tokens: their claims, and a verifier that needs only public keys.
//!
//! Auth signs access tokens with Ed25519 (`alg: EdDSA`) and names the key in the header's `kid`.
//! Every other service verifies them with [`Verifier`], which keeps the public keys by `kid` and
//! asks its [`KeySource`] again when a token names a key it has not seen (a rotation), at most once
//! per [`Verifier::MIN_REFRESH_INTERVAL`] so a flood of made-up `kid`s cannot hammer auth.
//!
//! Only `EdDSA` is accepted: `alg: none` does not even parse, and an HMAC token signed with a
//! public key as the secret (the classic confusion attack) is refused by the algorithm check.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

/// The `iss` of every RealChat access token.
pub const ISSUER: &str = "realchat";
/// The `aud` of every RealChat access token.
pub const AUDIENCE: &str = "realchat";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// Always [`ISSUER`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Unique token id.
    pub jti: Uuid,
}

/// One Ed25519 public key, as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// Key id, as in the token header.
    pub kid: String,
    /// The 32-byte public key, base64url without padding (the JWK `x`).
    pub x: String,
}

impl PublicKey {
    /// The key as a JWK (RFC 8037 OKP, Ed25519).
    pub fn to_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": self.x,
        })
    }
}

/// Where a [`Verifier`] gets the current public keys.
pub trait KeySource: Send + Sync + 'static {
    /// Fetches every key that may have signed a live token.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, String>> + Send + '_>>;
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Well-formed and correctly signed, but past its `exp`.
    #[error("token expired")]
    Expired,
    /// Anything else wrong with the token; the reason is for logs, not for clients.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The keys could not be fetched, so the token cannot be judged either way.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

struct KeyCache {
    keys: HashMap<String, (PublicKey, DecodingKey)>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens with cached public keys.
pub struct Verifier {
    source: Arc<dyn KeySource>,
    cache: RwLock<KeyCache>,
    refresh: Mutex<()>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// Unknown `kid`s trigger at most one key fetch per this interval.
    pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
    /// Keys are fetched again after this long even when every `kid` is known, so retired keys go.
    pub const MAX_KEY_AGE: Duration = Duration::from_secs(600);

    /// A verifier allowing `leeway` of clock skew on `exp` (a few seconds at most).
    pub fn new(source: Arc<dyn KeySource>, leeway: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Self {
            source,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            refresh: Mutex::new(()),
            validation,
        }
    }

    /// Checks a token's signature, algorithm, issuer, audience and expiry.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| VerifyError::Invalid(format!("header: {e}")))?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| VerifyError::Invalid("no kid in the header".into()))?;
        let key = self.decoding_key(&kid).await?;
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                other => VerifyError::Invalid(format!("{other:?}")),
            })
    }

    /// The public keys currently trusted, for publishing as a JWKS.
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, VerifyError> {
        if self.is_stale().await {
            self.refresh_keys().await?;
        }
        let cache = self.cache.read().await;
        let mut keys: Vec<PublicKey> = cache.keys.values().map(|(k, _)| k.clone()).collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(keys)
    }

    async fn is_stale(&self) -> bool {
        let cache = self.cache.read().await;
        cache
            .fetched_at
            .is_none_or(|at| at.elapsed() > Self::MAX_KEY_AGE)
    }

    async fn decoding_key(&self, kid: &str) -> Result<DecodingKey, VerifyError> {
        if !self.is_stale().await
            && let Some((_, key)) = self.cache.read().await.keys.get(kid)
        {
            return Ok(key.clone());
        }
        self.refresh_keys().await?;
        self.cache
            .read()
            .await
            .keys
            .get(kid)
            .map(|(_, key)| key.clone())
            .ok_or_else(|| VerifyError::Invalid(format!("unknown kid {kid:?}")))
    }

    /// Fetches the keys unless that happened less than [`Self::MIN_REFRESH_INTERVAL`] ago.
    async fn refresh_keys(&self) -> Result<(), VerifyError> {
        // One fetch at a time; callers that queued behind it reuse its result.
        let _guard = self.refresh.lock().await;
        if let Some(at) = self.cache.read().await.fetched_at
            && at.elapsed() < Self::MIN_REFRESH_INTERVAL
        {
            return Ok(());
        }
        let fetched = self
            .source
            .fetch()
            .await
            .map_err(VerifyError::KeysUnavailable)?;
        let mut keys = HashMap::with_capacity(fetched.len());
        for key in fetched {
            match DecodingKey::from_ed_components(&key.x) {
                Ok(decoding) => {
                    keys.insert(key.kid.clone(), (key, decoding));
                }
                Err(error) => {
                    tracing::warn!(key.kid = %key.kid, %error, "ignoring a malformed public key")
                }
            }
        }
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }
}
