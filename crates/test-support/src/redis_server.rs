//! A private `redis-server` a test can stop and start.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use realchat_runtime::redis_client::RedisOptions;

use crate::tls::{ServerCert, TestCa};

/// A Redis server of the test's own, on a free port, keeping nothing on disk.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// How a TLS server is set up: its certificate, the CA clients trust, and the AUTH password.
#[derive(Debug)]
struct Tls {
    server: crate::tls::ServerCert,
    ca: std::path::PathBuf,
    password: String,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        let mut server = Self {
            port: crate::free_port(),
            child: None,
            tls: None,
        };
        server.resume().await;
        server
    }

    /// Starts one that takes only TLS connections (certificate `server`, issued by the CA whose
    /// certificate is `ca`) and only clients that give `password`, as a managed Redis with
    /// in-transit encryption and an AUTH token does.
    pub async fn start_tls(ca: &TestCa, server: &ServerCert, password: &str) -> Self {
        let mut redis = Self {
            port: crate::free_port(),
            child: None,
            tls: Some(Tls {
                server: server.clone(),
                ca: ca.cert.clone(),
                password: password.to_owned(),
            }),
        };
        redis.resume().await;
        redis
    }

    /// Its URL: `rediss://:<password>@localhost:<port>` for a TLS one.
    pub fn url(&self) -> String {
        match &self.tls {
            Some(tls) => format!("rediss://:{}@localhost:{}", tls.password, self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The options a service is given to reach it (the URL, and the CA for a TLS one).
    pub fn options(&self) -> RedisOptions {
        let mut options = RedisOptions::new(self.url());
        options.ca_file = self.tls.as_ref().map(|tls| tls.ca.clone());
        options
    }

    /// Kills it (SIGKILL): from now on connections are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.server.cert)
                .arg("--tls-key-file")
                .arg(&tls.server.key)
                .args(["--tls-auth-clients", "no", "--requirepass", &tls.password]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run this test");
        self.child = Some(child);
        let client = self.options().client().unwrap();
        crate::eventually(
            "the private redis-server to answer",
            Duration::from_secs(10),
            || {
                let client = client.clone();
                async move {
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                }
            },
        )
        .await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
