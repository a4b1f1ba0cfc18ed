//! The `realchat.messaging.v1.Messaging` gRPC service: parse, check, call the store.

use std::time::Instant;

use realchat_proto::messaging::v1::{
    self as pb, AddMemberRequest, CreateConversationRequest, CreateConversationResponse,
    GetConversationRequest, HistoryRequest, HistoryResponse, ListConversationsRequest,
    ListConversationsResponse, ListMembersRequest, ListMembersResponse, MarkReadRequest,
    MarkReadResponse, RemoveMemberRequest, RemoveMemberResponse, SendRequest, SendResponse,
    SharedWithRequest, SharedWithResponse, messaging_server::Messaging,
};
use realchat_runtime::{
    clients::{self, AuthClient},
    telemetry::propagation::current_traceparent,
};
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{self, Body, ClientMsgId, Kind, MAX_GROUP_MEMBERS, Page},
    error::Error,
    metrics,
    sends::Sends,
    store::{self, Conversation, MessageRow, NewMessage, unix_ms},
};

/// Most conversations a list returns (the most recently active ones).
const MAX_LISTED_CONVERSATIONS: i64 = 500;
/// Most users one `SharedWith` may ask about (a presence query's limit).
const MAX_SHARED_WITH: usize = 100;
/// Members one ListMembers page holds by default, and at most.
const DEFAULT_MEMBERS_PAGE: u32 = 100;
const MAX_MEMBERS_PAGE: u32 = 1000;

/// The messaging service's request handlers.
#[derive(Clone, Debug)]
pub struct MessagingApi {
    pub(crate) pool: PgPool,
    pub(crate) sends: Sends,
    /// Confirms users whose registration event has not reached messaging yet.
    pub(crate) auth: AuthClient,
}

fn caller(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::InvalidArgument("caller_id must be a UUID".into()))
}

/// A conversation id from a path: malformed is simply "not found".
fn conversation_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::NotFound)
}

fn to_pb_conversation(conversation: Conversation) -> pb::Conversation {
    let Conversation {
        row,
        members,
        member_count,
    } = conversation;
    pb::Conversation {
        id: row.id.to_string(),
        kind: row.kind,
        has_title: row.title.is_some(),
        title: row.title.unwrap_or_default(),
        member_ids: members.iter().map(Uuid::to_string).collect(),
        created_at_ms: unix_ms(row.created_at),
        last_seq: row.last_seq,
        member_count: u32::try_from(member_count).unwrap_or(u32::MAX),
    }
}

fn to_pb_message(message: MessageRow) -> pb::Message {
    pb::Message {
        id: message.id.to_string(),
        conversation_id: message.conversation_id.to_string(),
        seq: message.seq,
        sender_id: message.sender_id.to_string(),
        client_msg_id: message.client_msg_id,
        body: message.body,
        created_at_ms: unix_ms(message.created_at),
    }
}

impl MessagingApi {
    /// Refuses ids that no one registered with. Registration events are how messaging learns
    /// users, but one can still be on its way (or the broker down) when the new user is added to
    /// a conversation: ids not known here are confirmed with auth and recorded, so the next time
    /// is local. Only ids auth does not know either are an `invalid_argument`; if auth cannot be
    /// asked, the answer is `unavailable` and the client retries.
    async fn check_registered(&self, users: &[Uuid]) -> Result<(), Error> {
        let unknown = store::unknown_users(&self.pool, users).await?;
        if unknown.is_empty() {
            return Ok(());
        }
        let confirmed = clients::registered_users(&self.auth, &unknown)
            .await
            .map_err(Error::AuthUnavailable)?;
        for user in &confirmed {
            let at = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(user.registered_at_ms) * 1_000_000,
            )
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
            store::remember_user(&self.pool, user.id, &user.username, at).await?;
        }
        ::metrics::counter!(metrics::USERS_CONFIRMED_WITH_AUTH, "outcome" => "registered")
            .increment(confirmed.len() as u64);
        let missing: Vec<String> = unknown
            .iter()
            .filter(|id| !confirmed.iter().any(|user| user.id == **id))
            .map(Uuid::to_string)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        ::metrics::counter!(metrics::USERS_CONFIRMED_WITH_AUTH, "outcome" => "unknown")
            .increment(missing.len() as u64);
        Err(Error::InvalidArgument(if missing.len() == 1 {
            format!("unknown user id: {}", missing[0])
        } else {
            format!("unknown user ids: {}", missing.join(", "))
        }))
    }

    async fn shared_with(&self, request: SharedWithRequest) -> Result<SharedWithResponse, Error> {
        let caller = caller(&request.caller_id)?;
        if request.user_ids.len() > MAX_SHARED_WITH {
            return Err(Error::InvalidArgument(format!(
                "user_ids must name at most {MAX_SHARED_WITH} users"
            )));
        }
        let users = request
            .user_ids
            .iter()
            .map(|id| domain::parse_user_id(id, "user_ids"))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = store::shared_with(&self.pool, caller, &users).await?;
        Ok(SharedWithResponse {
            user_ids: shared.iter().map(Uuid::to_string).collect(),
        })
    }

    async fn create_conversation(
        &self,
        request: CreateConversationRequest,
    ) -> Result<CreateConversationResponse, Error> {
        let caller = caller(&request.caller_id)?;
        let kind = Kind::parse(&request.kind)?;
        let others = request
            .member_ids
            .iter()
            .map(|id| domain::parse_user_id(id, "member_ids"))
            .collect::<Result<Vec<_>, _>>()?;
        let members = domain::members_of(kind, caller, &others)?;
        let title = match kind {
            Kind::Group => domain::parse_title(request.has_title.then_some(request.title))?,
            Kind::Direct => None,
        };
        self.check_registered(&members).await?;
        let (conversation, created) =
            store::create(&self.pool, caller, kind, &members, title).await?;
        if created {
            ::metrics::counter!(metrics::CONVERSATIONS_CREATED, "kind" => kind.as_str())
                .increment(1);
        }
        Ok(CreateConversationResponse {
            conversation: Some(to_pb_conversation(conversation)),
            created,
        })
    }

    async fn add_member(&self, request: AddMemberRequest) -> Result<pb::Conversation, Error> {
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        let user = domain::parse_user_id(&request.user_id, "user_id")?;
        self.check_registered(&[user]).await?;
        let conversation =
            store::add_member(&self.pool, caller, conversation, user, MAX_GROUP_MEMBERS).await?;
        Ok(to_pb_conversation(conversation))
    }

    async fn send(&self, request: SendRequest) -> Result<SendResponse, Error> {
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        let client_msg_id = ClientMsgId::parse(request.client_msg_id)?;
        let body = Body::parse(request.body)?;
        let started = Instant::now();
        let (message, created) = self
            .sends
            .send(NewMessage {
                caller,
                conversation,
                client_msg_id,
                body,
                traceparent: current_traceparent(),
            })
            .await?;
        ::metrics::histogram!(metrics::SEND_SECONDS).record(started.elapsed().as_secs_f64());
        let outcome = if created { "created" } else { "duplicate" };
        ::metrics::counter!(metrics::SENDS, "outcome" => outcome).increment(1);
        Ok(SendResponse {
            message: Some(to_pb_message(message)),
            created,
        })
    }

    async fn history(&self, request: HistoryRequest) -> Result<HistoryResponse, Error> {
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        let page = Page::parse(request.after_seq, request.before_seq)?;
        let limit = domain::page_limit(request.limit)?;
        let messages = store::history(&self.pool, caller, conversation, page, limit).await?;
        Ok(HistoryResponse {
            messages: messages.into_iter().map(to_pb_message).collect(),
        })
    }

    async fn list(
        &self,
        request: ListConversationsRequest,
    ) -> Result<ListConversationsResponse, Error> {
        let caller = caller(&request.caller_id)?;
        let summaries = store::list(&self.pool, caller, MAX_LISTED_CONVERSATIONS).await?;
        Ok(ListConversationsResponse {
            conversations: summaries
                .into_iter()
                .map(|s| pb::ConversationSummary {
                    conversation: Some(to_pb_conversation(s.conversation)),
                    unread_count: s.unread_count,
                    last_message: s.last_message.map(to_pb_message),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl Messaging for MessagingApi {
    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<CreateConversationResponse>, Status> {
        Ok(Response::new(
            MessagingApi::create_conversation(self, request.into_inner()).await?,
        ))
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let request = request.into_inner();
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        let conversation = store::conversation(&self.pool, caller, conversation).await?;
        Ok(Response::new(to_pb_conversation(conversation)))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let request = request.into_inner();
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        let after = match request.after_user_id.as_str() {
            "" => None,
            after => Some(domain::parse_user_id(after, "after").map_err(Error::from)?),
        };
        let limit = match request.limit {
            0 => DEFAULT_MEMBERS_PAGE,
            n if n <= MAX_MEMBERS_PAGE => n,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "limit must be 1..={MAX_MEMBERS_PAGE}"
                ))
                .into());
            }
        };
        let (page, count) =
            store::members_page(&self.pool, caller, conversation, after, i64::from(limit)).await?;
        Ok(Response::new(ListMembersResponse {
            member_ids: page.iter().map(Uuid::to_string).collect(),
            member_count: u32::try_from(count).unwrap_or(u32::MAX),
        }))
    }

    async fn shared_with(
        &self,
        request: Request<SharedWithRequest>,
    ) -> Result<Response<SharedWithResponse>, Status> {
        Ok(Response::new(
            MessagingApi::shared_with(self, request.into_inner()).await?,
        ))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        Ok(Response::new(
            MessagingApi::add_member(self, request.into_inner()).await?,
        ))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let request = request.into_inner();
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        let user = Uuid::parse_str(&request.user_id)
            .map_err(|_| Error::MemberNotFound("that user is not a member".into()))?;
        store::remove_member(&self.pool, caller, conversation, user).await?;
        Ok(Response::new(RemoveMemberResponse {}))
    }

    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        Ok(Response::new(
            MessagingApi::send(self, request.into_inner()).await?,
        ))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        Ok(Response::new(
            MessagingApi::history(self, request.into_inner()).await?,
        ))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<MarkReadResponse>, Status> {
        let request = request.into_inner();
        let caller = caller(&request.caller_id)?;
        let conversation = conversation_id(&request.conversation_id)?;
        if request.seq < 0 {
            return Err(Error::InvalidArgument("seq must be >= 0".into()).into());
        }
        store::mark_read(&self.pool, caller, conversation, request.seq).await?;
        Ok(Response::new(MarkReadResponse {}))
    }
}
