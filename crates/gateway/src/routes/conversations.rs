//! API.md § Conversations and § Messages.

use axum::{extract::State, http::StatusCode};
use realchat_proto::messaging::v1::{
    AddMemberRequest, CreateConversationRequest, GetConversationRequest, HistoryRequest,
    ListConversationsRequest, ListMembersRequest, MarkReadRequest, RemoveMemberRequest,
    SendRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::{ConversationSummaryView, ConversationView, MessageView};
use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{AuthUser, Json, Path, Query},
};

/// A new conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewConversation {
    /// `direct` (exactly you and one other user) or `group` (up to 1,000 members).
    kind: String,
    /// The other members; listing yourself is harmless.
    member_ids: Vec<String>,
    /// Groups only: up to 200 characters.
    #[schema(max_length = 200)]
    title: Option<String>,
}

/// The caller's conversations.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationList {
    conversations: Vec<ConversationSummaryView>,
}

/// A member to add.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewMember {
    #[schema(format = Uuid)]
    user_id: String,
}

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewMessage {
    /// Your idempotency key: a retry with the same one returns the original message. 1 to 128
    /// bytes, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    client_msg_id: String,
    /// 1 to 4,000 characters.
    #[schema(min_length = 1, max_length = 4000)]
    body: String,
}

/// A page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessagePage {
    messages: Vec<MessageView>,
}

/// Which messages: after a seq (ascending), before one (descending), or the newest (descending).
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct HistoryParams {
    #[param(minimum = 0)]
    after_seq: Option<i64>,
    #[param(minimum = 1)]
    before_seq: Option<i64>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// A read position.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ReadPosition {
    #[schema(minimum = 0)]
    seq: i64,
}

/// Creates a conversation; for a direct pair that already has one, returns it with `200`.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = NewConversation,
    responses(
        (status = 201, body = ConversationView, description = "created"),
        (status = 200, body = ConversationView, description = "the existing direct conversation"),
        (status = 400, body = ErrorBody, description = "invalid_argument: bad kind, member count, unknown user ids"),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<NewConversation>,
) -> Result<(StatusCode, axum::Json<ConversationView>), ApiError> {
    crate::middleware::limit_membership(&state, user.user_id).await?;
    let response = state
        .messaging
        .clone()
        .create_conversation(CreateConversationRequest {
            caller_id: user.user_id.to_string(),
            kind: body.kind,
            member_ids: body.member_ids,
            has_title: body.title.is_some(),
            title: body.title.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(response.conversation.unwrap_or_default().into()),
    ))
}

/// The caller's conversations, most recent activity first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = ConversationList)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<ConversationList>, ApiError> {
    let response = state
        .messaging
        .clone()
        .list_conversations(ListConversationsRequest {
            caller_id: user.user_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(axum::Json(ConversationList {
        conversations: response.conversations.into_iter().map(Into::into).collect(),
    }))
}

/// One conversation the caller belongs to.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let conversation = state
        .messaging
        .clone()
        .get_conversation(GetConversationRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
        })
        .await?
        .into_inner();
    Ok(axum::Json(conversation.into()))
}

/// Which members: those after a user id, ordered by id.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct MembersParams {
    /// The last member id of the previous page; absent for the first.
    #[param(format = Uuid)]
    after: Option<String>,
    /// 1 to 1,000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A page of members.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberPage {
    /// Member ids, ascending; fewer than `limit` on the last page.
    member_ids: Vec<String>,
    /// How many members the conversation has.
    member_count: u32,
}

/// The members of a conversation the caller belongs to, a page at a time.
#[utoipa::path(get, path = "/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid), MembersParams),
    responses((status = 200, body = MemberPage), (status = 404, body = ErrorBody)))]
pub(crate) async fn members(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(params): Query<MembersParams>,
) -> Result<axum::Json<MemberPage>, ApiError> {
    if params.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::invalid_argument("limit must be 1..=1000"));
    }
    let page = state
        .messaging
        .clone()
        .list_members(ListMembersRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
            after_user_id: params.after.unwrap_or_default(),
            limit: params.limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    Ok(axum::Json(MemberPage {
        member_ids: page.member_ids,
        member_count: page.member_count,
    }))
}

/// Adds a member to a group.
#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = NewMember,
    responses(
        (status = 200, body = ConversationView),
        (status = 400, body = ErrorBody, description = "unknown user, or the group is full"),
        (status = 403, body = ErrorBody, description = "not a group"),
        (status = 404, body = ErrorBody),
    ))]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(body): Json<NewMember>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    crate::middleware::limit_membership(&state, user.user_id).await?;
    let conversation = state
        .messaging
        .clone()
        .add_member(AddMemberRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
            user_id: body.user_id,
        })
        .await?
        .into_inner();
    Ok(axum::Json(conversation.into()))
}

/// Removes a member from a group: yourself, or anyone if you created the group.
#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user_id}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid), ("user_id" = String, Path, format = Uuid)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, member)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .messaging
        .clone()
        .remove_member(RemoveMemberRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
            user_id: member,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a message. `201` means it is durable; a retry with the same `client_msg_id` answers
/// `200` with the original.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = NewMessage,
    responses(
        (status = 201, body = MessageView, description = "stored"),
        (status = 200, body = MessageView, description = "a retry: the original message"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub(crate) async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(body): Json<NewMessage>,
) -> Result<(StatusCode, axum::Json<MessageView>), ApiError> {
    let response = state
        .messaging
        .clone()
        .send(SendRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
            client_msg_id: body.client_msg_id,
            body: body.body,
        })
        .await?
        .into_inner();
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(response.message.unwrap_or_default().into()),
    ))
}

/// A page of history.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid), HistoryParams),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<axum::Json<MessagePage>, ApiError> {
    let response = state
        .messaging
        .clone()
        .history(HistoryRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
            after_seq: params.after_seq,
            before_seq: params.before_seq,
            limit: params.limit,
        })
        .await?
        .into_inner();
    Ok(axum::Json(MessagePage {
        messages: response.messages.into_iter().map(Into::into).collect(),
    }))
}

/// Moves the caller's read position forward (never back).
#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = ReadPosition,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn mark_read(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(body): Json<ReadPosition>,
) -> Result<StatusCode, ApiError> {
    state
        .messaging
        .clone()
        .mark_read(MarkReadRequest {
            caller_id: user.user_id.to_string(),
            conversation_id: id,
            seq: body.seq,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
