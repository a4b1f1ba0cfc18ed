//! The components of the local topology, as data.
//!
//! Ports, environment variables and the wiring between services all derive
//! from the [`SERVICES`] table, so adding a service is one new row.

use std::fmt;

use anyhow::{Result, bail};

use crate::{config::Settings, probe::Probe};

/// Whether relays repeat each event's envelope fields as Kafka record headers.
const RECORD_HEADERS: &str = "REALCHAT_KAFKA_RECORD_HEADERS";

/// One of RealChat's Rust services, as the local topology runs it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServiceSpec {
    /// Crate directory under `crates/`, binary name, and component name (`<name>-<i>` when
    /// replicated).
    pub(crate) name: &'static str,
    /// Infix of the service's own variables: `REALCHAT_<ENV>_ADMIN_ADDR`, `…_DATABASE_URL`, ….
    pub(crate) env: &'static str,
    /// Variable carrying the main listen address.
    pub(crate) listen_var: &'static str,
    /// URL scheme peers use to reach the main listener.
    pub(crate) scheme: &'static str,
    /// Main listener port; a replica's is offset by [`Replicas::offset`].
    pub(crate) port: u16,
    /// Admin listener port (`/readyz`, `/metrics`); same replica offset.
    pub(crate) admin_port: u16,
    /// Owns a PostgreSQL database named after the service, managed by `<bin> migrate`.
    pub(crate) database: bool,
    /// Talks to the topology's Redis.
    pub(crate) redis: bool,
    /// Services it calls, each passed as `REALCHAT_<ENV>_ENDPOINT`
    /// (`…_ENDPOINTS`, comma-separated, for one whose callers see every replica).
    pub(crate) upstreams: &'static [&'static str],
    /// One instance, or `<name>-1..N` with N chosen by `up`.
    pub(crate) replicas: Replicas,
}

/// How many instances of a service run, and how they are reached.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Replicas {
    /// One instance, named after the service.
    One,
    /// `<name>-1..N`: replica `i` listens `first + stride * (i - 1)` ports above the service's.
    Many {
        first: u16,
        stride: u16,
        /// Callers get every replica (`…_ENDPOINTS`), or only the first (`…_ENDPOINT`; the
        /// others serve what reaches them by other ways, e.g. their outbox relay and consumers).
        callers_see_all: bool,
    },
}

impl Replicas {
    /// The port offset of replica `i` (none for a single instance).
    pub(crate) fn offset(self, replica: Option<u16>) -> u16 {
        match (self, replica) {
            (Replicas::Many { first, stride, .. }, Some(i)) => first + stride * (i - 1),
            _ => 0,
        }
    }
}

/// All services, in start order: every service comes after the ones it calls.
///
/// Every port, with every replica and the soak's offset, stays below Linux's ephemeral range
/// (32768-60999): a port in it can be taken as the source port of an outgoing connection while
/// its service restarts, which then cannot bind it again until that connection closes.
pub(crate) const SERVICES: &[ServiceSpec] = &[
    ServiceSpec {
        name: "auth",
        env: "AUTH",
        listen_var: "REALCHAT_AUTH_GRPC_ADDR",
        scheme: "http",
        port: 7051,
        admin_port: 9181,
        database: true,
        redis: false,
        upstreams: &[],
        replicas: Replicas::One,
    },
    ServiceSpec {
        name: "profile",
        env: "PROFILE",
        listen_var: "REALCHAT_PROFILE_GRPC_ADDR",
        scheme: "http",
        port: 7053,
        admin_port: 9183,
        database: true,
        redis: false,
        upstreams: &["auth"],
        replicas: Replicas::One,
    },
    ServiceSpec {
        name: "messaging",
        env: "MESSAGING",
        listen_var: "REALCHAT_MESSAGING_GRPC_ADDR",
        scheme: "http",
        port: 7052,
        admin_port: 9182,
        database: true,
        redis: false,
        upstreams: &["auth"],
        // messaging-1 is 127.0.0.1:7052 with admin 9182, messaging-2 7152/9282, …: callers
        // (gateway, delivery) use messaging-1; the others publish outboxes and consume events.
        replicas: Replicas::Many {
            first: 0,
            stride: 100,
            callers_see_all: false,
        },
    },
    ServiceSpec {
        name: "delivery",
        env: "DELIVERY",
        listen_var: "REALCHAT_DELIVERY_ADDR",
        scheme: "ws",
        // delivery-1 is 127.0.0.1:8081 with admin 9184, delivery-2 8082/9185, …
        port: 8080,
        admin_port: 9183,
        database: false,
        redis: true,
        upstreams: &["messaging", "auth"],
        replicas: Replicas::Many {
            first: 1,
            stride: 1,
            callers_see_all: true,
        },
    },
    ServiceSpec {
        name: "gateway",
        env: "GATEWAY",
        listen_var: "REALCHAT_GATEWAY_ADDR",
        scheme: "http",
        port: 8080,
        admin_port: 9180,
        database: false,
        redis: true,
        upstreams: &["auth", "messaging", "profile", "delivery"],
        replicas: Replicas::One,
    },
];

/// Something `up` starts and `down` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Component {
    /// The Tansu broker.
    Kafka,
    /// The topology's own redis-server.
    Redis,
    /// A service instance; `replica` is `Some(i)` for `<name>-<i>`.
    Service {
        spec: &'static ServiceSpec,
        replica: Option<u16>,
    },
}

impl Component {
    /// Parses a component name (`kafka`, `redis`, `auth`, `delivery-2`, …)
    /// regardless of whether the current topology includes it.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "kafka" => return Some(Self::Kafka),
            "redis" => return Some(Self::Redis),
            _ => {}
        }
        SERVICES.iter().find_map(|spec| {
            if spec.replicas == Replicas::One {
                return (name == spec.name).then_some(Self::Service {
                    spec,
                    replica: None,
                });
            }
            let replica: u16 = name
                .strip_prefix(spec.name)?
                .strip_prefix('-')?
                .parse()
                .ok()?;
            (replica >= 1).then_some(Self::Service {
                spec,
                replica: Some(replica),
            })
        })
    }

    /// The name of the executable, which `/proc/<pid>/comm` reports.
    pub(crate) fn process_name(&self) -> &'static str {
        match self {
            Self::Kafka => "tansu",
            Self::Redis => "redis-server",
            Self::Service { spec, .. } => spec.name,
        }
    }

    /// The address clients use.
    pub(crate) fn address(&self, settings: &Settings) -> String {
        match self {
            Self::Kafka => settings.kafka_addr().to_owned(),
            Self::Redis => settings.redis_addr(),
            Self::Service { spec, replica } => {
                local(spec.port + spec.replicas.offset(*replica) + settings.port_offset)
            }
        }
    }

    /// The admin (health and metrics) address of a service.
    pub(crate) fn admin_address(&self, settings: &Settings) -> Option<String> {
        match self {
            Self::Service { spec, replica } => Some(local(
                spec.admin_port + spec.replicas.offset(*replica) + settings.port_offset,
            )),
            Self::Kafka | Self::Redis => None,
        }
    }

    /// The service's spec, if this is a service.
    pub(crate) fn service(&self) -> Option<&'static ServiceSpec> {
        match self {
            Self::Service { spec, .. } => Some(spec),
            Self::Kafka | Self::Redis => None,
        }
    }

    /// How to tell that the component is ready.
    pub(crate) fn probe(&self, settings: &Settings) -> Probe {
        match self {
            Self::Kafka => Probe::Tcp(self.address(settings)),
            Self::Redis => Probe::RedisPing(self.address(settings)),
            Self::Service { .. } => Probe::HttpReady(
                self.admin_address(settings)
                    .unwrap_or_else(|| self.address(settings)),
            ),
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kafka => f.write_str("kafka"),
            Self::Redis => f.write_str("redis"),
            Self::Service {
                spec,
                replica: Some(replica),
            } => write!(f, "{}-{replica}", spec.name),
            Self::Service {
                spec,
                replica: None,
            } => f.write_str(spec.name),
        }
    }
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// The components to run: the infrastructure, plus every service whose crate
/// exists (the workspace grows service by service).
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    components: Vec<Component>,
    counts: ReplicaCounts,
}

/// How many replicas of each replicated service run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplicaCounts {
    pub(crate) delivery: u16,
    pub(crate) messaging: u16,
}

impl ReplicaCounts {
    /// Replicas of `spec` (1 for a service that is not replicated).
    pub(crate) fn of(self, spec: &ServiceSpec) -> u16 {
        match (spec.replicas, spec.name) {
            (Replicas::One, _) => 1,
            (_, "messaging") => self.messaging,
            _ => self.delivery,
        }
    }
}

impl Topology {
    pub(crate) fn new(settings: &Settings, counts: ReplicaCounts) -> Self {
        let crates = settings.root.join("crates");
        Self::with_services(
            SERVICES
                .iter()
                .filter(|spec| crates.join(spec.name).is_dir()),
            counts,
        )
    }

    /// The infrastructure plus the given services.
    fn with_services(
        services: impl IntoIterator<Item = &'static ServiceSpec>,
        counts: ReplicaCounts,
    ) -> Self {
        let mut components = vec![Component::Kafka, Component::Redis];
        for spec in services {
            if spec.replicas == Replicas::One {
                components.push(Component::Service {
                    spec,
                    replica: None,
                });
            } else {
                components.extend((1..=counts.of(spec)).map(|i| Component::Service {
                    spec,
                    replica: Some(i),
                }));
            }
        }
        Self { components, counts }
    }

    /// All components, in start order.
    pub(crate) fn components(&self) -> &[Component] {
        &self.components
    }

    /// The service instances, in start order.
    pub(crate) fn services(&self) -> impl Iterator<Item = Component> + '_ {
        self.components
            .iter()
            .copied()
            .filter(|component| component.service().is_some())
    }

    /// Looks a component up by name, explaining why a name is not there.
    pub(crate) fn find(&self, name: &str) -> Result<Component> {
        if let Some(component) = self.components.iter().find(|c| c.to_string() == name) {
            return Ok(*component);
        }
        match Component::parse(name) {
            Some(Component::Service { spec, .. })
                if !self.services().any(|c| c.service() == Some(spec)) =>
            {
                bail!(
                    "`{name}` is not part of the topology: crates/{} does not exist",
                    spec.name
                )
            }
            Some(Component::Service { spec, .. }) => bail!(
                "`{name}` is not part of the topology: the last `up` ran {0}-1..{0}-{1}; \
                 `cargo xtask up --{0}-replicas N` changes that",
                spec.name,
                self.counts.of(spec),
            ),
            _ => {
                let known: Vec<String> = self.components.iter().map(ToString::to_string).collect();
                bail!("unknown component `{name}`; known: {}", known.join(", "))
            }
        }
    }

    /// The environment a service instance runs (and migrates) with.
    pub(crate) fn service_env(
        &self,
        settings: &Settings,
        component: &Component,
    ) -> Vec<(String, String)> {
        let Component::Service { spec, .. } = component else {
            return Vec::new();
        };
        let own = |suffix: &str| format!("REALCHAT_{}_{suffix}", spec.env);
        let mut env = vec![
            ("REALCHAT_LOG".to_owned(), settings.service_log.clone()),
            (
                "REALCHAT_LOG_FORMAT".to_owned(),
                settings.service_log_format.clone(),
            ),
            (
                "REALCHAT_KAFKA_BROKERS".to_owned(),
                settings.kafka_brokers.clone(),
            ),
            (spec.listen_var.to_owned(), component.address(settings)),
            (
                own("ADMIN_ADDR"),
                component.admin_address(settings).unwrap_or_default(),
            ),
        ];
        // Delivery replicas tell each other apart by it (other services have no such setting).
        if matches!(
            spec.replicas,
            Replicas::Many {
                callers_see_all: true,
                ..
            }
        ) {
            env.push((own("NODE_ID"), component.to_string()));
        }
        if spec.database {
            env.push((own("DATABASE_URL"), settings.database_url(spec.name)));
        }
        if spec.redis {
            env.push(("REALCHAT_REDIS_URL".to_owned(), settings.redis_url()));
        }
        if spec.name == "auth" {
            env.push((
                own("KEY_ENCRYPTION_KEY_FILE"),
                settings.key_encryption_key_file().display().to_string(),
            ));
            // The key lives in the data directory, the database on a shared server: removing
            // the one leaves the other's keys unopenable. Locally that is no reason to stop.
            env.push((own("DISCARD_UNOPENABLE_KEYS"), "true".to_owned()));
        }
        // Internal gRPC is mutual TLS, as in production (certificates from `ensure_internal_tls`).
        let tls = settings.internal_tls_dir();
        for (variable, file) in [
            ("REALCHAT_INTERNAL_TLS_CA_FILE", "ca.pem".to_owned()),
            (
                "REALCHAT_INTERNAL_TLS_CERT_FILE",
                format!("{}.pem", spec.name),
            ),
            (
                "REALCHAT_INTERNAL_TLS_KEY_FILE",
                format!("{}.key", spec.name),
            ),
        ] {
            env.push((variable.to_owned(), tls.join(file).display().to_string()));
        }
        // The topology's broker is Tansu, which stores every record header as a SQLite row: the
        // headers that repeat the envelope's id, type and trace context would double what each
        // event costs it. Set the variable to keep them.
        if std::env::var_os(RECORD_HEADERS).is_none() {
            env.push((RECORD_HEADERS.to_owned(), "false".to_owned()));
        }
        for upstream in spec.upstreams {
            let Some(upstream) = SERVICES.iter().find(|s| s.name == *upstream) else {
                continue;
            };
            let url = |replica: Option<u16>| {
                let port = upstream.port + upstream.replicas.offset(replica) + settings.port_offset;
                format!("{}://{}", upstream.scheme, local(port))
            };
            match upstream.replicas {
                Replicas::Many {
                    callers_see_all: true,
                    ..
                } => {
                    let urls: Vec<String> = (1..=self.counts.of(upstream))
                        .map(|i| url(Some(i)))
                        .collect();
                    env.push((
                        format!("REALCHAT_{}_ENDPOINTS", upstream.env),
                        urls.join(","),
                    ));
                }
                Replicas::Many { .. } => {
                    env.push((format!("REALCHAT_{}_ENDPOINT", upstream.env), url(Some(1))));
                }
                Replicas::One => {
                    env.push((format!("REALCHAT_{}_ENDPOINT", upstream.env), url(None)));
                }
            }
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{EnvArgs, Settings};

    fn counts(delivery: u16) -> ReplicaCounts {
        ReplicaCounts {
            delivery,
            messaging: 1,
        }
    }

    fn settings() -> Result<Settings> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            env: EnvArgs,
        }
        // Defaults (and the caller's environment), with a PostgreSQL URL that exercises credentials.
        Settings::resolve(
            Cli::try_parse_from(["xtask", "--postgres-url", "postgres://u:p@db:5433/x"])?.env,
        )
    }

    #[test]
    fn names_round_trip() {
        for name in [
            "kafka",
            "redis",
            "auth",
            "gateway",
            "delivery-1",
            "delivery-12",
            "messaging-1",
            "messaging-2",
        ] {
            let component = Component::parse(name).map(|c| c.to_string());
            assert_eq!(component.as_deref(), Some(name));
        }
        for name in [
            "delivery",
            "delivery-0",
            "delivery-x",
            "auth-1",
            "messaging",
            "postgres",
        ] {
            assert_eq!(Component::parse(name), None, "{name}");
        }
    }

    #[test]
    fn find_explains_missing_components() -> Result<()> {
        let with = |names: &[&str]| {
            Topology::with_services(
                SERVICES.iter().filter(|s| names.contains(&s.name)),
                ReplicaCounts {
                    delivery: 2,
                    messaging: 1,
                },
            )
        };
        let topology = with(&["auth", "delivery", "gateway"]);
        let names: Vec<String> = topology
            .components()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "kafka",
                "redis",
                "auth",
                "delivery-1",
                "delivery-2",
                "gateway"
            ]
        );
        assert_eq!(topology.find("delivery-2")?.to_string(), "delivery-2");

        let error = |topology: &Topology, name| {
            topology
                .find(name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(error(&topology, "delivery-3").contains("delivery-1..delivery-2"));
        assert!(error(&topology, "profile").contains("crates/profile does not exist"));
        assert!(error(&with(&["auth"]), "delivery-1").contains("crates/delivery"));
        assert!(error(&topology, "zookeeper").contains("known: kafka, redis, auth"));
        Ok(())
    }

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range_with_every_replica() -> Result<()> {
        let most = ReplicaCounts {
            delivery: 16,
            messaging: 8,
        };
        let mut seen = std::collections::HashMap::new();
        for offset in [0, crate::test::SOAK_PORT_OFFSET] {
            let mut settings = settings()?;
            settings.port_offset = offset;
            let topology = Topology::new(&settings, most);
            for component in topology.services() {
                let addresses = [
                    Some(component.address(&settings)),
                    component.admin_address(&settings),
                ];
                for address in addresses.into_iter().flatten() {
                    let port: u16 = address.rsplit(':').next().unwrap_or_default().parse()?;
                    assert!(port < 32768, "{component} listens on {address}");
                    if let Some(other) = seen.insert(port, component.to_string()) {
                        panic!("{component} and {other} both use port {port}");
                    }
                }
            }
        }
        assert!(seen.len() > 2 * (16 + 8), "{seen:?}");
        Ok(())
    }

    #[test]
    fn replicas_get_consecutive_ports() -> Result<()> {
        let delivery = |i| Component::parse(&format!("delivery-{i}"));
        let settings = settings()?;
        let first = delivery(1).map(|c| (c.address(&settings), c.admin_address(&settings)));
        let third = delivery(3).map(|c| (c.address(&settings), c.admin_address(&settings)));
        assert_eq!(
            first,
            Some(("127.0.0.1:8081".into(), Some("127.0.0.1:9184".into())))
        );
        assert_eq!(
            third,
            Some(("127.0.0.1:8083".into(), Some("127.0.0.1:9186".into())))
        );
        Ok(())
    }

    #[test]
    fn messaging_replicas_get_ports_apart_and_callers_use_the_first() -> Result<()> {
        let settings = settings()?;
        let topology = Topology::new(
            &settings,
            ReplicaCounts {
                delivery: 2,
                messaging: 2,
            },
        );
        let second = topology.find("messaging-2")?;
        assert_eq!(second.address(&settings), "127.0.0.1:7152");
        assert_eq!(
            second.admin_address(&settings).as_deref(),
            Some("127.0.0.1:9282")
        );
        let env: HashMap<_, _> = topology
            .service_env(&settings, &second)
            .into_iter()
            .collect();
        assert_eq!(
            env.get("REALCHAT_MESSAGING_GRPC_ADDR").map(String::as_str),
            Some("127.0.0.1:7152")
        );
        assert_eq!(env.get("REALCHAT_MESSAGING_NODE_ID"), None);
        for caller in ["gateway", "delivery-1"] {
            let caller = topology.find(caller)?;
            let env: HashMap<_, _> = topology
                .service_env(&settings, &caller)
                .into_iter()
                .collect();
            assert_eq!(
                env.get("REALCHAT_MESSAGING_ENDPOINT").map(String::as_str),
                Some("http://127.0.0.1:7052")
            );
        }
        Ok(())
    }

    #[test]
    fn gateway_is_wired_to_every_upstream() -> Result<()> {
        let settings = settings()?;
        let topology = Topology::new(&settings, counts(2));
        let gateway = Component::parse("gateway").ok_or_else(|| anyhow::anyhow!("no gateway"))?;
        let env: HashMap<_, _> = topology
            .service_env(&settings, &gateway)
            .into_iter()
            .collect();
        let get = |key: &str| env.get(key).map(String::as_str);
        assert_eq!(get("REALCHAT_GATEWAY_ADDR"), Some("127.0.0.1:8080"));
        assert_eq!(get("REALCHAT_GATEWAY_ADMIN_ADDR"), Some("127.0.0.1:9180"));
        assert_eq!(get("REALCHAT_AUTH_ENDPOINT"), Some("http://127.0.0.1:7051"));
        assert_eq!(
            get("REALCHAT_MESSAGING_ENDPOINT"),
            Some("http://127.0.0.1:7052")
        );
        assert_eq!(
            get("REALCHAT_PROFILE_ENDPOINT"),
            Some("http://127.0.0.1:7053")
        );
        assert_eq!(
            get("REALCHAT_DELIVERY_ENDPOINTS"),
            Some("ws://127.0.0.1:8081,ws://127.0.0.1:8082")
        );
        assert!(get("REALCHAT_REDIS_URL").is_some());
        assert_eq!(get("REALCHAT_GATEWAY_DATABASE_URL"), None);
        // Its calls are mutual TLS, as the gateway.
        let tls = settings.internal_tls_dir();
        assert_eq!(
            get("REALCHAT_INTERNAL_TLS_CERT_FILE"),
            Some(tls.join("gateway.pem").to_str().unwrap_or_default())
        );
        assert_eq!(
            get("REALCHAT_INTERNAL_TLS_CA_FILE"),
            Some(tls.join("ca.pem").to_str().unwrap_or_default())
        );
        Ok(())
    }

    #[test]
    fn database_services_get_their_own_database() -> Result<()> {
        let settings = settings()?;
        let topology = Topology::new(&settings, counts(1));
        let auth = Component::parse("auth").ok_or_else(|| anyhow::anyhow!("no auth"))?;
        let env: HashMap<_, _> = topology.service_env(&settings, &auth).into_iter().collect();
        assert_eq!(
            env.get("REALCHAT_AUTH_DATABASE_URL").map(String::as_str),
            Some("postgres://u:p@db:5433/auth")
        );
        assert_eq!(env.get("REALCHAT_REDIS_URL"), None);
        Ok(())
    }

    #[test]
    fn delivery_knows_its_node_id_and_upstreams() -> Result<()> {
        let settings = settings()?;
        let topology = Topology::new(&settings, counts(2));
        let delivery =
            Component::parse("delivery-2").ok_or_else(|| anyhow::anyhow!("no delivery"))?;
        let env: HashMap<_, _> = topology
            .service_env(&settings, &delivery)
            .into_iter()
            .collect();
        let get = |key: &str| env.get(key).map(String::as_str);
        assert_eq!(get("REALCHAT_DELIVERY_NODE_ID"), Some("delivery-2"));
        assert_eq!(get("REALCHAT_DELIVERY_ADDR"), Some("127.0.0.1:8082"));
        assert_eq!(get("REALCHAT_DELIVERY_ADMIN_ADDR"), Some("127.0.0.1:9185"));
        assert_eq!(
            get("REALCHAT_MESSAGING_ENDPOINT"),
            Some("http://127.0.0.1:7052")
        );
        assert_eq!(get("REALCHAT_AUTH_ENDPOINT"), Some("http://127.0.0.1:7051"));
        Ok(())
    }
}
