//! The whole slice under test, in process: auth on its own database, the gateway in front of it.

use std::{net::SocketAddr, time::Duration};

use realchat_runtime::Shutdown;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::TestDatabase;

type Tweak<T> = Box<dyn FnOnce(&mut T) + Send>;
/// A tweak applied to several instances (every delivery replica).
type SharedTweak<T> = std::sync::Arc<dyn Fn(&mut T) + Send + Sync>;

/// Database connections each in-process service may hold. Tests run side by side, often beside a
/// `cargo xtask up` on the same PostgreSQL (100 connections by default): the services' production
/// pools (16 to 32 each) would run it out.
const TEST_POOL: u32 = 8;

/// Configures a [`TestApp`] before it starts.
pub struct TestAppBuilder {
    kafka: Option<realchat_events::KafkaOptions>,
    profile: bool,
    delivery_replicas: usize,
    delivery_redis: Option<String>,
    delivery: Vec<SharedTweak<realchat_delivery::Options>>,
    auth: Vec<Tweak<realchat_auth::Options>>,
    messaging: Vec<Tweak<realchat_messaging::Options>>,
    gateway: Vec<Tweak<realchat_gateway::Options>>,
}

impl std::fmt::Debug for TestAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAppBuilder").finish_non_exhaustive()
    }
}

impl TestAppBuilder {
    /// Uses these Kafka options (a private broker, say) instead of fresh topics on the shared one.
    pub fn kafka(mut self, kafka: realchat_events::KafkaOptions) -> Self {
        self.kafka = Some(kafka);
        self
    }

    /// Runs the profile service too (on a database of its own).
    pub fn profile(mut self) -> Self {
        self.profile = true;
        self
    }

    /// Runs this many delivery replicas (none by default), behind the gateway's `/v1/ws`.
    pub fn delivery_replicas(mut self, replicas: usize) -> Self {
        self.delivery_replicas = replicas;
        self
    }

    /// Points the delivery replicas at this Redis (a private one a test can stop).
    pub fn delivery_redis(mut self, url: impl Into<String>) -> Self {
        self.delivery_redis = Some(url.into());
        self
    }

    /// Changes every delivery replica's options.
    pub fn delivery(
        mut self,
        tweak: impl Fn(&mut realchat_delivery::Options) + Send + Sync + 'static,
    ) -> Self {
        self.delivery.push(std::sync::Arc::new(tweak));
        self
    }

    /// Changes the auth service's options.
    pub fn auth(
        mut self,
        tweak: impl FnOnce(&mut realchat_auth::Options) + Send + 'static,
    ) -> Self {
        self.auth.push(Box::new(tweak));
        self
    }

    /// Changes the messaging service's options.
    pub fn messaging(
        mut self,
        tweak: impl FnOnce(&mut realchat_messaging::Options) + Send + 'static,
    ) -> Self {
        self.messaging.push(Box::new(tweak));
        self
    }

    /// Changes the gateway's options.
    pub fn gateway(
        mut self,
        tweak: impl FnOnce(&mut realchat_gateway::Options) + Send + 'static,
    ) -> Self {
        self.gateway.push(Box::new(tweak));
        self
    }

    /// Starts auth and messaging on topics of their own, then the gateway, and waits until the
    /// gateway is ready.
    pub async fn spawn(self) -> TestApp {
        crate::log_if_asked();
        let kafka = match self.kafka {
            Some(kafka) => kafka,
            None => crate::kafka::fresh_topics().await,
        };
        let auth_db = TestDatabase::new("auth");
        let mut auth_options = realchat_auth::Options::with_database(auth_db.url());
        auth_options.hash_concurrency = 2;
        auth_options.database.max_connections = TEST_POOL;
        auth_options.kafka = kafka.clone();
        auth_options.internal_tls = crate::tls::internal("auth");
        for tweak in self.auth {
            tweak(&mut auth_options);
        }
        let auth = realchat_auth::Service::build(auth_options).await.unwrap();
        let auth_addr = auth.grpc_addr();
        let auth_shutdown = Shutdown::new(Duration::from_secs(5));
        tokio::spawn(auth.run(auth_shutdown.clone()));

        let messaging_db = TestDatabase::new("messaging");
        let mut messaging_options =
            realchat_messaging::Options::new(messaging_db.url(), kafka.clone());
        messaging_options.consumer_group = crate::unique("messaging-");
        messaging_options.database.max_connections = TEST_POOL;
        messaging_options.auth_endpoint = format!("http://{auth_addr}");
        messaging_options.internal_tls = crate::tls::internal("messaging");
        for tweak in self.messaging {
            tweak(&mut messaging_options);
        }
        let messaging = realchat_messaging::Service::build(messaging_options)
            .await
            .unwrap();
        let messaging_addr = messaging.grpc_addr();
        let messaging_shutdown = Shutdown::new(Duration::from_secs(5));
        tokio::spawn(messaging.run(messaging_shutdown.clone()));

        let mut profile_shutdown = None;
        let mut profile_db = None;
        let mut profile_addr = None;
        if self.profile {
            let db = TestDatabase::new("profile");
            let mut options = realchat_profile::Options::new(db.url(), kafka.clone());
            options.consumer_group = crate::unique("profile-");
            options.database.max_connections = TEST_POOL;
            options.auth_endpoint = format!("http://{auth_addr}");
            options.internal_tls = crate::tls::internal("profile");
            let service = realchat_profile::Service::build(options).await.unwrap();
            profile_addr = Some(service.grpc_addr());
            let shutdown = Shutdown::new(Duration::from_secs(5));
            tokio::spawn(service.run(shutdown.clone()));
            profile_shutdown = Some(shutdown);
            profile_db = Some(db);
        }

        let delivery_prefix = crate::unique("rcdelivery:") + ":";
        let delivery_group = crate::unique("delivery-");
        let delivery_redis = self.delivery_redis.unwrap_or_else(crate::redis_url);
        let mut delivery = Vec::new();
        for i in 0..self.delivery_replicas {
            let mut options = realchat_delivery::Options::new(
                format!("http://{auth_addr}"),
                format!("http://{messaging_addr}"),
                delivery_redis.clone(),
                kafka.clone(),
            );
            options.node_id = format!("delivery-{}", i + 1);
            options.redis_prefix = delivery_prefix.clone();
            options.consumer_group = delivery_group.clone();
            options.heartbeat_secs = 1;
            options.internal_tls = crate::tls::internal("delivery");
            for tweak in &self.delivery {
                tweak(&mut options);
            }
            delivery.push(DeliveryReplica::start(options).await);
        }

        let mut gateway_options = realchat_gateway::Options::new(
            format!("http://{auth_addr}"),
            format!("http://{messaging_addr}"),
            crate::redis_url(),
        );
        gateway_options.redis_prefix = crate::unique("rctest:") + ":";
        gateway_options.internal_tls = crate::tls::internal("gateway");
        if let Some(addr) = profile_addr {
            gateway_options.profile_endpoint = format!("http://{addr}");
        }
        if !delivery.is_empty() {
            gateway_options.delivery_endpoints = delivery
                .iter()
                .map(|d| format!("ws://{}", d.addr))
                .collect();
        }
        for tweak in self.gateway {
            tweak(&mut gateway_options);
        }
        let gateway = realchat_gateway::Service::build(gateway_options)
            .await
            .unwrap();
        let gateway_addr = gateway.local_addr();
        let gateway_admin = gateway.admin_addr();
        let gateway_shutdown = Shutdown::new(Duration::from_secs(5));
        tokio::spawn(gateway.run(gateway_shutdown.clone()));

        let app = TestApp {
            base: format!("http://{gateway_addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            auth_db,
            messaging_db,
            kafka,
            auth_addr,
            messaging_addr,
            gateway_admin,
            delivery,
            delivery_redis,
            delivery_prefix,
            profile_db,
            profile_addr,
            shutdowns: [
                Some(gateway_shutdown),
                profile_shutdown,
                Some(messaging_shutdown),
                Some(auth_shutdown),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        // The admin port is plain HTTP even when the public port serves TLS.
        let admin = format!("http://{}", app.gateway_admin);
        let http = app.http.clone();
        crate::eventually("the gateway to be ready", Duration::from_secs(15), || {
            let request = http.get(format!("{admin}/readyz"));
            async move {
                request
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
        for replica in &app.delivery {
            replica.wait_ready(&app.http).await;
        }
        app
    }
}

/// A delivery replica running in the test process.
#[derive(Debug)]
pub struct DeliveryReplica {
    /// Where its sockets connect.
    pub addr: SocketAddr,
    /// Its admin port (`/metrics`, `/readyz`).
    pub admin: SocketAddr,
    /// Its id in Redis.
    pub replica_id: String,
    /// Its lifecycle: trigger it to send SIGTERM's drain.
    pub shutdown: Shutdown,
    /// Finishes when the replica has drained.
    pub stopped: tokio::sync::watch::Receiver<bool>,
}

impl DeliveryReplica {
    /// Builds and runs a replica with these options.
    pub async fn start(options: realchat_delivery::Options) -> Self {
        let service = realchat_delivery::Service::build(options).await.unwrap();
        let (addr, admin) = (service.local_addr(), service.admin_addr());
        let replica_id = service.replica_id().to_owned();
        let shutdown = Shutdown::new(Duration::from_secs(10));
        let (done, stopped) = tokio::sync::watch::channel(false);
        let run = service.run(shutdown.clone());
        tokio::spawn(async move {
            let _ = run.await;
            let _ = done.send(true);
        });
        Self {
            addr,
            admin,
            replica_id,
            shutdown,
            stopped,
        }
    }

    /// Waits until its admin port says ready.
    pub async fn wait_ready(&self, http: &reqwest::Client) {
        let url = format!("http://{}/readyz", self.admin);
        crate::eventually(
            "a delivery replica to be ready",
            Duration::from_secs(15),
            || {
                let request = http.get(&url);
                async move {
                    request
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                }
            },
        )
        .await;
    }

    /// Its Prometheus exposition.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A running auth + gateway pair and an HTTP client for it.
#[derive(Debug)]
pub struct TestApp {
    /// Base URL of the gateway's public API.
    pub base: String,
    /// A client with a generous timeout.
    pub http: reqwest::Client,
    /// The auth service's database.
    pub auth_db: TestDatabase,
    /// The messaging service's database.
    pub messaging_db: TestDatabase,
    /// The broker and this app's own topics.
    pub kafka: realchat_events::KafkaOptions,
    /// The auth service's gRPC address.
    pub auth_addr: SocketAddr,
    /// The messaging service's gRPC address.
    pub messaging_addr: SocketAddr,
    /// The gateway's admin address (`/metrics`).
    pub gateway_admin: SocketAddr,
    /// The delivery replicas, if any were asked for.
    pub delivery: Vec<DeliveryReplica>,
    /// The Redis the delivery replicas use.
    pub delivery_redis: String,
    /// The Redis key prefix of the delivery replicas.
    pub delivery_prefix: String,
    /// The profile service's database, when it runs.
    pub profile_db: Option<TestDatabase>,
    /// The profile service's gRPC address, when it runs.
    pub profile_addr: Option<SocketAddr>,
    shutdowns: Vec<Shutdown>,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub username: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    /// Starts the default slice.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// Starts a configured slice.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            kafka: None,
            profile: false,
            delivery_replicas: 0,
            delivery_redis: None,
            delivery: Vec::new(),
            auth: Vec::new(),
            messaging: Vec::new(),
            gateway: Vec::new(),
        }
    }

    /// `POST` a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `GET` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Registers a fresh user and logs in.
    pub async fn signed_up(&self) -> Session {
        let username = crate::unique("u_");
        let password = "correct horse battery".to_owned();
        let registered = self
            .post(
                "/v1/auth/register",
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(registered.status(), StatusCode::CREATED);
        let login = self
            .post(
                "/v1/auth/login",
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(login.status(), StatusCode::OK);
        let body: Value = login.json().await.unwrap();
        Session {
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            username,
            password,
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a fresh user, logs in, and waits until messaging has heard of them (the
    /// `user.registered` event went through auth's outbox, Kafka and messaging's consumer).
    pub async fn member(&self) -> Session {
        let session = self.signed_up().await;
        let id: uuid::Uuid = session.user_id.parse().unwrap();
        let db = &self.messaging_db;
        crate::eventually(
            "messaging to know the new user",
            Duration::from_secs(20),
            || async move {
                let mut conn = db.connect().await;
                let known: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM known_users WHERE id = $1)")
                        .bind(id)
                        .fetch_one(&mut conn)
                        .await
                        .ok()?;
                known.then_some(())
            },
        )
        .await;
        session
    }

    /// `POST` with a bearer token.
    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `DELETE` with a bearer token.
    pub async fn delete_as(&self, token: &str, path: &str) -> Response {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The gateway's WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.base.replacen("http", "ws", 1))
    }

    /// A socket through the gateway, `ready` read.
    pub async fn socket(&self, session: &Session) -> crate::ws::Socket {
        crate::ws::Socket::connect(&self.ws_url(), &session.access_token).await
    }

    /// A socket straight to delivery replica `replica` (0-based), `ready` read.
    pub async fn socket_to(&self, replica: usize, session: &Session) -> crate::ws::Socket {
        let url = format!("ws://{}/v1/ws", self.delivery[replica].addr);
        crate::ws::Socket::connect(&url, &session.access_token).await
    }

    /// Creates a direct conversation between two members; returns its id.
    pub async fn direct(&self, a: &Session, b: &Session) -> String {
        let created = self
            .post_as(
                &a.access_token,
                "/v1/conversations",
                &json!({"kind": "direct", "member_ids": [b.user_id]}),
            )
            .await;
        assert!(created.status().is_success(), "{}", created.status());
        let body: Value = created.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a group of these members (the first creates it); returns its id.
    pub async fn group(&self, members: &[&Session]) -> String {
        let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        let created = self
            .post_as(
                &members[0].access_token,
                "/v1/conversations",
                &json!({"kind": "group", "member_ids": ids, "title": "test group"}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let body: Value = created.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Sends a message; returns its seq.
    pub async fn send(&self, from: &Session, conversation: &str, body: &str) -> i64 {
        let sent = self
            .post_as(
                &from.access_token,
                &format!("/v1/conversations/{conversation}/messages"),
                &json!({"client_msg_id": uuid::Uuid::new_v4().to_string(), "body": body}),
            )
            .await;
        assert_eq!(sent.status(), StatusCode::CREATED);
        let message: Value = sent.json().await.unwrap();
        message["seq"].as_i64().unwrap()
    }

    /// The gateway's Prometheus exposition.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.gateway_admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for replica in &self.delivery {
            replica.shutdown.trigger();
        }
        for shutdown in &self.shutdowns {
            shutdown.trigger();
        }
    }
}

/// Reads a counter's total (summed over labels matching `label_filter`) from an exposition.
pub fn counter_value(exposition: &str, name: &str, label_filter: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
