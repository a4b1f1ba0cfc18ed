//! Minting access tokens (JWTs) and opaque refresh tokens.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore;
use realchat_runtime::jwt::{AUDIENCE, Claims, ISSUER};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{error::Error, keys::SigningKeyRecord};

/// Signs an access token for `user_id`'s session `session` with `key`, valid for `ttl`.
pub fn access_token(
    key: &SigningKeyRecord,
    user_id: Uuid,
    session: Uuid,
    ttl: Duration,
) -> Result<String, Error> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub: user_id,
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        jti: Uuid::now_v7(),
        sid: Some(session),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding)
        .map_err(|e| Error::Internal(anyhow::anyhow!("signing a token: {e}")))
}

/// A new opaque refresh token: 256 random bits, base64url.
pub fn refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
