//! gRPC clients of RealChat's services, as every caller builds them: connecting lazily, with
//! bounded connect and call times, and carrying the trace context.
//!
//! Lazy channels let a service start, and answer `503`, while a backend is still down; tonic
//! reconnects by itself when it returns.

use std::{future::Future, pin::Pin, time::Duration};

use anyhow::Context as _;
use realchat_proto::{
    auth::v1::{GetJwksRequest, GetUsersRequest, RevokedSessionsRequest, auth_client},
    messaging::v1::messaging_client,
    profile::v1::profiles_client,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    jwt::{KeySource, PublicKey, Revoked},
    telemetry::propagation::GrpcClientPropagation,
    tls::InternalTls,
};

/// The gRPC client of the auth service.
pub type AuthClient = auth_client::AuthClient<InterceptedService<Channel, GrpcClientPropagation>>;

/// The gRPC client of the messaging service.
pub type MessagingClient =
    messaging_client::MessagingClient<InterceptedService<Channel, GrpcClientPropagation>>;

/// The gRPC client of the profile service.
pub type ProfileClient =
    profiles_client::ProfilesClient<InterceptedService<Channel, GrpcClientPropagation>>;

/// A lazily connecting channel to service `service` at `endpoint` (the value of `variable`, named
/// in errors). With mutual TLS ([`InternalTls`]), each connection is TLS with this service's
/// certificate, and the server must prove it is `service` ([`crate::tls::identity`]) whatever
/// address `endpoint` names.
pub fn channel(
    variable: &str,
    endpoint: &str,
    tls: &InternalTls,
    service: &str,
) -> anyhow::Result<Channel> {
    let endpoint = Channel::from_shared(endpoint.to_owned())
        .with_context(|| format!("{variable}={endpoint:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let Some(config) = tls.client() else {
        return Ok(endpoint.connect_lazy());
    };
    let name = rustls::pki_types::ServerName::try_from(crate::tls::identity(service))
        .with_context(|| format!("{service:?} is not a service name"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            let connector = connector.clone();
            let name = name.clone();
            async move {
                let host = uri.host().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    });
                let tcp = tokio::net::TcpStream::connect((host, port)).await?;
                tcp.set_nodelay(true)?;
                let stream = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        })),
    )
}

/// An auth client on `endpoint` (the value of `variable`).
pub fn auth(variable: &str, endpoint: &str, tls: &InternalTls) -> anyhow::Result<AuthClient> {
    Ok(auth_client::AuthClient::with_interceptor(
        channel(variable, endpoint, tls, "auth")?,
        GrpcClientPropagation,
    ))
}

/// The largest answer a messaging client takes. A page of history may hold 200 messages of
/// 4,000 characters (up to 16 KB each in UTF-8), past tonic's default of 4 MiB; a conversation
/// list holds at most 100 member ids per conversation, about 2 MB for 500 of them.
pub const MAX_MESSAGING_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A messaging client on `channel` (which [`serving`] can ask about too).
pub fn messaging(channel: Channel) -> MessagingClient {
    messaging_client::MessagingClient::with_interceptor(channel, GrpcClientPropagation)
        .max_decoding_message_size(MAX_MESSAGING_ANSWER_BYTES)
}

/// Whether the service behind `channel` can work, within `wait`: its health service
/// (`grpc.health.v1`, which every RealChat gRPC server offers, see [`crate::grpc::serve`]) says
/// `SERVING`. For readiness checks of the services that call it; `name` goes in the error.
pub async fn serving(name: &str, channel: Channel, wait: Duration) -> Result<(), String> {
    let mut health = HealthClient::with_interceptor(channel, GrpcClientPropagation);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match tokio::time::timeout(wait, health.check(request)).await {
        Err(_) => Err(format!("{name}: timed out")),
        Ok(Err(status)) => Err(format!("{name}: {}", status.message())),
        Ok(Ok(answer)) if answer.get_ref().status() == ServingStatus::Serving => Ok(()),
        Ok(Ok(answer)) => Err(format!(
            "{name}: {}",
            answer.get_ref().status().as_str_name()
        )),
    }
}

/// A user that auth confirmed is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredUser {
    pub id: uuid::Uuid,
    pub username: String,
    pub registered_at_ms: i64,
}

/// How long a service waits for auth to confirm users before it answers `unavailable`.
const USER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Which of `ids` auth knows as registered users; unknown ids are left out.
///
/// For services that learn users from `user.registered`: an id whose event has not reached them
/// yet (it is on its way, or the broker is down) is asked about here, so a user can be added to a
/// conversation, or shown, the moment registration returns. `Err` says why auth could not be
/// asked; the caller answers `unavailable` (the client retries), never "unknown user".
pub async fn registered_users(
    auth: &AuthClient,
    ids: &[uuid::Uuid],
) -> Result<Vec<RegisteredUser>, String> {
    let mut found = Vec::new();
    // Auth answers up to 1,000 ids per call: a whole group.
    for chunk in ids.chunks(1000) {
        let request = GetUsersRequest {
            user_ids: chunk.iter().map(uuid::Uuid::to_string).collect(),
        };
        let mut auth = auth.clone();
        let users = match tokio::time::timeout(USER_LOOKUP_TIMEOUT, auth.get_users(request)).await {
            Err(_) => return Err("auth GetUsers: timed out".to_owned()),
            Ok(Err(status)) => return Err(format!("auth GetUsers: {}", status.message())),
            Ok(Ok(response)) => response.into_inner().users,
        };
        for user in users {
            let id = uuid::Uuid::parse_str(&user.user_id)
                .map_err(|_| format!("auth GetUsers answered a bad id {:?}", user.user_id))?;
            found.push(RegisteredUser {
                id,
                username: user.username,
                registered_at_ms: user.registered_at_ms,
            });
        }
    }
    Ok(found)
}

/// A profile client on `endpoint` (the value of `variable`).
pub fn profile(variable: &str, endpoint: &str, tls: &InternalTls) -> anyhow::Result<ProfileClient> {
    Ok(profiles_client::ProfilesClient::with_interceptor(
        channel(variable, endpoint, tls, "profile")?,
        GrpcClientPropagation,
    ))
}

/// Public keys for a [`crate::jwt::Verifier`], from auth's `GetJwks`.
#[derive(Debug, Clone)]
pub struct AuthKeySource {
    client: AuthClient,
}

impl AuthKeySource {
    /// Keys fetched through `client`.
    pub fn new(client: AuthClient) -> Self {
        Self { client }
    }
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

    fn revoked_since(
        &self,
        since_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Revoked>, String>> + Send + '_>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let found = client
                .revoked_sessions(RevokedSessionsRequest { since_ms })
                .await
                .map_err(|status| format!("auth RevokedSessions: {}", status.message()))?
                .into_inner();
            Ok(found
                .sessions
                .into_iter()
                .filter_map(|s| {
                    Some(Revoked {
                        session: s.session_id.parse().ok()?,
                        user: s.user_id.parse().ok()?,
                        revoked_at_ms: s.revoked_at_ms,
                        forget_at_ms: s.forget_at_ms,
                    })
                })
                .collect())
        })
    }
}
