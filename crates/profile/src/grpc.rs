//! The `realchat.profile.v1.Profiles` gRPC service: parse, check, call the store.

use std::time::Instant;

use realchat_proto::profile::v1::{
    self as pb, GetProfileRequest, NullableString, SearchProfilesRequest, SearchProfilesResponse,
    UpdateProfileRequest, profiles_server::Profiles,
};
use realchat_runtime::clients::{self, AuthClient};
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{AvatarUrl, Bio, DisplayName, Invalid, Prefix, search_limit},
    error::Error,
    metrics,
    store::{self, Change, Edit, ProfileRow, unix_ms},
};

/// The profile service's request handlers.
#[derive(Clone, Debug)]
pub struct ProfilesApi {
    pub(crate) pool: PgPool,
    /// Fills in profiles whose registration event has not arrived yet.
    pub(crate) auth: AuthClient,
}

fn to_pb(row: ProfileRow) -> pb::Profile {
    pb::Profile {
        user_id: row.user_id.to_string(),
        username: row.username.unwrap_or_default(),
        display_name: row.display_name.unwrap_or_default(),
        has_bio: row.bio.is_some(),
        bio: row.bio.unwrap_or_default(),
        has_avatar_url: row.avatar_url.is_some(),
        avatar_url: row.avatar_url.unwrap_or_default(),
        updated_at_ms: unix_ms(row.updated_at),
    }
}

/// An id from a path: malformed is simply "not found".
fn user_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::NotFound)
}

fn change(
    field: Option<NullableString>,
    parse: impl Fn(&str) -> Result<String, Invalid>,
) -> Result<Change, Error> {
    Ok(match field {
        None => Change::Keep,
        Some(NullableString { value: None }) => Change::Clear,
        Some(NullableString { value: Some(v) }) => Change::Set(parse(&v)?),
    })
}

impl ProfilesApi {
    async fn edit(&self, request: UpdateProfileRequest) -> Result<pb::Profile, Error> {
        let user = Uuid::parse_str(&request.user_id)
            .map_err(|_| Error::InvalidArgument("user_id must be a UUID".into()))?;
        let display_name = match change(request.display_name, |v| {
            DisplayName::parse(v).map(DisplayName::into_inner)
        })? {
            Change::Keep => None,
            Change::Set(name) => Some(name),
            Change::Clear => {
                return Err(Error::InvalidArgument(
                    "display_name cannot be removed, only changed".into(),
                ));
            }
        };
        let edit = Edit {
            display_name,
            bio: change(request.bio, |v| Bio::parse(v).map(Bio::into_inner))?,
            avatar_url: change(request.avatar_url, |v| {
                AvatarUrl::parse(v).map(AvatarUrl::into_inner)
            })?,
        };
        let row = match store::edit(&self.pool, user, edit).await {
            // Stored, but the registration event that names the user has not arrived.
            Err(Error::NotFound) if self.fill_from_auth(user).await? => {
                store::get(&self.pool, user).await?
            }
            other => other?,
        };
        ::metrics::counter!(metrics::PROFILES_UPDATED).increment(1);
        Ok(to_pb(row))
    }

    /// A profile, created from auth's record when the registration event is still on its way.
    async fn get(&self, user: Uuid) -> Result<ProfileRow, Error> {
        match store::get(&self.pool, user).await {
            Err(Error::NotFound) if self.fill_from_auth(user).await? => {
                store::get(&self.pool, user).await
            }
            other => other,
        }
    }

    /// Profiles come from registration events, which can be behind (or stuck while the broker is
    /// down) when a just-registered user is first looked at. Auth is asked instead, and the
    /// profile created from its answer exactly as the event would create it (the event, when it
    /// comes, changes nothing). False when auth does not know the user; `unavailable` when auth
    /// cannot be asked, which a client retries.
    async fn fill_from_auth(&self, user: Uuid) -> Result<bool, Error> {
        let registered = clients::registered_users(&self.auth, &[user])
            .await
            .map_err(Error::AuthUnavailable)?;
        let Some(registered) = registered.into_iter().find(|u| u.id == user) else {
            return Ok(false);
        };
        let at = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(registered.registered_at_ms) * 1_000_000,
        )
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
        store::create_from_registration(&self.pool, user, &registered.username, at).await?;
        ::metrics::counter!(metrics::PROFILES_FILLED_FROM_AUTH).increment(1);
        Ok(true)
    }

    async fn search(
        &self,
        request: SearchProfilesRequest,
    ) -> Result<SearchProfilesResponse, Error> {
        let prefix = Prefix::parse(&request.prefix)?;
        let limit = search_limit(request.limit)?;
        let (from, to) = prefix.range();
        let started = Instant::now();
        let rows = store::search(&self.pool, &from, to.as_deref(), limit).await?;
        ::metrics::histogram!(metrics::SEARCH_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(SearchProfilesResponse {
            profiles: rows.into_iter().map(to_pb).collect(),
        })
    }
}

#[tonic::async_trait]
impl Profiles for ProfilesApi {
    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let user = user_id(&request.get_ref().user_id)?;
        let row = self.get(user).await?;
        Ok(Response::new(to_pb(row)))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        Ok(Response::new(self.edit(request.into_inner()).await?))
    }

    async fn search_profiles(
        &self,
        request: Request<SearchProfilesRequest>,
    ) -> Result<Response<SearchProfilesResponse>, Status> {
        Ok(Response::new(self.search(request.into_inner()).await?))
    }
}
