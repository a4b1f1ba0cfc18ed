//! [`Client`]: the HTTP API, one method per endpoint, with the login it keeps.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    Conversation, ConversationSummary, Error, Message, Presence, Profile, ProfileEdit, TokenStore,
    Tokens, User,
    error::retry_after,
    paths::{encode, segment},
    tls::tls_config,
};

/// Attempts [`Client::send`] makes before giving up on a transient failure.
const SEND_ATTEMPTS: u32 = 4;

/// Waits between a send's attempts: up to 400 ms, 800 ms, 1.6 s, jittered.
const SEND_BACKOFF: realchat_backoff::Backoff =
    realchat_backoff::Backoff::new(Duration::from_millis(400), Duration::from_secs(5));

/// The longest a send waits on a server's `Retry-After` before trying again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The login every clone of a [`Client`] shares.
#[derive(Default)]
struct Auth {
    tokens: Mutex<Option<Tokens>>,
    /// Held while a refresh is in flight. A refresh token works once (presenting it again revokes
    /// the whole login), so concurrent requests that all found their access token expired must
    /// refresh one at a time, and all but the first use the pair the first one got.
    refreshing: tokio::sync::Mutex<()>,
    store: Mutex<Option<Arc<dyn TokenStore>>>,
    /// The refresh tokens this client spent, newest last: a store that still holds one (its save
    /// failed) must not hand it back.
    spent: Mutex<Vec<String>>,
}

/// Spent refresh tokens remembered.
const SPENT_REMEMBERED: usize = 4;

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let logged_in = lock(&self.tokens).is_some();
        f.debug_struct("Auth")
            .field("logged_in", &logged_in)
            .finish_non_exhaustive()
    }
}

/// A client of one RealChat server. Clones share the login.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Arc<Auth>,
    /// What `wss://` sockets trust: the system's roots and any added ones.
    tls: Arc<rustls::ClientConfig>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8080`, or `https://...`, trusting
    /// the system's certificate authorities), not logged in.
    pub fn new(base: &str) -> Self {
        Self::build(base, &[]).unwrap_or_else(|error| {
            // Only a broken TLS setup gets here; plain HTTP still works.
            tracing::warn!(%error, "TLS unavailable; only http:// and ws:// will work");
            Self {
                http: reqwest::Client::new(),
                base: base.trim_end_matches('/').to_owned(),
                auth: Arc::default(),
                tls: Arc::new(tls_config(rustls::RootCertStore::empty())),
            }
        })
    }

    /// Like [`Client::new`], also trusting the certificates in `pem` (a private certificate
    /// authority, or a self-signed server), for HTTPS and for `wss://` sockets.
    pub fn with_root_certificates(base: &str, pem: &[u8]) -> Result<Self, Error> {
        Self::build(base, pem)
    }

    fn build(base: &str, pem: &[u8]) -> Result<Self, Error> {
        let bad = |e: &dyn std::fmt::Display| Error::Protocol(format!("root certificate: {e}"));
        let extra = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped; what is left is still trusted.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for cert in extra {
            http = http
                .add_root_certificate(reqwest::Certificate::from_der(&cert).map_err(|e| bad(&e))?);
            roots.add(cert).map_err(|e| bad(&e))?;
        }
        Ok(Self {
            http: http.build().map_err(|e| Error::Transport(e.into()))?,
            base: base.trim_end_matches('/').to_owned(),
            auth: Arc::default(),
            tls: Arc::new(tls_config(roots)),
        })
    }

    /// The TLS settings of `wss://` sockets.
    pub(crate) fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// A client that uses tokens from an earlier login.
    pub fn with_tokens(base: &str, tokens: Tokens) -> Self {
        let client = Self::new(base);
        client.set_tokens(tokens);
        client
    }

    /// Uses tokens from an earlier login from now on.
    pub fn set_tokens(&self, tokens: Tokens) {
        *lock(&self.auth.tokens) = Some(tokens);
    }

    /// Keeps the login in `store` too, for every clone of this client: each pair a login or a
    /// refresh gets is saved there at once, and before renewing an expired access token the
    /// client takes a newer pair from there if another process already renewed it.
    pub fn keep_tokens_in(&self, store: impl TokenStore + 'static) {
        *lock(&self.auth.store) = Some(Arc::new(store));
    }

    fn token_store(&self) -> Option<Arc<dyn TokenStore>> {
        lock(&self.auth.store).clone()
    }

    /// Keeps new tokens, in memory and in the store.
    fn store(&self, tokens: &Tokens) {
        *lock(&self.auth.tokens) = Some(tokens.clone());
        if let Some(store) = self.token_store() {
            store.save(tokens);
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The current tokens (they change on refresh: keep them if you store them, or see
    /// [`Client::keep_tokens_in`]).
    pub fn tokens(&self) -> Option<Tokens> {
        lock(&self.auth.tokens).clone()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Option<T>, Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Transport(e.into()))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Transport(e.into()))?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Protocol(e.to_string()));
        }
        Err(Error::from_answer(status.as_u16(), &bytes, retry_after))
    }

    /// A request with the access token; an expired one is refreshed once and the request repeated.
    async fn authed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>, Error> {
        let token = self.access_token()?;
        match self.call(method.clone(), path, body, Some(&token)).await {
            Err(error) if error.code() == Some("token_expired") => {
                let token = self.renew(&token).await?.access_token;
                self.call(method, path, body, Some(&token)).await
            }
            other => other,
        }
    }

    async fn authed_value<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Error> {
        self.authed(method, path, body)
            .await?
            .ok_or_else(|| Error::Protocol("an empty answer".into()))
    }

    /// The current access token.
    pub fn access_token(&self) -> Result<String, Error> {
        lock(&self.auth.tokens)
            .as_ref()
            .map(|t| t.access_token.clone())
            .ok_or(Error::NotLoggedIn)
    }

    /// Creates an account.
    pub async fn register(&self, username: &str, password: &str) -> Result<User, Error> {
        let body = json!({"username": username, "password": password});
        self.call(Method::POST, "/v1/auth/register", Some(&body), None)
            .await?
            .ok_or_else(|| Error::Protocol("an empty answer".into()))
    }

    /// Logs in and keeps the tokens.
    pub async fn login(&self, username: &str, password: &str) -> Result<Tokens, Error> {
        let body = json!({"username": username, "password": password});
        let tokens: Tokens = self
            .call(Method::POST, "/v1/auth/login", Some(&body), None)
            .await?
            .ok_or_else(|| Error::Protocol("an empty answer".into()))?;
        self.store(&tokens);
        Ok(tokens)
    }

    /// Exchanges the refresh token for a new pair (the old one is spent).
    pub async fn refresh(&self) -> Result<Tokens, Error> {
        self.refresh_unless(None).await
    }

    /// A fresh pair after a request was refused with the access token `stale`: refreshed now,
    /// or the pair another request already got meanwhile.
    pub(crate) async fn renew(&self, stale: &str) -> Result<Tokens, Error> {
        self.refresh_unless(Some(stale)).await
    }

    async fn refresh_unless(&self, stale: Option<&str>) -> Result<Tokens, Error> {
        let _turn = self.auth.refreshing.lock().await;
        let _exclusive = match self.token_store() {
            Some(store) => Some(
                tokio::task::spawn_blocking(move || store.exclusive())
                    .await
                    .map_err(|e| {
                        Error::Transport(format!("locking the token store: {e}").into())
                    })?,
            ),
            None => None,
        };
        let mut current = self.tokens().ok_or(Error::NotLoggedIn)?;
        // Another process sharing the store may have renewed the login: its pair is the live
        // one, and ours is spent.
        if let Some(stored) = self.token_store().and_then(|store| store.load())
            && stored.user_id == current.user_id
            && stored.refresh_token != current.refresh_token
            && !lock(&self.auth.spent).contains(&stored.refresh_token)
        {
            *lock(&self.auth.tokens) = Some(stored.clone());
            current = stored;
        }
        if stale.is_some_and(|stale| stale != current.access_token) {
            return Ok(current);
        }
        let body = json!({"refresh_token": current.refresh_token});
        let answer = self
            .call(Method::POST, "/v1/auth/refresh", Some(&body), None)
            .await;
        if !matches!(&answer, Err(error) if error.is_transient()) {
            // Answered: the token is spent whatever the answer was.
            let mut spent = lock(&self.auth.spent);
            if spent.len() == SPENT_REMEMBERED {
                spent.remove(0);
            }
            spent.push(current.refresh_token);
        }
        let tokens: Tokens = answer?.ok_or_else(|| Error::Protocol("an empty answer".into()))?;
        self.store(&tokens);
        Ok(tokens)
    }

    /// Ends the login (its refresh tokens stop working).
    pub async fn logout(&self) -> Result<(), Error> {
        let Some(tokens) = lock(&self.auth.tokens).take() else {
            return Ok(());
        };
        let body = json!({"refresh_token": tokens.refresh_token});
        self.call::<Value>(Method::POST, "/v1/auth/logout", Some(&body), None)
            .await
            .map(drop)
    }

    /// Who the access token belongs to.
    pub async fn me(&self) -> Result<User, Error> {
        self.authed_value(Method::GET, "/v1/auth/me", None).await
    }

    /// One's own profile.
    pub async fn my_profile(&self) -> Result<Profile, Error> {
        self.authed_value(Method::GET, "/v1/users/me", None).await
    }

    /// Changes one's own profile.
    pub async fn edit_profile(&self, edit: &ProfileEdit) -> Result<Profile, Error> {
        let mut body = serde_json::Map::new();
        if let Some(name) = &edit.display_name {
            body.insert("display_name".into(), json!(name));
        }
        if let Some(bio) = &edit.bio {
            body.insert("bio".into(), json!(bio));
        }
        if let Some(url) = &edit.avatar_url {
            body.insert("avatar_url".into(), json!(url));
        }
        self.authed_value(Method::PATCH, "/v1/users/me", Some(&Value::Object(body)))
            .await
    }

    /// Someone's profile.
    pub async fn profile(&self, user_id: &str) -> Result<Profile, Error> {
        let user_id = segment("user id", user_id)?;
        self.authed_value(Method::GET, &format!("/v1/users/{user_id}"), None)
            .await
    }

    /// Profiles whose username starts with `prefix`.
    pub async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<Profile>, Error> {
        #[derive(Deserialize)]
        struct Found {
            users: Vec<Profile>,
        }
        let query = format!("/v1/users?prefix={}&limit={limit}", encode(prefix));
        let found: Found = self.authed_value(Method::GET, &query, None).await?;
        Ok(found.users)
    }

    /// The direct conversation with `user_id` (created, or the existing one).
    pub async fn open_direct(&self, user_id: &str) -> Result<Conversation, Error> {
        let body = json!({"kind": "direct", "member_ids": [user_id]});
        self.authed_value(Method::POST, "/v1/conversations", Some(&body))
            .await
    }

    /// A new group.
    pub async fn create_group(
        &self,
        member_ids: &[&str],
        title: &str,
    ) -> Result<Conversation, Error> {
        let body = json!({"kind": "group", "member_ids": member_ids, "title": title});
        self.authed_value(Method::POST, "/v1/conversations", Some(&body))
            .await
    }

    /// One conversation.
    pub async fn conversation(&self, conversation_id: &str) -> Result<Conversation, Error> {
        let id = segment("conversation id", conversation_id)?;
        self.authed_value(Method::GET, &format!("/v1/conversations/{id}"), None)
            .await
    }

    /// Adds someone to a group; answers the group as it is now.
    pub async fn add_member(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<Conversation, Error> {
        let id = segment("conversation id", conversation_id)?;
        let body = json!({"user_id": user_id});
        self.authed_value(
            Method::POST,
            &format!("/v1/conversations/{id}/members"),
            Some(&body),
        )
        .await
    }

    /// Removes someone (oneself included) from a group.
    pub async fn remove_member(&self, conversation_id: &str, user_id: &str) -> Result<(), Error> {
        let id = segment("conversation id", conversation_id)?;
        let user_id = segment("user id", user_id)?;
        self.authed::<Value>(
            Method::DELETE,
            &format!("/v1/conversations/{id}/members/{user_id}"),
            None,
        )
        .await
        .map(drop)
    }

    /// One's conversations, most recent activity first.
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>, Error> {
        #[derive(Deserialize)]
        struct List {
            conversations: Vec<ConversationSummary>,
        }
        let list: List = self
            .authed_value(Method::GET, "/v1/conversations", None)
            .await?;
        Ok(list.conversations)
    }

    /// Sends a message, retrying transient failures with the same `client_msg_id` (so the server
    /// keeps exactly one copy).
    pub async fn send(&self, conversation_id: &str, body: &str) -> Result<Message, Error> {
        let client_msg_id = uuid::Uuid::new_v4().to_string();
        self.send_with_id(conversation_id, &client_msg_id, body)
            .await
    }

    /// Sends a message with one's own idempotency key.
    pub async fn send_with_id(
        &self,
        conversation_id: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Result<Message, Error> {
        let request = json!({"client_msg_id": client_msg_id, "body": body});
        let id = segment("conversation id", conversation_id)?;
        let path = format!("/v1/conversations/{id}/messages");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.authed_value(Method::POST, &path, Some(&request)).await {
                Err(error) if error.is_transient() && attempt < SEND_ATTEMPTS => {
                    let backoff = SEND_BACKOFF.delay(attempt);
                    let asked = error.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER);
                    tokio::time::sleep(backoff.max(asked)).await;
                }
                other => return other,
            }
        }
    }

    /// Messages after `after_seq`, ascending.
    pub async fn history_after(
        &self,
        conversation_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>, Error> {
        let id = segment("conversation id", conversation_id)?;
        self.history(&format!(
            "/v1/conversations/{id}/messages?after_seq={after_seq}&limit={limit}"
        ))
        .await
    }

    /// Messages before `before_seq`, descending (paging back).
    pub async fn history_before(
        &self,
        conversation_id: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>, Error> {
        let id = segment("conversation id", conversation_id)?;
        self.history(&format!(
            "/v1/conversations/{id}/messages?before_seq={before_seq}&limit={limit}"
        ))
        .await
    }

    /// The newest messages, descending.
    pub async fn latest(&self, conversation_id: &str, limit: u32) -> Result<Vec<Message>, Error> {
        let id = segment("conversation id", conversation_id)?;
        self.history(&format!("/v1/conversations/{id}/messages?limit={limit}"))
            .await
    }

    async fn history(&self, path: &str) -> Result<Vec<Message>, Error> {
        #[derive(Deserialize)]
        struct Page {
            messages: Vec<Message>,
        }
        let page: Page = self.authed_value(Method::GET, path, None).await?;
        Ok(page.messages)
    }

    /// Moves one's read position forward.
    pub async fn mark_read(&self, conversation_id: &str, seq: i64) -> Result<(), Error> {
        let body = json!({"seq": seq});
        let id = segment("conversation id", conversation_id)?;
        self.authed::<Value>(
            Method::POST,
            &format!("/v1/conversations/{id}/read"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// The presence of some users.
    pub async fn presence(&self, user_ids: &[&str]) -> Result<Vec<Presence>, Error> {
        #[derive(Deserialize)]
        struct List {
            presence: Vec<Presence>,
        }
        let list: List = self
            .authed_value(
                Method::GET,
                &format!("/v1/presence?user_ids={}", encode(&user_ids.join(","))),
                None,
            )
            .await?;
        Ok(list.presence)
    }

    /// The WebSocket URL of the server.
    pub(crate) fn socket_url(&self) -> String {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{base}/v1/ws")
    }
}
