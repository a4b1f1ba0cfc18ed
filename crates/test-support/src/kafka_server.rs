//! A private Kafka-protocol broker (Tansu, SQLite storage) a test can stop and start.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A broker of the test's own, on a free port, keeping its data in a temporary directory so it
/// survives a restart like a real one.
#[derive(Debug)]
pub struct KafkaServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The TLS terminator clients go through, when there is one.
    tls: Option<crate::tls::Stunnel>,
    /// Whether clients must log in (SASL) before any other request.
    authentication: bool,
}

/// Where the `tansu` binary is: `REALCHAT_TEST_TANSU`, else `$CARGO_HOME/bin/tansu`, else the PATH.
fn tansu() -> PathBuf {
    if let Ok(path) = std::env::var("REALCHAT_TEST_TANSU") {
        return path.into();
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let installed = cargo_home.join("bin").join("tansu");
    if installed.exists() {
        installed
    } else {
        "tansu".into()
    }
}

impl KafkaServer {
    /// Starts one and waits until it accepts connections.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts one that clients reach only over TLS, through a terminator with `server`'s
    /// certificate (for `localhost`), as they would reach a managed cluster: the broker
    /// advertises the terminator's address, so every connection after the bootstrap one goes
    /// through it too.
    pub async fn start_behind_tls(server: &crate::tls::ServerCert) -> Self {
        Self::start_with(Some(server)).await
    }

    /// Starts one behind TLS, as [`Self::start_behind_tls`], that also refuses every request
    /// until the client has logged in with SCRAM-SHA-512 as `user` (MSK's `sasl_ssl` listener).
    ///
    /// The broker keeps its users in its storage and, once it requires a login, refuses the
    /// request that creates one from a client that has none; so the user is created first, on
    /// the same storage, with the login not yet required.
    pub async fn start_with_scram_behind_tls(
        server: &crate::tls::ServerCert,
        user: &str,
        password: &str,
    ) -> Self {
        let mut broker = Self::start_with(Some(server)).await;
        let created = Command::new(tansu())
            .current_dir(&broker.dir)
            .args(["user", "create", "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .args([user, password])
            .stdin(Stdio::null())
            .output()
            .expect("the tansu binary runs");
        assert!(
            created.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        broker.stop();
        broker.authentication = true;
        broker.resume().await;
        broker
    }

    async fn start_with(tls: Option<&crate::tls::ServerCert>) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("realchat-kafka-"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = crate::free_port();
        let tls = tls.map(|cert| crate::tls::Stunnel::start(crate::free_port(), port, cert));
        let mut server = Self {
            port,
            dir,
            child: None,
            tls,
            authentication: false,
        };
        server.resume().await;
        // The index Tansu 0.6 lacks (see xtask's broker module), best effort. Only on a new
        // broker: even a no-op CREATE INDEX takes the write lock, and a broker that is writing
        // then fails the request.
        let _ = Command::new("sqlite3")
            .arg(server.dir.join("tansu.db"))
            .arg(".timeout 5000")
            .arg("CREATE INDEX IF NOT EXISTS realchat_header_by_record ON header (topition, offset_id)")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        server
    }

    /// `host:port`, for `bootstrap.servers`: the TLS terminator's (named `localhost`, as its
    /// certificate is) when there is one.
    pub fn brokers(&self) -> String {
        match &self.tls {
            Some(tls) => format!("localhost:{}", tls.port()),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (SIGKILL), as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, and waits until it accepts connections.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.brokers());
        let mut command = Command::new(tansu());
        command
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        if self.authentication {
            command.arg("--authentication");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tansu broker must be installed (cargo xtask test installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        crate::eventually(
            "the private broker to listen",
            Duration::from_secs(20),
            || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.ok().map(drop) }
            },
        )
        .await;
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
