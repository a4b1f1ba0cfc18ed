//! TLS for tests of the services' connections to PostgreSQL, Redis and the broker: a certificate
//! authority of the test's own and server certificates it signs (made with the `openssl` tool),
//! a PostgreSQL server with TLS on, and a TLS terminator (`stunnel`) in front of a plain port.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A certificate authority that lives in a directory of the test's.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    /// The CA's certificate, PEM: what a client is told to trust.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A server certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir` (created if missing).
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        openssl(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            cert,
            key,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this CA.
    pub fn issue(&self, server: &str) -> ServerCert {
        self.sign(
            server,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
    }

    /// The internal certificate of RealChat service `service`: it names
    /// `<service>.realchat.internal`, and serves and calls with it.
    pub fn issue_service(&self, service: &str) -> ServerCert {
        self.sign(
            service,
            &format!(
                "subjectAltName=DNS:{}\nextendedKeyUsage=serverAuth,clientAuth\n",
                realchat_runtime::tls::identity(service)
            ),
        )
    }

    /// A certificate this CA signs, with `extensions` (OpenSSL's syntax) beside the usual ones.
    fn sign(&self, subject: &str, extensions: &str) -> ServerCert {
        let base = self.dir.join(format!("{}-{subject}", self.name));
        let (cert, key, request, extfile) = (
            base.with_extension("pem"),
            base.with_extension("key"),
            base.with_extension("csr"),
            base.with_extension("ext"),
        );
        openssl(
            Command::new("openssl")
                .args([
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args(["-nodes", "-subj", &format!("/CN={subject}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&request),
        );
        std::fs::write(
            &extfile,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"
            ),
        )
        .unwrap();
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(&request)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&extfile)
                .arg("-out")
                .arg(&cert),
        );
        ServerCert { cert, key }
    }
}

/// The variables that hand a service binary the files of [`internal`].
pub fn internal_env(service: &str) -> [(&'static str, PathBuf); 3] {
    let options = internal(service);
    let file = |f: Option<PathBuf>| f.expect("internal() names all three files");
    [
        (
            "REALCHAT_INTERNAL_TLS_CA_FILE",
            file(options.internal_tls_ca_file),
        ),
        (
            "REALCHAT_INTERNAL_TLS_CERT_FILE",
            file(options.internal_tls_cert_file),
        ),
        (
            "REALCHAT_INTERNAL_TLS_KEY_FILE",
            file(options.internal_tls_key_file),
        ),
    ]
}

/// The internal TLS files of RealChat service `service` (`auth`, `messaging`, `profile`,
/// `gateway`, `delivery`): one certificate authority per test process, and that service's
/// certificate. Every [`crate::TestApp`] runs its services with these, as production does.
pub fn internal(service: &str) -> realchat_runtime::tls::InternalTlsOptions {
    static PKI: std::sync::OnceLock<(PathBuf, TestCa)> = std::sync::OnceLock::new();
    let (dir, ca) = PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(crate::unique("realchat-internal-tls-"));
        let ca = TestCa::new(&dir, "internal");
        for service in ["auth", "messaging", "profile", "gateway", "delivery"] {
            ca.issue_service(service);
        }
        (dir, ca)
    });
    let base = dir.join(format!("internal-{service}"));
    realchat_runtime::tls::InternalTlsOptions::files(
        ca.cert.clone(),
        base.with_extension("pem"),
        base.with_extension("key"),
    )
}

fn openssl(command: &mut Command) {
    let output = command
        .output()
        .expect("openssl must be installed to run this test");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until something accepts connections on `127.0.0.1:port`.
fn wait_for_port(what: &str, port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it listened: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL server of the test's own, TLS on with a certificate the test made, from the
/// machine's PostgreSQL binaries (`pg_config --bindir`), its data in a temporary directory.
#[derive(Debug)]
pub struct TlsPostgres {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl TlsPostgres {
    /// Initialises a cluster and starts it with `server` as its certificate, for `localhost`
    /// on a free port, trusting every local login (as the machine's server does).
    pub fn start(server: &ServerCert) -> Self {
        let bindir = postgres_bindir();
        let dir = std::env::temp_dir().join(crate::unique("realchat-pg-tls-"));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        // The server's key must belong to the user the server runs as, readable by it alone.
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::copy(&server.cert, &cert).unwrap();
        std::fs::copy(&server.key, &key).unwrap();
        set_mode(&key, 0o600);
        // PostgreSQL refuses to run as root: there, it runs as the `postgres` user.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", dir.display());
        }
        let command = |program: &str| {
            let path = bindir.join(program);
            if as_root {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            } else {
                Command::new(path)
            }
        };
        let output = command("initdb")
            .args(["--auth", "trust", "--username", "postgres", "--no-sync"])
            .arg("--pgdata")
            .arg(&data)
            .output()
            .expect("initdb must be installed to run this test");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = crate::free_port();
        let mut child = command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args([
                "-c",
                "ssl=on",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=40",
            ])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres must be installed to run this test");
        wait_for_port("postgres", port, &mut child);
        Self { dir, port, child }
    }

    /// A URL for `database` on this server, with the given query (`sslmode=...&sslrootcert=...`).
    pub fn url(&self, database: &str, query: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?{query}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // The child may be `runuser`, which does not pass signals on: the server's own pid is
        // the first line of its pid file. SIGQUIT is PostgreSQL's immediate shutdown.
        let server = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|pids| pids.lines().next().map(str::to_owned))
            .unwrap_or_else(|| self.child.id().to_string());
        let _ = Command::new("kill").args(["-QUIT", &server]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where PostgreSQL's server programs are: `pg_config --bindir`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn postgres_bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|dir| dir.join("initdb").is_file());
    if let Some(dir) = from_pg_config {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL's server programs (initdb, postgres) must be installed to run this test",
    )
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A TLS terminator (`stunnel`, Debian's `stunnel4`) in front of a plain TCP port: clients speak
/// TLS to it, it forwards the bytes in the clear.
#[derive(Debug)]
pub struct Stunnel {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Stunnel {
    /// Accepts TLS on `port` with `server`'s certificate and forwards to `127.0.0.1:target`.
    pub fn start(port: u16, target: u16, server: &ServerCert) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("realchat-stunnel-"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\n[tls]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{target}\ncert = {}\nkey = {}\n",
                server.cert.display(),
                server.key.display()
            ),
        )
        .unwrap();
        let program = ["stunnel4", "stunnel"]
            .into_iter()
            .find(|program| {
                Command::new(program)
                    .arg("-version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("stunnel (Debian's stunnel4) must be installed to run this test");
        let mut child = Command::new(program)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port("stunnel", port, &mut child);
        Self { dir, port, child }
    }

    /// The port it accepts TLS on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
