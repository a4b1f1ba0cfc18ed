//! The `realchat.auth.v1.Auth` gRPC service.

use std::time::Duration;

use realchat_events::Topic;
use realchat_proto::auth::v1::{
    GetJwksRequest, GetUserRequest, GetUsersRequest, GetUsersResponse, Jwk, Jwks, LoginRequest,
    LogoutRequest, LogoutResponse, RefreshRequest, RegisterRequest, RevokedSession,
    RevokedSessionsRequest, RevokedSessionsResponse, TokenPair, User, auth_server::Auth,
};
use realchat_proto::events::v1::{UserRegistered, envelope::Payload};
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{Password, Username},
    error::Error,
    keys::KeyRing,
    metrics,
    password::Hasher,
    store::{self, Presented},
    tokens,
};

/// Longest refresh token or password we will even look at; anything longer is garbage.
const MAX_SECRET_LEN: usize = 1024;

/// Most ids one `GetUsers` call may ask about: a whole group's members.
const MAX_USERS_PER_LOOKUP: usize = 1000;

fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn to_pb_user(user: store::UserRow) -> User {
    User {
        user_id: user.id.to_string(),
        username: user.username,
        registered_at_ms: unix_ms(user.created_at),
    }
}

/// The auth service's request handlers.
#[derive(Clone, Debug)]
pub struct AuthApi {
    pub(crate) pool: PgPool,
    pub(crate) hasher: Hasher,
    pub(crate) keys: KeyRing,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
}

impl AuthApi {
    async fn register(&self, request: RegisterRequest) -> Result<User, Error> {
        let username = Username::parse(&request.username)?;
        let password = Password::parse(&request.password)?;
        // Cheap check first: a taken name should not cost 19 MiB of hashing. The insert below
        // still decides races.
        if store::username_exists(&self.pool, &username).await? {
            ::metrics::counter!(metrics::REGISTRATIONS, "outcome" => "taken").increment(1);
            return Err(Error::UsernameTaken);
        }
        let hash = self.hasher.hash(&password).await?;
        let id = Uuid::now_v7();
        let registered_at = OffsetDateTime::now_utc();
        let inserted = self
            .insert_and_announce(id, &username, &hash, registered_at)
            .await;
        let outcome = match &inserted {
            Ok(()) => "created",
            Err(Error::UsernameTaken) => "taken",
            Err(_) => "error",
        };
        ::metrics::counter!(metrics::REGISTRATIONS, "outcome" => outcome).increment(1);
        inserted?;
        tracing::info!(user.id = %id, "user registered");
        Ok(User {
            user_id: id.to_string(),
            username: username.to_string(),
            registered_at_ms: unix_ms(registered_at),
        })
    }

    /// Stores the user and its `user.registered` event in one transaction: other services hear
    /// of every user that exists, and of no other.
    async fn insert_and_announce(
        &self,
        id: Uuid,
        username: &Username,
        hash: &str,
        registered_at: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        store::insert_user(&mut tx, id, username, hash, registered_at).await?;
        let event = Payload::UserRegistered(UserRegistered {
            user_id: id.to_string(),
            username: username.to_string(),
            registered_at_ms: unix_ms(registered_at),
        });
        realchat_outbox::enqueue(&mut tx, Topic::Users, &id.to_string(), event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn login(&self, request: LoginRequest) -> Result<TokenPair, Error> {
        if request.password.len() > MAX_SECRET_LEN {
            return Err(Error::InvalidCredentials);
        }
        // A name that cannot exist still costs a hash, so it answers in the same time as a miss.
        let user = match Username::parse(&request.username) {
            Ok(username) => store::user_by_username(&self.pool, &username).await?,
            Err(_) => None,
        };
        // Guesses at one account wait longer and longer, from however many addresses they come
        // (the gateway's limits are per address).
        if let Some(user) = &user
            && let Some(wait) = store::claim_login_attempt(&self.pool, user.id).await?
        {
            ::metrics::counter!(metrics::LOGINS, "outcome" => "throttled").increment(1);
            return Err(Error::LoginThrottled(wait));
        }
        let matches = self
            .hasher
            .verify(
                &request.password,
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        let user = match user {
            Some(user) if matches => user,
            found => {
                ::metrics::counter!(metrics::LOGINS, "outcome" => "invalid_credentials")
                    .increment(1);
                if let Some(user) = found {
                    store::record_login_failure(&self.pool, user.id).await?;
                }
                return Err(Error::InvalidCredentials);
            }
        };
        store::clear_login_failures(&self.pool, user.id).await?;
        let refresh = tokens::refresh_token();
        let session =
            store::start_family(&self.pool, user.id, &refresh, self.refresh_expiry()).await?;
        ::metrics::counter!(metrics::LOGINS, "outcome" => "ok").increment(1);
        self.pair(user.id, session, refresh).await
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<TokenPair, Error> {
        if request.refresh_token.is_empty() || request.refresh_token.len() > MAX_SECRET_LEN {
            return Err(Error::InvalidRefreshToken);
        }
        let successor = tokens::refresh_token();
        match store::rotate(
            &self.pool,
            &request.refresh_token,
            &successor,
            self.refresh_expiry(),
        )
        .await?
        {
            Presented::Fresh { user_id, family_id } => {
                ::metrics::counter!(metrics::REFRESHES, "outcome" => "ok").increment(1);
                tracing::debug!(user.id = %user_id, family.id = %family_id, "refresh token rotated");
                self.pair(user_id, family_id, successor).await
            }
            Presented::Reused => {
                ::metrics::counter!(metrics::REFRESHES, "outcome" => "reuse_detected").increment(1);
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                Err(Error::InvalidRefreshToken)
            }
            Presented::Invalid => {
                ::metrics::counter!(metrics::REFRESHES, "outcome" => "invalid").increment(1);
                Err(Error::InvalidRefreshToken)
            }
        }
    }

    async fn logout(&self, request: LogoutRequest) -> Result<(), Error> {
        if request.refresh_token.is_empty() || request.refresh_token.len() > MAX_SECRET_LEN {
            return Ok(());
        }
        store::revoke_family_of(&self.pool, &request.refresh_token).await?;
        Ok(())
    }

    async fn get_user(&self, request: GetUserRequest) -> Result<User, Error> {
        let id = Uuid::parse_str(&request.user_id)
            .map_err(|_| Error::InvalidArgument("user_id must be a UUID".into()))?;
        let user = store::user_by_id(&self.pool, id)
            .await?
            .ok_or(Error::NotFound)?;
        Ok(to_pb_user(user))
    }

    async fn get_users(&self, request: GetUsersRequest) -> Result<GetUsersResponse, Error> {
        if request.user_ids.len() > MAX_USERS_PER_LOOKUP {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_USERS_PER_LOOKUP} user_ids per lookup"
            )));
        }
        let ids = request
            .user_ids
            .iter()
            .map(|raw| Uuid::parse_str(raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::InvalidArgument("user_ids must be UUIDs".into()))?;
        let users = store::users_by_ids(&self.pool, &ids).await?;
        Ok(GetUsersResponse {
            users: users.into_iter().map(to_pb_user).collect(),
        })
    }

    async fn jwks(&self) -> Jwks {
        let keys = self
            .keys
            .published()
            .await
            .into_iter()
            .map(|k| Jwk {
                kid: k.kid,
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.x,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Jwks { keys }
    }

    async fn pair(
        &self,
        user_id: Uuid,
        session: Uuid,
        refresh_token: String,
    ) -> Result<TokenPair, Error> {
        let key = self.keys.current().await?;
        Ok(TokenPair {
            access_token: tokens::access_token(&key, user_id, session, self.access_ttl)?,
            refresh_token,
            expires_in: u32::try_from(self.access_ttl.as_secs()).unwrap_or(u32::MAX),
            user_id: user_id.to_string(),
        })
    }

    /// Sessions revoked since `since_ms` whose access tokens may still be live.
    async fn revoked_sessions(
        &self,
        request: RevokedSessionsRequest,
    ) -> Result<RevokedSessionsResponse, Error> {
        // The clock's skew a verifier allows, and then some.
        let live_for = self.access_ttl + Duration::from_secs(60);
        let since = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(request.since_ms.max(0)) * 1_000_000,
        )
        .map_err(|_| Error::InvalidArgument("since_ms is out of range".into()))?;
        let sessions = store::revoked_sessions(&self.pool, since, live_for)
            .await?
            .into_iter()
            .map(|revoked| RevokedSession {
                session_id: revoked.family_id.to_string(),
                user_id: revoked.user_id.to_string(),
                revoked_at_ms: unix_ms(revoked.revoked_at),
                forget_at_ms: unix_ms(revoked.revoked_at + live_for),
            })
            .collect();
        Ok(RevokedSessionsResponse { sessions })
    }

    fn refresh_expiry(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.refresh_ttl
    }
}

#[tonic::async_trait]
impl Auth for AuthApi {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(
            AuthApi::register(self, request.into_inner()).await?,
        ))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        Ok(Response::new(
            AuthApi::login(self, request.into_inner()).await?,
        ))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenPair>, Status> {
        Ok(Response::new(
            AuthApi::refresh(self, request.into_inner()).await?,
        ))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        AuthApi::logout(self, request.into_inner()).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(
            AuthApi::get_user(self, request.into_inner()).await?,
        ))
    }

    async fn get_users(
        &self,
        request: Request<GetUsersRequest>,
    ) -> Result<Response<GetUsersResponse>, Status> {
        Ok(Response::new(
            AuthApi::get_users(self, request.into_inner()).await?,
        ))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.jwks().await))
    }

    async fn revoked_sessions(
        &self,
        request: Request<RevokedSessionsRequest>,
    ) -> Result<Response<RevokedSessionsResponse>, Status> {
        Ok(Response::new(
            AuthApi::revoked_sessions(self, request.into_inner()).await?,
        ))
    }
}
