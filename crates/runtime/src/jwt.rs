//! Access tokens: their claims, and a verifier that needs only public keys.
//!
//! Auth signs access tokens with Ed25519 (`alg: EdDSA`) and names the key in the header's `kid`.
//! Every other service verifies them with [`Verifier`], which keeps the public keys by `kid` and
//! asks its [`KeySource`] again when a token names a key it has not seen (a rotation), at most once
//! per [`Verifier::MIN_REFRESH_INTERVAL`] so a flood of made-up `kid`s cannot hammer auth.
//!
//! Checking a signature costs about 27 µs of CPU, a seventh of the gateway's work per send, and a
//! client sends the same token with every request until it expires. So a verifier remembers the
//! tokens it accepted (byte for byte) and accepts them again without the signature check while the
//! same key set is in force and the token has not expired; any key refresh forgets them all.
//!
//! Only `EdDSA` is accepted: `alg: none` does not even parse, and an HMAC token signed with a
//! public key as the secret (the classic confusion attack) is refused by the algorithm check.
//!
//! A token also names its session (`sid`: the login's refresh-token family). When a session is
//! revoked (logout, or a refresh token presented twice), its tokens must stop working before
//! they expire: [`Verifier::follow_revocations`] asks the [`KeySource`] every
//! [`Verifier::REVOCATION_POLL`] for sessions revoked since it last asked, refuses their tokens
//! from then on, and tells [`Verifier::revocations`] subscribers (delivery closes the session's
//! sockets). Every process learns of a revocation on its own, a process that starts later
//! included, and none needs a broker or Redis for it.

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
    /// The session (refresh-token family) the token belongs to; revoking the session refuses
    /// it. Absent from tokens minted before sessions were named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
}

/// A session revoked while its access tokens may still be live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// The session (`sid`).
    pub session: Uuid,
    /// Its user.
    pub user: Uuid,
    /// When it was revoked, in milliseconds since the epoch.
    pub revoked_at_ms: i64,
    /// When the last token it could have had expires: after that it need not be remembered.
    pub forget_at_ms: i64,
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

/// Where a [`Verifier`] gets the current public keys and the revoked sessions.
pub trait KeySource: Send + Sync + 'static {
    /// Fetches every key that may have signed a live token.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, String>> + Send + '_>>;

    /// Sessions revoked at or after `since_ms` (milliseconds since the epoch) whose tokens may
    /// still be live, oldest first.
    fn revoked_since(
        &self,
        since_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Revoked>, String>> + Send + '_>>;
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Well-formed and correctly signed, but past its `exp`.
    #[error("token expired")]
    Expired,
    /// Its session was revoked (a logout, a refresh token presented twice).
    #[error("token revoked")]
    Revoked,
    /// Anything else wrong with the token; the reason is for logs, not for clients.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The keys could not be fetched, so the token cannot be judged either way.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

struct KeyCache {
    keys: HashMap<String, (PublicKey, DecodingKey)>,
    /// Which key set `keys` is: it changes only when a fetch finds different keys, so fetching
    /// the same keys again (an unknown `kid` asks for that) keeps the tokens accepted under them.
    key_set: KeySet,
    fetched_at: Option<Instant>,
    /// The last fetch that failed: the next waits [`Verifier::MIN_REFRESH_INTERVAL`].
    failed_at: Option<Instant>,
}

/// A key set's number: each fetch that finds keys different from the last gets the next one.
type KeySet = u64;

/// Tokens accepted under the key set `key_set`.
struct Accepted {
    key_set: Option<KeySet>,
    tokens: HashMap<Box<str>, Claims>,
}

/// Verifies access tokens with cached public keys.
pub struct Verifier {
    source: Arc<dyn KeySource>,
    /// [`Verifier::MAX_KEY_AGE`] and [`Verifier::MAX_STALE_KEY_AGE`], lowered by tests.
    max_key_age: Duration,
    max_stale_key_age: Duration,
    cache: RwLock<KeyCache>,
    refresh: Mutex<()>,
    validation: Validation,
    accepted: std::sync::Mutex<Accepted>,
    revoked: std::sync::RwLock<RevokedSessions>,
    revocations: tokio::sync::broadcast::Sender<Revoked>,
}

/// The revoked sessions a verifier knows of.
#[derive(Default)]
struct RevokedSessions {
    /// Session → when it can be forgotten (ms since the epoch).
    forget_at_ms: HashMap<Uuid, i64>,
    /// The newest `revoked_at_ms` seen: the next poll asks from a little before it.
    newest_ms: Option<i64>,
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
    /// If that fetch fails (auth is down), the keys already known keep working: a retired key's
    /// tokens expire soon anyway, and refusing every request while auth is down would stop
    /// services that do not need it.
    pub const MAX_KEY_AGE: Duration = Duration::from_secs(600);
    /// How long after their last successful fetch known keys keep working while they cannot be
    /// fetched again.
    pub const MAX_STALE_KEY_AGE: Duration = Duration::from_secs(3600);
    /// Most accepted tokens remembered; past it the expired ones go, and if that is not enough,
    /// all of them (only correctly signed tokens get in, so this bounds memory, not an attack).
    pub const MAX_ACCEPTED: usize = 20_000;
    /// How often [`Verifier::follow_revocations`] asks for revoked sessions: a revoked session's
    /// tokens stop working, and its sockets close, within about this long.
    pub const REVOCATION_POLL: Duration = Duration::from_secs(1);
    /// Each poll asks again for this long before the newest revocation it has seen, so one
    /// committed late (its transaction began earlier) is not missed.
    pub const REVOCATION_OVERLAP: Duration = Duration::from_secs(30);

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
            max_key_age: Self::MAX_KEY_AGE,
            max_stale_key_age: Self::MAX_STALE_KEY_AGE,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                key_set: 0,
                fetched_at: None,
                failed_at: None,
            }),
            refresh: Mutex::new(()),
            validation,
            accepted: std::sync::Mutex::new(Accepted {
                key_set: None,
                tokens: HashMap::new(),
            }),
            revoked: std::sync::RwLock::new(RevokedSessions::default()),
            revocations: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Checks a token's signature, algorithm, issuer, audience and expiry, and that its session
    /// has not been revoked.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let key_set = {
            let cache = self.cache.read().await;
            cache
                .fetched_at
                .filter(|at| at.elapsed() <= self.max_key_age)
                .map(|_| cache.key_set)
        };
        let claims = match self.accepted_before(token, key_set) {
            Some(claims) => claims,
            None => {
                let (claims, key_set) = self.verify_signed(token).await?;
                self.remember(token, &claims, key_set);
                claims
            }
        };
        if claims.sid.is_some_and(|sid| self.is_revoked(&sid)) {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// Whether `session` is known to be revoked.
    pub fn is_revoked(&self, session: &Uuid) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .forget_at_ms
            .contains_key(session)
    }

    /// Sessions revoked from now on, as this verifier learns of them.
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<Revoked> {
        self.revocations.subscribe()
    }

    /// Asks for revoked sessions every [`Verifier::REVOCATION_POLL`] until `shutdown`. While the
    /// source cannot answer, the sessions known stay revoked and the next poll asks again.
    pub async fn follow_revocations(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            match self.poll_revocations().await {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot ask for revoked sessions; asking again");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Self::REVOCATION_POLL) => {}
            }
        }
    }

    /// Asks once for sessions revoked since the last poll; returns how many were new.
    pub async fn poll_revocations(&self) -> Result<usize, String> {
        let since_ms = {
            let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
            revoked.newest_ms.map_or(0, |newest| {
                newest - Self::REVOCATION_OVERLAP.as_millis() as i64
            })
        };
        let found = self.source.revoked_since(since_ms).await?;
        let now_ms = unix_now() * 1000;
        let mut new = Vec::new();
        {
            let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
            revoked
                .forget_at_ms
                .retain(|_, forget_at| *forget_at > now_ms);
            for session in found {
                revoked.newest_ms = Some(
                    revoked
                        .newest_ms
                        .map_or(session.revoked_at_ms, |n| n.max(session.revoked_at_ms)),
                );
                if session.forget_at_ms > now_ms
                    && revoked
                        .forget_at_ms
                        .insert(session.session, session.forget_at_ms)
                        .is_none()
                {
                    new.push(session);
                }
            }
        }
        for session in &new {
            // Nobody listening (the gateway) is fine.
            let _ = self.revocations.send(*session);
        }
        Ok(new.len())
    }

    /// The claims of `token` if it was accepted under the key set `key_set` and has not expired
    /// since.
    fn accepted_before(&self, token: &str, key_set: Option<KeySet>) -> Option<Claims> {
        let key_set = key_set?;
        let accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        if accepted.key_set != Some(key_set) {
            return None;
        }
        let claims = accepted.tokens.get(token)?;
        // The same test as jsonwebtoken's: expired once `exp` is more than the leeway in the past.
        (claims.exp >= unix_now() - self.validation.leeway as i64).then(|| claims.clone())
    }

    /// Remembers `token` as accepted under the key set `key_set`. A newer key set forgets every
    /// token accepted under an older one.
    fn remember(&self, token: &str, claims: &Claims, key_set: Option<KeySet>) {
        let mut accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        match (accepted.key_set, key_set) {
            (Some(current), Some(set)) if set < current => return, // verified under older keys
            (current, set) if current != set => {
                accepted.key_set = set;
                accepted.tokens.clear();
            }
            _ => {}
        }
        if accepted.tokens.len() >= Self::MAX_ACCEPTED {
            let now = unix_now();
            accepted.tokens.retain(|_, claims| claims.exp >= now);
            if accepted.tokens.len() >= Self::MAX_ACCEPTED {
                accepted.tokens.clear();
            }
        }
        accepted.tokens.insert(token.into(), claims.clone());
    }

    /// The full check: header, key, signature and claims. Also says which key set had the key.
    async fn verify_signed(&self, token: &str) -> Result<(Claims, Option<KeySet>), VerifyError> {
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
        let (key, key_set) = self.decoding_key(&kid).await?;
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| (data.claims, key_set))
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                other => VerifyError::Invalid(format!("{other:?}")),
            })
    }

    /// How many accepted tokens are remembered (for tests).
    #[doc(hidden)]
    pub fn accepted_len(&self) -> usize {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .len()
    }

    /// The public keys currently trusted, for publishing as a JWKS.
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, VerifyError> {
        if self.is_stale().await
            && let Err(error) = self.refresh_keys().await
            && self.cache.read().await.keys.is_empty()
        {
            return Err(error);
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
            .is_none_or(|at| at.elapsed() > self.max_key_age)
    }

    async fn decoding_key(&self, kid: &str) -> Result<(DecodingKey, Option<KeySet>), VerifyError> {
        if !self.is_stale().await {
            let cache = self.cache.read().await;
            if let Some((_, key)) = cache.keys.get(kid) {
                return Ok((key.clone(), Some(cache.key_set)));
            }
        }
        let refreshed = match self.refresh.try_lock() {
            // This request fetches.
            Ok(guard) => self.fetch_keys(guard).await,
            // Another one is fetching: a known key serves meanwhile, so a slow key source
            // holds up one request, not all of them.
            Err(_) => match self.known_key(kid).await {
                Some(known) => return Ok(known),
                None => self.refresh_keys().await,
            },
        };
        match (self.known_key(kid).await, refreshed) {
            (Some(known), _) => Ok(known),
            (None, Err(error)) => Err(error),
            (None, Ok(())) => Err(VerifyError::Invalid(format!("unknown kid {kid:?}"))),
        }
    }

    /// The cached key `kid`, unless the keys were last fetched more than
    /// [`Self::MAX_STALE_KEY_AGE`] ago: past that, a key auth may have retired long ago is not
    /// trusted, even while auth cannot be asked.
    async fn known_key(&self, kid: &str) -> Option<(DecodingKey, Option<KeySet>)> {
        let cache = self.cache.read().await;
        let fetched_at = cache.fetched_at?;
        if fetched_at.elapsed() > self.max_stale_key_age {
            return None;
        }
        let (_, key) = cache.keys.get(kid)?;
        Some((key.clone(), Some(cache.key_set)))
    }

    /// Fetches the keys unless that happened less than [`Self::MIN_REFRESH_INTERVAL`] ago.
    async fn refresh_keys(&self) -> Result<(), VerifyError> {
        // One fetch at a time; callers that queued behind it reuse its result.
        let guard = self.refresh.lock().await;
        self.fetch_keys(guard).await
    }

    /// [`Verifier::refresh_keys`], with the fetch's turn already taken.
    async fn fetch_keys(&self, _turn: tokio::sync::MutexGuard<'_, ()>) -> Result<(), VerifyError> {
        {
            let cache = self.cache.read().await;
            if let Some(at) = cache.fetched_at
                && at.elapsed() < Self::MIN_REFRESH_INTERVAL
            {
                return Ok(());
            }
            // While the source is down, ask it again only once per interval: every request
            // waiting on a fetch that fails would make the outage everyone's.
            if cache
                .failed_at
                .is_some_and(|at| at.elapsed() < Self::MIN_REFRESH_INTERVAL)
            {
                return Err(VerifyError::KeysUnavailable(
                    "the key source failed a moment ago".into(),
                ));
            }
        }
        let fetched = match self.source.fetch().await {
            Ok(fetched) => fetched,
            Err(error) => {
                let mut cache = self.cache.write().await;
                cache.failed_at = Some(Instant::now());
                if !cache.keys.is_empty() {
                    tracing::warn!(%error, "cannot refresh the public keys; the known ones stay in use");
                }
                return Err(VerifyError::KeysUnavailable(error));
            }
        };
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
        let unchanged = keys.len() == cache.keys.len()
            && keys
                .iter()
                .all(|(kid, (key, _))| cache.keys.get(kid).is_some_and(|(known, _)| known == key));
        if !unchanged {
            cache.key_set += 1;
        }
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        cache.failed_at = None;
        Ok(())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex as StdMutex;

    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    /// An Ed25519 key pair from a fixed seed.
    struct Key {
        kid: String,
        encoding: EncodingKey,
        public: PublicKey,
    }

    impl Key {
        fn new(kid: &str, seed: u8) -> Self {
            let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            // PKCS#8 v1 for Ed25519: a fixed prefix, then the 32-byte seed.
            let mut der = vec![
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            der.extend_from_slice(&[seed; 32]);
            Self {
                kid: kid.into(),
                encoding: EncodingKey::from_ed_der(&der),
                public: PublicKey {
                    kid: kid.into(),
                    x: base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(signing.verifying_key().as_bytes()),
                },
            }
        }

        fn token(&self, exp_in: i64) -> String {
            self.token_of(exp_in, None)
        }

        fn token_of(&self, exp_in: i64, sid: Option<Uuid>) -> String {
            let now = unix_now();
            let claims = Claims {
                sub: Uuid::now_v7(),
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                iat: now,
                exp: now + exp_in,
                jti: Uuid::now_v7(),
                sid,
            };
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
        }
    }

    /// Keys that a test can swap (`None` is a source that is down), and revoked sessions.
    struct Keys(StdMutex<Option<Vec<PublicKey>>>, StdMutex<Vec<Revoked>>);

    impl Keys {
        fn serving(keys: Vec<PublicKey>) -> Arc<Self> {
            Arc::new(Self(StdMutex::new(Some(keys)), StdMutex::new(Vec::new())))
        }

        fn revoke(&self, session: Uuid, revoked_at_ms: i64) {
            self.1.lock().unwrap().push(Revoked {
                session,
                user: Uuid::now_v7(),
                revoked_at_ms,
                forget_at_ms: unix_now() * 1000 + 60_000,
            });
        }

        fn set(&self, keys: Option<Vec<PublicKey>>) {
            *self.0.lock().unwrap() = keys;
        }
    }

    impl KeySource for Keys {
        fn fetch(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, String>> + Send + '_>> {
            let keys = self.0.lock().unwrap().clone();
            Box::pin(async move { keys.ok_or_else(|| "auth is down".to_owned()) })
        }

        fn revoked_since(
            &self,
            since_ms: i64,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<Revoked>, String>> + Send + '_>> {
            let revoked: Vec<Revoked> = self
                .1
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.revoked_at_ms >= since_ms)
                .copied()
                .collect();
            Box::pin(async move { Ok(revoked) })
        }
    }

    #[tokio::test]
    async fn a_revoked_session_s_tokens_are_refused_even_when_accepted_before() {
        let key = Key::new("a", 1);
        let keys = Keys::serving(vec![key.public.clone()]);
        let verifier = Verifier::new(keys.clone(), Duration::ZERO);
        let (revoked, kept) = (Uuid::now_v7(), Uuid::now_v7());
        let (token, other) = (
            key.token_of(60, Some(revoked)),
            key.token_of(60, Some(kept)),
        );
        verifier.verify(&token).await.unwrap();
        let mut told = verifier.revocations();

        keys.revoke(revoked, unix_now() * 1000);
        assert_eq!(verifier.poll_revocations().await.unwrap(), 1);
        assert_eq!(verifier.verify(&token).await, Err(VerifyError::Revoked));
        assert!(verifier.verify(&other).await.is_ok());
        assert_eq!(told.try_recv().unwrap().session, revoked);
        // Asking again (the overlap) finds nothing new and tells nobody twice.
        assert_eq!(verifier.poll_revocations().await.unwrap(), 0);
        assert!(told.try_recv().is_err());
        // A token without a session (minted before sessions were named) is not affected.
        assert!(verifier.verify(&key.token(60)).await.is_ok());
    }

    #[tokio::test]
    async fn a_revocation_committed_late_within_the_overlap_is_still_found() {
        let key = Key::new("a", 1);
        let keys = Keys::serving(vec![key.public.clone()]);
        let verifier = Verifier::new(keys.clone(), Duration::ZERO);
        let now_ms = unix_now() * 1000;
        keys.revoke(Uuid::now_v7(), now_ms);
        assert_eq!(verifier.poll_revocations().await.unwrap(), 1);
        // Revoked a few seconds before the newest one seen, but visible only now.
        let late = Uuid::now_v7();
        keys.revoke(late, now_ms - 5_000);
        assert_eq!(verifier.poll_revocations().await.unwrap(), 1);
        assert!(verifier.is_revoked(&late));
    }

    #[tokio::test]
    async fn an_accepted_token_is_accepted_again_until_it_expires_and_a_tampered_copy_never() {
        let key = Key::new("a", 1);
        let verifier = Verifier::new(Keys::serving(vec![key.public.clone()]), Duration::ZERO);
        let token = key.token(1);

        let first = verifier.verify(&token).await.unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap(), first);
        assert_eq!(verifier.accepted_len(), 1, "remembered once");

        // One character of the signature changed: not the remembered token, and not valid.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            verifier.verify(&tampered).await,
            Err(VerifyError::Invalid(_))
        ));

        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(verifier.verify(&token).await, Err(VerifyError::Expired));
    }

    #[tokio::test]
    async fn a_new_key_set_forgets_the_tokens_accepted_under_the_old_one() {
        let (old, new) = (Key::new("old", 1), Key::new("new", 2));
        let keys = Keys::serving(vec![old.public.clone()]);
        let verifier = Verifier::new(Arc::clone(&keys) as Arc<dyn KeySource>, Duration::ZERO);
        let old_token = old.token(600);
        verifier.verify(&old_token).await.unwrap();

        // The old key is retired; a token of the new one makes the verifier fetch the keys again
        // (once the minimum interval has passed).
        keys.set(Some(vec![new.public.clone()]));
        tokio::time::sleep(Verifier::MIN_REFRESH_INTERVAL + Duration::from_millis(100)).await;
        verifier.verify(&new.token(600)).await.unwrap();

        assert!(
            matches!(
                verifier.verify(&old_token).await,
                Err(VerifyError::Invalid(_))
            ),
            "a token of a retired key must not be accepted from memory"
        );
    }

    /// Made-up `kid`s make the verifier fetch the keys again (once per interval); finding the
    /// same keys must not make it forget, and check again, every token it accepted.
    #[tokio::test]
    async fn fetching_the_same_keys_again_keeps_the_accepted_tokens() {
        let key = Key::new("a", 1);
        let keys = Keys::serving(vec![key.public.clone()]);
        let verifier = Verifier::new(Arc::clone(&keys) as Arc<dyn KeySource>, Duration::ZERO);
        let tokens = [key.token(600), key.token(600)];
        for token in &tokens {
            verifier.verify(token).await.unwrap();
        }
        assert_eq!(verifier.accepted_len(), 2);

        tokio::time::sleep(Verifier::MIN_REFRESH_INTERVAL + Duration::from_millis(100)).await;
        let stranger = Key::new("made-up", 9).token(600);
        assert!(matches!(
            verifier.verify(&stranger).await,
            Err(VerifyError::Invalid(_))
        ));
        verifier.verify(&tokens[0]).await.unwrap();
        assert_eq!(
            verifier.accepted_len(),
            2,
            "both tokens are still remembered after a refetch that found the same keys"
        );
    }

    #[tokio::test]
    async fn known_keys_keep_working_while_the_source_is_down_and_unknown_ones_are_unavailable() {
        let (key, other) = (Key::new("a", 1), Key::new("b", 2));
        let keys = Keys::serving(vec![key.public.clone()]);
        let mut verifier = Verifier::new(Arc::clone(&keys) as Arc<dyn KeySource>, Duration::ZERO);
        verifier.max_key_age = Duration::from_millis(200);
        verifier.verify(&key.token(600)).await.unwrap();

        // The keys are due for a refresh (past the minimum interval), and auth is down.
        keys.set(None);
        tokio::time::sleep(Verifier::MIN_REFRESH_INTERVAL + Duration::from_millis(100)).await;
        verifier.verify(&key.token(600)).await.unwrap();
        assert_eq!(
            verifier.public_keys().await.unwrap(),
            std::slice::from_ref(&key.public)
        );
        // A key it never saw cannot be checked: that is the source's outage, not a bad token.
        assert!(matches!(
            verifier.verify(&other.token(600)).await,
            Err(VerifyError::KeysUnavailable(_))
        ));
        // Nor, after long enough without a successful fetch, can one it knows.
        verifier.max_stale_key_age = Duration::from_millis(100);
        tokio::time::sleep(Verifier::MIN_REFRESH_INTERVAL + Duration::from_millis(100)).await;
        assert!(matches!(
            verifier.verify(&key.token(600)).await,
            Err(VerifyError::KeysUnavailable(_))
        ));
    }
}
