//! API.md § Profiles.

use axum::extract::State;
use realchat_proto::profile::v1::{
    self as pb, GetProfileRequest, NullableString, SearchProfilesRequest, UpdateProfileRequest,
};
use realchat_runtime::format::timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{AuthUser, Json, Path, Query},
};

/// A profile.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileView {
    #[schema(format = Uuid)]
    user_id: String,
    username: String,
    display_name: String,
    bio: Option<String>,
    avatar_url: Option<String>,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<pb::Profile> for ProfileView {
    fn from(p: pb::Profile) -> Self {
        Self {
            user_id: p.user_id,
            username: p.username,
            display_name: p.display_name,
            bio: p.has_bio.then_some(p.bio),
            avatar_url: p.has_avatar_url.then_some(p.avatar_url),
            updated_at: timestamp(p.updated_at_ms),
        }
    }
}

/// Profiles found by a search.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileList {
    users: Vec<ProfileView>,
}

/// Tells "absent" from "null": absent is `None`, null is `Some(None)`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Changes to the caller's profile: only the fields given change; `null` clears `bio` or
/// `avatar_url`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileEdit {
    /// 1 to 64 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64)]
    display_name: Option<Option<String>>,
    /// Up to 500 characters; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    bio: Option<Option<String>>,
    /// An `https` URL of up to 2,048 characters; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = "^https://")]
    avatar_url: Option<Option<String>>,
}

fn nullable(field: Option<Option<String>>) -> Option<NullableString> {
    field.map(|value| NullableString { value })
}

/// A directory search.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct Search {
    /// Username prefix, case-insensitive; empty lists everyone.
    #[serde(default)]
    #[param(max_length = 32)]
    prefix: String,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/users/me", tag = "profiles", security(("bearer" = [])),
    responses((status = 200, body = ProfileView),
        (status = 404, body = ErrorBody, description = "not created yet: it follows registration within a moment")))]
pub(crate) async fn me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<ProfileView>, ApiError> {
    let profile = state
        .profile
        .clone()
        .get_profile(GetProfileRequest {
            user_id: user.user_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(axum::Json(profile.into()))
}

/// Changes the caller's profile.
#[utoipa::path(patch, path = "/v1/users/me", tag = "profiles", security(("bearer" = [])),
    request_body = ProfileEdit,
    responses((status = 200, body = ProfileView), (status = 400, body = ErrorBody)))]
pub(crate) async fn edit(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<ProfileView>, ApiError> {
    // Through a map, so only a JSON object is taken (serde would also read a struct from an
    // array, field by field).
    let edit: ProfileEdit = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let profile = state
        .profile
        .clone()
        .update_profile(UpdateProfileRequest {
            user_id: user.user_id.to_string(),
            display_name: nullable(edit.display_name),
            bio: nullable(edit.bio),
            avatar_url: nullable(edit.avatar_url),
        })
        .await?
        .into_inner();
    Ok(axum::Json(profile.into()))
}

/// Anyone's profile.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "profiles", security(("bearer" = [])),
    params(("user_id" = String, Path, format = Uuid)),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    _user: AuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<ProfileView>, ApiError> {
    let profile = state
        .profile
        .clone()
        .get_profile(GetProfileRequest { user_id: id })
        .await?
        .into_inner();
    Ok(axum::Json(profile.into()))
}

/// The directory: profiles whose username starts with a prefix, ordered by username.
#[utoipa::path(get, path = "/v1/users", tag = "profiles", security(("bearer" = [])),
    params(Search),
    responses((status = 200, body = ProfileList), (status = 400, body = ErrorBody)))]
pub(crate) async fn search(
    State(state): State<AppState>,
    _user: AuthUser,
    Query(search): Query<Search>,
) -> Result<axum::Json<ProfileList>, ApiError> {
    let found = state
        .profile
        .clone()
        .search_profiles(SearchProfilesRequest {
            prefix: search.prefix,
            limit: search.limit,
        })
        .await?
        .into_inner();
    Ok(axum::Json(ProfileList {
        users: found.profiles.into_iter().map(Into::into).collect(),
    }))
}
