//! The gateway's source of public keys: auth's `GetJwks`.

use std::{future::Future, pin::Pin};

use realchat_proto::auth::v1::GetJwksRequest;
use realchat_runtime::jwt::{KeySource, PublicKey};

use crate::AuthClient;

/// Fetches the JWKS from the auth service over gRPC.
#[derive(Debug, Clone)]
pub(crate) struct AuthKeySource {
    pub(crate) client: AuthClient,
}

impl KeySource for AuthKeySource {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, String>> + Send + '_>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let jwks = client
                .get_jwks(GetJwksRequest {})
                .await
                .map_err(|status| format!("auth GetJwks: {}", status.message()))?
                .into_inner();
            Ok(jwks
                .keys
                .into_iter()
                .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
                .map(|k| PublicKey { kid: k.kid, x: k.x })
                .collect())
        })
    }
}
