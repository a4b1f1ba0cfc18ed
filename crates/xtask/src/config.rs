//! Where things live and how to reach them.
//!
//! [`Settings`] is resolved once per invocation from the environment (each
//! value can also be given as a flag) and the workspace layout. [`RunOptions`]
//! are the choices of the last `up`, persisted in the data dir so that a later
//! `start <name>` brings a component back exactly as `up` ran it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// Connection settings shared by every command; each has an environment variable.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Environment")]
pub(crate) struct EnvArgs {
    /// PostgreSQL server; each service gets its own database on it, named after the service.
    #[arg(
        long,
        global = true,
        env = "REALCHAT_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,

    /// Kafka bootstrap servers (comma-separated); the local Tansu broker listens on the first one.
    #[arg(
        long,
        global = true,
        env = "REALCHAT_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    kafka_brokers: String,

    /// Port of the topology's own redis-server (never the machine's default 6379).
    #[arg(
        long,
        global = true,
        env = "REALCHAT_TOPOLOGY_REDIS_PORT",
        default_value_t = 6390
    )]
    redis_port: u16,

    /// Added to every service's ports, so a second topology (the soak's) can run beside the
    /// first; the broker's and Redis's ports are set apart with their own variables.
    #[arg(
        long,
        global = true,
        env = "REALCHAT_TOPOLOGY_PORT_OFFSET",
        default_value_t = 0
    )]
    port_offset: u16,

    /// Put before each service's database name (`auth`, ...), for a topology of its own on a
    /// shared PostgreSQL server.
    #[arg(
        long,
        global = true,
        env = "REALCHAT_TOPOLOGY_DATABASE_PREFIX",
        default_value = ""
    )]
    database_prefix: String,

    /// Pid files, logs and broker/Redis data [default: <workspace>/.realchat].
    #[arg(long, global = true, env = "REALCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Log filter handed to the services.
    #[arg(long, global = true, env = "REALCHAT_LOG", default_value = "info")]
    service_log: String,

    /// Log format handed to the services.
    #[arg(
        long,
        global = true,
        env = "REALCHAT_LOG_FORMAT",
        default_value = "human"
    )]
    service_log_format: String,
}

/// Everything a command needs to know about the local environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The workspace root (where the root `Cargo.toml` is).
    pub(crate) root: PathBuf,
    /// Root of all runtime state: `run/`, `logs/`, `kafka/`, `redis/`.
    pub(crate) data_dir: PathBuf,
    /// Cargo's target directory, where the service binaries are built.
    pub(crate) target_dir: PathBuf,
    /// The PostgreSQL server the services' databases live on.
    pub(crate) postgres: PostgresUrl,
    /// Kafka bootstrap servers, exactly as the services receive them.
    pub(crate) kafka_brokers: String,
    /// Port of the topology's redis-server on 127.0.0.1.
    pub(crate) redis_port: u16,
    /// Added to every service port.
    pub(crate) port_offset: u16,
    /// Put before each service's database name.
    pub(crate) database_prefix: String,
    /// `REALCHAT_LOG` for the services.
    pub(crate) service_log: String,
    /// `REALCHAT_LOG_FORMAT` for the services.
    pub(crate) service_log_format: String,
}

impl Settings {
    /// Resolves the settings from the parsed environment/flags and the workspace layout.
    pub(crate) fn resolve(env: EnvArgs) -> Result<Self> {
        // `cargo xtask` (`cargo run`) says where xtask's manifest is; that pins the workspace. The
        // path compiled in is only a fallback: a binary shared through a target directory used by
        // several clones may have been built in another one.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
            Into::into,
        );
        let root = manifest_dir.join("../..");
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve the workspace root {}", root.display()))?;

        let data_dir = match env.data_dir {
            Some(dir) => std::path::absolute(dir)?,
            None => root.join(".realchat"),
        };
        // Honour CARGO_TARGET_DIR like cargo does, so `up` finds what `cargo build` produced.
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => std::path::absolute(dir)?,
            _ => root.join("target"),
        };

        if env.kafka_brokers.trim().is_empty() {
            bail!("REALCHAT_KAFKA_BROKERS is empty");
        }

        Ok(Self {
            root,
            data_dir,
            target_dir,
            postgres: PostgresUrl::parse(&env.postgres_url)?,
            kafka_brokers: env.kafka_brokers,
            redis_port: env.redis_port,
            port_offset: env.port_offset,
            database_prefix: env.database_prefix,
            service_log: env.service_log,
            service_log_format: env.service_log_format,
        })
    }

    /// `host:port` of the first bootstrap server: where the local broker listens.
    pub(crate) fn kafka_addr(&self) -> &str {
        self.kafka_brokers
            .split(',')
            .next()
            .unwrap_or(&self.kafka_brokers)
            .trim()
    }

    /// The database a service owns in this topology.
    pub(crate) fn database_url(&self, service: &str) -> String {
        self.postgres
            .with_database(&format!("{}{service}", self.database_prefix))
    }

    /// `host:port` of the topology's Redis.
    pub(crate) fn redis_addr(&self) -> String {
        format!("127.0.0.1:{}", self.redis_port)
    }

    /// The Redis URL handed to services and tests.
    pub(crate) fn redis_url(&self) -> String {
        format!("redis://{}", self.redis_addr())
    }

    /// The key-encryption key that seals auth's signing keys in the local database (a file
    /// only the owner reads).
    pub(crate) fn key_encryption_key_file(&self) -> PathBuf {
        self.data_dir
            .join("secrets")
            .join("auth-key-encryption-key")
    }

    /// Makes [`Settings::key_encryption_key_file`] on first use: 32 random bytes, base64.
    pub(crate) fn ensure_key_encryption_key(&self) -> Result<PathBuf> {
        use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
        let path = self.key_encryption_key_file();
        if path.is_file() {
            return Ok(path);
        }
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut key))
            .context("reading /dev/urandom for auth's key-encryption key")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, base64(&key).as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The internal certificate authority and each service's certificate and key, with which
    /// the services talk mutual TLS to each other (`<service>.pem`, `<service>.key`, `ca.pem`).
    pub(crate) fn internal_tls_dir(&self) -> PathBuf {
        self.data_dir.join("secrets").join("internal-tls")
    }

    /// Makes what [`Settings::internal_tls_dir`] lacks on first use, with `openssl`: a
    /// certificate authority of this data directory's own, and a certificate for `service` that
    /// names `<service>.realchat.internal` (see `runtime::tls`).
    pub(crate) fn ensure_internal_tls(&self, service: &str) -> Result<()> {
        let dir = self.internal_tls_dir();
        let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_cert.is_file() || !ca_key.is_file() {
            fs::create_dir_all(&dir)?;
            openssl(
                std::process::Command::new("openssl")
                    .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                    .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "825"])
                    .args(["-subj", "/CN=RealChat local internal CA"])
                    .args(["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"])
                    .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                    .arg("-keyout")
                    .arg(&ca_key)
                    .arg("-out")
                    .arg(&ca_cert),
            )?;
        }
        let (cert, key) = (
            dir.join(format!("{service}.pem")),
            dir.join(format!("{service}.key")),
        );
        if cert.is_file() && key.is_file() {
            return Ok(());
        }
        let request = dir.join(format!("{service}.csr"));
        let extensions = dir.join(format!("{service}.ext"));
        openssl(
            std::process::Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes"])
                .args(["-subj", &format!("/CN={service}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&request),
        )?;
        fs::write(
            &extensions,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName=DNS:{service}.realchat.internal\n"
            ),
        )?;
        openssl(
            std::process::Command::new("openssl")
                .args(["x509", "-req", "-days", "825", "-CAcreateserial"])
                .arg("-in")
                .arg(&request)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&extensions)
                .arg("-out")
                .arg(&cert),
        )?;
        for leftover in [request, extensions] {
            fs::remove_file(leftover).ok();
        }
        Ok(())
    }

    /// Directory of the `<name>.pid` files.
    pub(crate) fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    /// Directory of the `<name>.log` files.
    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The log file of a component (or of a one-off task like the Tansu install).
    pub(crate) fn log_file(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// The pid file of a component.
    pub(crate) fn pid_file(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.pid"))
    }

    /// Path of a service binary for the given build profile.
    pub(crate) fn binary(&self, name: &str, release: bool) -> PathBuf {
        let profile = if release { "release" } else { "debug" };
        self.target_dir.join(profile).join(name)
    }

    /// Shows a path relative to the current directory when it is inside it, for shorter output.
    pub(crate) fn display_path(&self, path: &Path) -> String {
        std::env::current_dir()
            .ok()
            .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .filter(|relative| !relative.as_os_str().is_empty())
            .unwrap_or_else(|| path.to_path_buf())
            .display()
            .to_string()
    }
}

/// The cargo that runs xtask (cargo sets `$CARGO` for `cargo run`), so nested
/// builds use the same toolchain.
pub(crate) fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A `postgres://` URL, split just enough to probe the server and to point at
/// another database on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostgresUrl {
    /// The URL as given.
    url: String,
    /// `postgres` or `postgresql`.
    scheme: String,
    /// `user[:password]@host[:port]`, kept verbatim so credentials survive untouched.
    authority: String,
    /// Host name or IP address, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `?…` including the question mark, or empty.
    query: String,
}

impl PostgresUrl {
    /// Parses `postgres[ql]://[user[:password]@]host[:port][/database][?params]`.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "postgres" | "postgresql"))
            .with_context(|| format!("REALCHAT_POSTGRES_URL `{url}` is not a postgres:// URL"))?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let query = path.find('?').map_or("", |at| &path[at..]);

        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = match host_port.strip_prefix('[') {
            // [::1]:5432
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .with_context(|| format!("unterminated IPv6 address in `{url}`"))?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("invalid port `{port}` in `{url}`"))?,
            None => 5432,
        };
        if host.is_empty() {
            bail!(
                "REALCHAT_POSTGRES_URL `{url}` has no host; xtask needs a TCP address like 127.0.0.1:5432"
            );
        }

        Ok(Self {
            url: url.to_owned(),
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            query: query.to_owned(),
        })
    }

    /// The URL as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.url
    }

    /// The same server and credentials, pointing at `database`.
    pub(crate) fn with_database(&self, database: &str) -> String {
        format!(
            "{}://{}/{database}{}",
            self.scheme, self.authority, self.query
        )
    }

    /// `host:port` of the server, for connecting and for display (the URL
    /// itself may carry a password).
    pub(crate) fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Choices made by the last `up`, remembered for `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunOptions {
    /// Services run from `target/release` instead of `target/debug`.
    pub(crate) release: bool,
    /// Number of delivery replicas (`delivery-1..N`).
    pub(crate) delivery_replicas: u16,
    /// Number of messaging replicas (`messaging-1..N`).
    pub(crate) messaging_replicas: u16,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            release: false,
            delivery_replicas: 1,
            messaging_replicas: 1,
        }
    }
}

impl RunOptions {
    const FILE: &'static str = "topology.state";

    /// Loads the options of the last `up`, or the defaults if there was none.
    pub(crate) fn load(settings: &Settings) -> Result<Self> {
        let path = settings.data_dir.join(Self::FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("corrupt {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Remembers these options for later `start` commands.
    pub(crate) fn save(&self, settings: &Settings) -> Result<()> {
        let path = settings.data_dir.join(Self::FILE);
        fs::create_dir_all(&settings.data_dir)?;
        let text = format!(
            "# Written by `cargo xtask up`; read by `cargo xtask start`.\nrelease={}\ndelivery_replicas={}\nmessaging_replicas={}\n",
            self.release, self.delivery_replicas, self.messaging_replicas
        );
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    fn parse(text: &str) -> Result<Self> {
        let mut options = Self::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .with_context(|| format!("expected key=value, got `{line}`"))?;
            match key.trim() {
                "release" => options.release = value.trim().parse()?,
                "delivery_replicas" => options.delivery_replicas = value.trim().parse()?,
                "messaging_replicas" => options.messaging_replicas = value.trim().parse()?,
                // Unknown keys come from a newer xtask; ignoring them keeps old ones working.
                _ => {}
            }
        }
        Ok(options)
    }
}

/// Runs an `openssl` command, failing with what it printed.
fn openssl(command: &mut std::process::Command) -> Result<()> {
    let output = command.output().context(
        "running openssl (Debian: apt-get install openssl), which makes the local certificates",
    )?;
    if !output.status.success() {
        bail!(
            "openssl failed making the local certificates: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_url_keeps_credentials_and_params_when_switching_database() -> Result<()> {
        let url =
            PostgresUrl::parse("postgres://app:s3cret@db.local:6543/postgres?sslmode=disable")?;
        assert_eq!(url.host, "db.local");
        assert_eq!(url.port, 6543);
        assert_eq!(
            url.with_database("auth"),
            "postgres://app:s3cret@db.local:6543/auth?sslmode=disable"
        );
        Ok(())
    }

    #[test]
    fn postgres_url_defaults_port_and_handles_ipv6() -> Result<()> {
        let url = PostgresUrl::parse("postgresql://postgres@[::1]")?;
        assert_eq!((url.host.as_str(), url.port), ("::1", 5432));
        assert_eq!(url.server(), "[::1]:5432");
        assert_eq!(
            url.with_database("profile"),
            "postgresql://postgres@[::1]/profile"
        );
        Ok(())
    }

    #[test]
    fn internal_certificates_are_made_once_and_name_their_service() -> Result<()> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            env: EnvArgs,
        }
        let dir = std::env::temp_dir().join(format!("xtask-internal-tls-{}", std::process::id()));
        let settings = Settings::resolve(
            Cli::try_parse_from(["xtask", "--data-dir", dir.to_str().unwrap_or_default()])?.env,
        )?;
        settings.ensure_internal_tls("messaging")?;
        let ca = fs::read(settings.internal_tls_dir().join("ca.pem"))?;
        settings.ensure_internal_tls("gateway")?;
        // The authority stays: the first service's certificate still chains to it.
        assert_eq!(fs::read(settings.internal_tls_dir().join("ca.pem"))?, ca);
        let text = std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-ext",
                "subjectAltName,extendedKeyUsage",
                "-in",
            ])
            .arg(settings.internal_tls_dir().join("messaging.pem"))
            .output()?;
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("DNS:messaging.realchat.internal"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        let verified = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(settings.internal_tls_dir().join("ca.pem"))
            .arg(settings.internal_tls_dir().join("messaging.pem"))
            .output()?;
        assert!(verified.status.success(), "{verified:?}");
        fs::remove_dir_all(dir).ok();
        Ok(())
    }

    #[test]
    fn postgres_url_rejects_other_schemes() {
        assert!(PostgresUrl::parse("mysql://root@localhost/db").is_err());
        assert!(PostgresUrl::parse("postgres:///db?host=/run/postgresql").is_err());
    }

    #[test]
    fn run_options_round_trip() -> Result<()> {
        let text = "# comment\nrelease=true\ndelivery_replicas=3\nmessaging_replicas=2\nfuture=1\n";
        assert_eq!(
            RunOptions::parse(text)?,
            RunOptions {
                release: true,
                delivery_replicas: 3,
                messaging_replicas: 2,
            }
        );
        Ok(())
    }
}

/// Standard base64 with padding (what auth reads a key-encryption key as).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod base64_tests {
    #[test]
    fn encodes_as_rfc_4648_does() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
