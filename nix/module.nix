# NixOS module: `services.realchat.<service>` for auth, messaging, profile, delivery and gateway.
#
# Every service is configured the way its binary is: through `REALCHAT_*` environment variables
# (`<binary> --help` lists them, `<binary> settings` prints them as JSON). The options people
# change are typed here; every other variable goes through the free-form `settings`, and secrets
# through `environmentFile` (or, for auth's key-encryption key and the internal TLS certificates
# and keys, systemd credentials) so they stay out of the world-readable Nix store.
#
# `services.realchat.prometheus` has the local Prometheus (`services.prometheus`) scrape the
# services of this host with the labels and alert rules of dashboards/ (see dashboards/README.md).
#
# The module uses nothing but `lib`, so it can be evaluated on its own (nixos-tests/check.sh
# does, against the settings each binary reports).
{ config, lib, ... }:

let
  inherit (lib)
    concatMap
    concatStringsSep
    filterAttrs
    hasPrefix
    hasSuffix
    last
    literalExpression
    mapAttrs
    mapAttrs'
    mapAttrsToList
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    nameValuePair
    optional
    optionalAttrs
    optionalString
    optionals
    splitString
    toInt
    types
    ;

  cfg = config.services.realchat;

  # What the module needs to know about each binary: its listeners, their defaults (the binary's
  # own, so a unit nobody configured behaves like the binary run by hand), and what it talks to.
  # `listenVar` is the binary's main listener; `prefix` is the infix of its own variables;
  # `keyEncryptionKey` whether it seals keys at rest under a key-encryption key; `callers` the
  # services its internal gRPC server accepts under mutual TLS (none: it serves no gRPC).
  specs = {
    auth = {
      description = "RealChat auth service (users, passwords, tokens, signing keys)";
      prefix = "AUTH";
      listenVar = "REALCHAT_AUTH_GRPC_ADDR";
      listen = "127.0.0.1:7051";
      admin = "127.0.0.1:9181";
      database = true;
      kafka = true;
      redis = false;
      upstreams = { };
      deliveryEndpoints = false;
      callers = [ "gateway" "delivery" "messaging" "profile" ];
      keyEncryptionKey = true;
    };
    messaging = {
      description = "RealChat messaging service (conversations, messages, the outbox relay)";
      prefix = "MESSAGING";
      listenVar = "REALCHAT_MESSAGING_GRPC_ADDR";
      listen = "127.0.0.1:7052";
      admin = "127.0.0.1:9182";
      database = true;
      kafka = true;
      redis = false;
      upstreams = {
        # Who a user id belongs to, for events that arrive before user.registered.
        auth = "http://127.0.0.1:7051";
      };
      deliveryEndpoints = false;
      callers = [ "gateway" "delivery" ];
      keyEncryptionKey = false;
    };
    profile = {
      description = "RealChat profile service (profiles and the username directory)";
      prefix = "PROFILE";
      listenVar = "REALCHAT_PROFILE_GRPC_ADDR";
      listen = "127.0.0.1:7053";
      admin = "127.0.0.1:9183";
      database = true;
      kafka = true;
      redis = false;
      upstreams = {
        # Who a user id belongs to, for events that arrive before user.registered.
        auth = "http://127.0.0.1:7051";
      };
      deliveryEndpoints = false;
      callers = [ "gateway" ];
      keyEncryptionKey = false;
    };
    delivery = {
      description = "RealChat delivery replica (WebSockets, fan-out, presence)";
      prefix = "DELIVERY";
      listenVar = "REALCHAT_DELIVERY_ADDR";
      listen = "127.0.0.1:8081";
      admin = "127.0.0.1:9184";
      database = false;
      kafka = true;
      redis = true;
      upstreams = {
        auth = "http://127.0.0.1:7051";
        messaging = "http://127.0.0.1:7052";
      };
      deliveryEndpoints = false;
      callers = [ ];
      keyEncryptionKey = false;
    };
    gateway = {
      description = "RealChat gateway (the public HTTP API)";
      prefix = "GATEWAY";
      listenVar = "REALCHAT_GATEWAY_ADDR";
      listen = "127.0.0.1:8080";
      admin = "127.0.0.1:9180";
      database = false;
      kafka = false;
      redis = true;
      upstreams = {
        auth = "http://127.0.0.1:7051";
        messaging = "http://127.0.0.1:7052";
        profile = "http://127.0.0.1:7053";
      };
      deliveryEndpoints = true;
      callers = [ ];
      keyEncryptionKey = false;
    };
  };

  # `host:port`, `[v6]:port`: what Rust's `SocketAddr` parses (a name like `localhost` is not).
  socketAddress = types.strMatching
    "^([0-9]{1,3}([.][0-9]{1,3}){3}|[[][0-9A-Fa-f:.]+[]]):[0-9]{1,5}$" // {
    description = "socket address (`ip:port` or `[ipv6]:port`)";
  };
  # Bootstrap servers may be names.
  brokerAddress = types.strMatching "^[]A-Za-z0-9.:_[-]+:[0-9]{1,5}$" // {
    description = "Kafka bootstrap server (`host:port`)";
  };
  httpUrl = types.strMatching "^https?://[^ ]+$" // {
    description = "http(s) URL";
  };
  wsUrl = types.strMatching "^wss?://[^ ]+$" // {
    description = "ws(s) URL";
  };
  redisUrl = types.strMatching "^(redis|rediss|redis[+]unix|unix)://[^ ]*$" // {
    description = "Redis URL";
  };
  postgresUrl = types.strMatching "^postgres(ql)?://[^ ]*$" // {
    description = "PostgreSQL URL";
  };
  settingValue = types.oneOf [ types.str types.int types.bool ];

  portOf = address: toInt (last (splitString ":" address));

  # Where Prometheus on this host scrapes an admin listener: one on every address is reached over
  # loopback.
  scrapeTarget = address:
    let
      parts = builtins.match "(.*):([0-9]+)" address;
      host = builtins.elemAt parts 0;
      port = builtins.elemAt parts 1;
    in
    if host == "0.0.0.0" then "127.0.0.1:${port}"
    else if host == "[::]" then "[::1]:${port}"
    else address;

  # The repository's alert rules, every `dashboards/prometheus/rules/*.yml`, read from the tree
  # this file is in (a checkout, or the flake's source in the store); none when the file was
  # copied on its own.
  rulesDirectory = ../dashboards/prometheus/rules;
  repositoryRuleFiles =
    if builtins.pathExists rulesDirectory then
      map (file: rulesDirectory + "/${file}")
        (builtins.attrNames (filterAttrs
          (file: type: type == "regular" && hasSuffix ".yml" file)
          (builtins.readDir rulesDirectory)))
    else [ ];

  # Mutual TLS between the services (`internalTls`): each file reaches the unit as a systemd
  # credential of this name, and the binary reads it through the variable. The variables that take
  # the PEM text itself (`REALCHAT_INTERNAL_TLS_CA`, `_CERT`, `_KEY`) are the options' too: from
  # `settings` the key would land in the store, and next to the files they would be ignored; a
  # host that must use them has `environmentFile`.
  internalTlsFiles = {
    caFile = { credential = "internal-tls-ca"; variable = "REALCHAT_INTERNAL_TLS_CA_FILE"; };
    certFile = { credential = "internal-tls-cert"; variable = "REALCHAT_INTERNAL_TLS_CERT_FILE"; };
    keyFile = { credential = "internal-tls-key"; variable = "REALCHAT_INTERNAL_TLS_KEY_FILE"; };
  };
  internalTlsTextVariables = [ "REALCHAT_INTERNAL_TLS_CA" "REALCHAT_INTERNAL_TLS_CERT" "REALCHAT_INTERNAL_TLS_KEY" ];

  # What the description of `internalTls.certFile` says of a server's callers.
  callersNote = spec: optionalString (spec.callers != [ ])
    " Its own gRPC server takes calls from ${wordList spec.callers} alone.";
  # `a`, `a and b`, `a, b and c`.
  wordList = words:
    if builtins.length words < 2 then concatStringsSep "" words
    else "${concatStringsSep ", " (lib.init words)} and ${last words}";

  renderValue = value:
    if builtins.isBool value then lib.boolToString value else toString value;

  # Variables the typed options own; `settings` may not set them too.
  typedVariables = spec:
    [
      spec.listenVar
      "REALCHAT_${spec.prefix}_ADMIN_ADDR"
      "REALCHAT_LOG_FORMAT"
      "OTEL_EXPORTER_OTLP_ENDPOINT"
    ]
    ++ optional spec.database "REALCHAT_${spec.prefix}_DATABASE_URL"
    ++ optional spec.kafka "REALCHAT_KAFKA_BROKERS"
    ++ optional spec.redis "REALCHAT_REDIS_URL"
    ++ mapAttrsToList (upstream: _: "REALCHAT_${lib.toUpper upstream}_ENDPOINT") spec.upstreams
    ++ optional spec.deliveryEndpoints "REALCHAT_DELIVERY_ENDPOINTS"
    ++ optional spec.keyEncryptionKey "REALCHAT_${spec.prefix}_KEY_ENCRYPTION_KEY_FILE"
    ++ mapAttrsToList (_: file: file.variable) internalTlsFiles
    ++ internalTlsTextVariables;

  # The host name as NixOS knows it; empty when it comes from DHCP.
  hostName = config.networking.hostName or "";

  serviceOptions = name: spec: { config, ... }: {
    options = {
      enable = mkEnableOption spec.description;

      package = mkOption {
        type = types.package;
        default = cfg.packages.${name} or (throw
          "services.realchat.${name}.package is not set (the flake's module sets it for its own systems)");
        defaultText = literalExpression "self.packages.\${system}.${name}";
        description = "Package providing `bin/${name}`.";
      };

      listenAddress = mkOption {
        type = socketAddress;
        default = spec.listen;
        example = "0.0.0.0:${toString (portOf spec.listen)}";
        description = "Address of the main listener (`${spec.listenVar}`).";
      };

      adminAddress = mkOption {
        type = socketAddress;
        default = spec.admin;
        description = ''
          Address of the admin listener: `/metrics`, `/healthz`, `/readyz`
          (`REALCHAT_${spec.prefix}_ADMIN_ADDR`). `openFirewall` does not open it.
        '';
      };

      prometheusInstance = mkOption {
        type = types.nonEmptyStr;
        default = if hostName == "" then name else "${name}-${hostName}";
        defaultText = literalExpression ''"${name}-''${config.networking.hostName}"'';
        example = "${name}-1";
        description = ''
          The `instance` label of this service's metrics when `services.realchat.prometheus` has
          the local Prometheus scrape it (`job` is `${name}`). The dashboards and alerts name a
          replica by it, and several replicas of one service (on several hosts, seen by one
          Prometheus through federation or remote write) need different ones: the default
          names the service and the host, unique across a fleet and across the services of one
          host, as the overview dashboard lists every instance of every service together.
        '';
      };

      logFormat = mkOption {
        type = types.enum [ "human" "json" ];
        default = "human";
        description = "Log format (`REALCHAT_LOG_FORMAT`): `json` for log shippers.";
      };

      otlpEndpoint = mkOption {
        type = types.nullOr httpUrl;
        default = null;
        example = "http://127.0.0.1:4317";
        description = "OTLP/gRPC collector for traces (`OTEL_EXPORTER_OTLP_ENDPOINT`); none when null.";
      };

      settings = mkOption {
        type = types.attrsOf settingValue;
        default = { };
        example = literalExpression ''{ REALCHAT_LOG = "info,realchat_${name}=debug"; }'';
        description = ''
          Every other `REALCHAT_*` variable the binary reads (`${name} settings` lists them with
          their defaults). Booleans become `true`/`false`. Variables owned by a typed option
          are refused here.
        '';
      };

      environmentFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/realchat-${name}.env";
        description = ''
          File of `NAME=value` lines read by systemd at start (`EnvironmentFile=`), for secrets
          such as a database URL with a password. It is never copied into the Nix store; its
          values override the ones set here.
        '';
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the main listener's TCP port in the firewall.";
      };

      # Strings, never Nix paths: a path would be copied into the world-readable store.
      internalTls = {
        caFile = mkOption {
          type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
          default = null;
          example = "/run/secrets/realchat-internal-ca.pem";
          description = ''
            PEM file with the internal certificate authority that issues the services'
            certificates (`REALCHAT_INTERNAL_TLS_CA_FILE`), read at start; it may hold the old and
            the new one while the services move to another. With `certFile` and `keyFile`, every
            internal gRPC connection of ${name} is mutual TLS 1.3; with none of the three,
            plaintext (the service warns). All three or none. systemd hands each of them to the
            unit as a credential (`LoadCredential=`).
          '';
        };
        certFile = mkOption {
          type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
          default = null;
          example = "/run/secrets/realchat-${name}.pem";
          description = ''
            PEM file with ${name}'s certificate chain (`REALCHAT_INTERNAL_TLS_CERT_FILE`), issued by
            `caFile`'s authority, with the DNS name `${name}.realchat.internal` and the extended
            key usages serverAuth and clientAuth. ${name} presents it to the services it calls, and
            each of them must present the name of the service ${name} meant to call, whatever
            address it was reached at.${callersNote spec} The binary reads the file again when it
            changes, but systemd hands it over as a credential (`LoadCredential=`), copied as the
            unit starts: a renewed certificate takes effect on `systemctl restart realchat-${name}`.
          '';
        };
        keyFile = mkOption {
          type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
          default = null;
          example = "/run/secrets/realchat-${name}.key";
          description = ''
            PEM file with the private key of `certFile` (`REALCHAT_INTERNAL_TLS_KEY_FILE`).
            systemd hands it to the unit as a credential (`LoadCredential=`), so it may stay
            readable by root alone; like the certificate, a new key takes effect on
            `systemctl restart realchat-${name}`.
          '';
        };
      };
    }
    // optionalAttrs spec.database {
      databaseUrl = mkOption {
        type = types.nullOr postgresUrl;
        default =
          if config.createLocalDatabase
          then "postgres:///${config.databaseName}?host=/run/postgresql&user=realchat-${name}"
          else null;
        defaultText = literalExpression ''
          if createLocalDatabase then "postgres:///<databaseName>?host=/run/postgresql&user=realchat-${name}"
          else null (the binary's default)'';
        description = ''
          PostgreSQL URL of the service's database (`REALCHAT_${spec.prefix}_DATABASE_URL`).
          It lands in the Nix store: put a URL with a password in `environmentFile` instead.
        '';
      };

      databaseName = mkOption {
        type = types.strMatching "^[a-z_][a-z0-9_]*$";
        default = name;
        description = "Name of the database `createLocalDatabase` creates.";
      };

      createLocalDatabase = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Create the database and a role `realchat-${name}` owning it in the local PostgreSQL
          (`services.postgresql`), and connect over its Unix socket with peer authentication.
        '';
      };
    }
    // optionalAttrs spec.kafka {
      kafkaBrokers = mkOption {
        type = types.nonEmptyListOf brokerAddress;
        default = [ "127.0.0.1:9092" ];
        description = "Kafka bootstrap servers (`REALCHAT_KAFKA_BROKERS`).";
      };
    }
    // optionalAttrs spec.redis {
      redisUrl = mkOption {
        type = redisUrl;
        default = "redis://127.0.0.1:6390";
        example = "redis://127.0.0.1:6379";
        description = "Redis URL (`REALCHAT_REDIS_URL`).";
      };
    }
    // optionalAttrs (spec.upstreams != { }) {
      endpoints = mapAttrs
        (upstream: default: mkOption {
          type = httpUrl;
          inherit default;
          description = "gRPC endpoint of the ${upstream} service (`REALCHAT_${lib.toUpper upstream}_ENDPOINT`).";
        })
        spec.upstreams;
    }
    // optionalAttrs spec.deliveryEndpoints {
      deliveryEndpoints = mkOption {
        type = types.nonEmptyListOf wsUrl;
        default = [ "ws://127.0.0.1:8081" ];
        example = [ "ws://10.0.0.11:8081" "ws://10.0.0.12:8081" ];
        description = ''
          Delivery replicas the gateway proxies `/v1/ws` and `/v1/presence` to
          (`REALCHAT_DELIVERY_ENDPOINTS`); a socket goes to the next one that answers.
        '';
      };
    }
    // optionalAttrs spec.keyEncryptionKey {
      keyEncryptionKeyFile = mkOption {
        # A string, never a Nix path: a path would be copied into the world-readable store.
        type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
        default = null;
        example = "/run/secrets/realchat-${name}-kek";
        description = ''
          File holding the key-encryption key that seals the signing keys in the database: 32
          random bytes in base64 (`openssl rand -base64 32`). systemd hands it to the unit as a
          credential (`LoadCredential=`), so it may stay readable by root alone, and the binary
          reads it from there (`REALCHAT_${spec.prefix}_KEY_ENCRYPTION_KEY_FILE`). Unset, the keys
          are stored unsealed and the service warns. To rotate it, point this at the new key and
          put the old one in `environmentFile` as `REALCHAT_${spec.prefix}_OLD_KEY_ENCRYPTION_KEYS=...`
          until the service has restarted with both (it reseals as it starts).
        '';
      };
    };
  };

  # The key-encryption key reaches the unit as a systemd credential of this name.
  keyEncryptionKeyCredential = "key-encryption-key";
  hasKeyEncryptionKey = spec: svc: spec.keyEncryptionKey && svc.keyEncryptionKeyFile != null;

  # The `internalTls` files left unset; all three or none, as an assertion demands.
  internalTlsUnset = svc: builtins.filter (option: svc.internalTls.${option} == null) (builtins.attrNames internalTlsFiles);
  hasInternalTls = svc: internalTlsUnset svc == [ ];

  # `LoadCredential=` entries: `<credential name>:<file>`.
  credentialsOf = spec: svc:
    optional (hasKeyEncryptionKey spec svc) "${keyEncryptionKeyCredential}:${svc.keyEncryptionKeyFile}"
    ++ optionals (hasInternalTls svc)
      (mapAttrsToList (option: file: "${file.credential}:${svc.internalTls.${option}}") internalTlsFiles);

  # The unit's environment: the typed options, then `settings`.
  environmentOf = spec: svc:
    {
      ${spec.listenVar} = svc.listenAddress;
      "REALCHAT_${spec.prefix}_ADMIN_ADDR" = svc.adminAddress;
      REALCHAT_LOG_FORMAT = svc.logFormat;
    }
    // optionalAttrs (svc.otlpEndpoint != null) { OTEL_EXPORTER_OTLP_ENDPOINT = svc.otlpEndpoint; }
    // optionalAttrs (spec.database && svc.databaseUrl != null) {
      "REALCHAT_${spec.prefix}_DATABASE_URL" = svc.databaseUrl;
    }
    // optionalAttrs spec.kafka { REALCHAT_KAFKA_BROKERS = concatStringsSep "," svc.kafkaBrokers; }
    // optionalAttrs spec.redis { REALCHAT_REDIS_URL = svc.redisUrl; }
    // mapAttrs' (upstream: url: nameValuePair "REALCHAT_${lib.toUpper upstream}_ENDPOINT" url)
      (svc.endpoints or { })
    // optionalAttrs spec.deliveryEndpoints {
      REALCHAT_DELIVERY_ENDPOINTS = concatStringsSep "," svc.deliveryEndpoints;
    }
    // optionalAttrs (hasKeyEncryptionKey spec svc) {
      # %d is the unit's credentials directory, where LoadCredential= puts the file.
      "REALCHAT_${spec.prefix}_KEY_ENCRYPTION_KEY_FILE" = "%d/${keyEncryptionKeyCredential}";
    }
    # The internal TLS files, from the same directory.
    // optionalAttrs (hasInternalTls svc)
      (mapAttrs' (_: file: nameValuePair file.variable "%d/${file.credential}") internalTlsFiles)
    // mapAttrs (_: renderValue) svc.settings;

  enabled = filterAttrs (name: _: cfg.${name}.enable) specs;

  localRedisUnits = mapAttrsToList (server: _: if server == "" then "redis.service" else "redis-${server}.service")
    (filterAttrs (_: server: server.enable) (config.services.redis.servers or { }));

  unitOf = name: spec:
    let
      svc = cfg.${name};
      ports = [ (portOf svc.listenAddress) (portOf svc.adminAddress) ];
      privilegedPort = builtins.any (port: port < 1024) ports;
      # Local dependencies start first, but only `wants`: a broker or Redis that stops must not
      # stop the service (a Kafka outage is something it rides out, with its outbox growing).
      localDeps =
        optionals (spec.database && config.services.postgresql.enable) [ "postgresql.target" ]
        ++ optionals (spec.kafka && config.services.apache-kafka.enable) [ "apache-kafka.service" ]
        ++ optionals spec.redis localRedisUnits;
    in
    {
      description = spec.description;
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ] ++ localDeps;
      wants = [ "network-online.target" ] ++ localDeps;
      environment = environmentOf spec svc;
      serviceConfig = {
        ExecStart = "${svc.package}/bin/${name}";
        Restart = "on-failure";
        RestartSec = "2s";
        # Long enough for the drain the binary bounds itself (REALCHAT_SHUTDOWN_GRACE_SECS).
        TimeoutStopSec = "90s";

        DynamicUser = true;
        User = "realchat-${name}";
        UMask = "0077";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        # Only a listener below 1024 needs a capability; the set is otherwise empty.
        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
        AmbientCapabilities = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        SystemCallArchitectures = "native";
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
      }
      // optionalAttrs (svc.environmentFile != null) { EnvironmentFile = svc.environmentFile; }
      // optionalAttrs (credentialsOf spec svc != [ ]) { LoadCredential = credentialsOf spec svc; };
    };

  localDatabases = filterAttrs (name: spec: spec.database && cfg.${name}.createLocalDatabase) enabled;

  # One scrape job per service running here, labelled as dashboards/prometheus/prometheus.yml labels
  # the local topology: `job` is the service, `instance` its `prometheusInstance`.
  scrapeConfigs = mapAttrsToList
    (name: _: {
      job_name = name;
      scrape_interval = cfg.prometheus.scrapeInterval;
      metrics_path = "/metrics";
      static_configs = [{
        targets = [ (scrapeTarget cfg.${name}.adminAddress) ];
        labels.instance = cfg.${name}.prometheusInstance;
      }];
    })
    enabled;
in
{
  options.services.realchat =
    mapAttrs
      (name: spec: mkOption {
        type = types.submodule (serviceOptions name spec);
        default = { };
        description = "The RealChat ${name} service.";
      })
      specs
    // {
      packages = mkOption {
        type = types.attrsOf types.package;
        default = { };
        defaultText = literalExpression "self.packages.\${system} (set by the flake's module)";
        description = "Where each service's `package` comes from by default, by service name.";
      };

      prometheus = {
        enable = mkOption {
          type = types.bool;
          default = false;
          description = ''
            Have the local Prometheus (`services.prometheus`) scrape the RealChat services of this
            host: one job per enabled service, named after it (`job`), on its `adminAddress`
            (`/metrics`; an address on every interface is scraped over loopback), with its
            `prometheusInstance` as `instance`, and the repository's alert rules
            (`dashboards/prometheus/rules`, which rely on these two labels). Prometheus itself is
            not turned on: set `services.prometheus.enable = true` as well (the module warns
            otherwise). A job of the same name already in `services.prometheus.scrapeConfigs`
            makes Prometheus refuse its configuration.
          '';
        };

        scrapeInterval = mkOption {
          type = types.strMatching "^([0-9]+(ms|s|m|h|d|w|y))+$" // {
            description = "Prometheus duration (`10s`, `1m30s`)";
          };
          default = "10s";
          example = "15s";
          description = ''
            How often the jobs scrape (`scrape_interval` of each job, whatever the global one). The
            alert rules assume a sample at least every 30 s (`max_over_time(...[30s])`); the
            repository's own Prometheus configuration scrapes every 10 s.
          '';
        };

        ruleFiles = mkOption {
          type = types.listOf types.path;
          default = repositoryRuleFiles;
          defaultText = literalExpression "every dashboards/prometheus/rules/*.yml of the repository";
          description = ''
            Alert rule files added to `services.prometheus.ruleFiles`. Each alert's runbook is in
            its annotations and in dashboards/README.md.
          '';
        };
      };
    };

  config = mkMerge [
    {
      assertions = concatMap
        (name:
          let
            svc = cfg.${name};
            owned = builtins.filter (variable: svc.settings ? ${variable}) (typedVariables specs.${name});
            foreign = builtins.filter (variable: !(hasPrefix "REALCHAT_" variable)) (builtins.attrNames svc.settings);
            tlsUnset = internalTlsUnset svc;
          in
          [
            {
              assertion = owned == [ ];
              message = "services.realchat.${name}.settings sets ${concatStringsSep ", " owned}, which a typed option of services.realchat.${name} owns; use that option.";
            }
            {
              assertion = foreign == [ ];
              message = "services.realchat.${name}.settings may only hold REALCHAT_* variables, not ${concatStringsSep ", " foreign}.";
            }
            {
              # All three or none.
              assertion = builtins.elem (builtins.length tlsUnset) [ 0 3 ];
              message = "services.realchat.${name}.internalTls needs caFile, certFile and keyFile, or none of them; not set: ${concatStringsSep ", " tlsUnset}.";
            }
          ]
          ++ optional (specs.${name}.database && svc.createLocalDatabase) {
            assertion = config.services.postgresql.enable;
            message = "services.realchat.${name}.createLocalDatabase needs services.postgresql.enable.";
          })
        (builtins.attrNames enabled);

      systemd.services = mapAttrs' (name: spec: nameValuePair "realchat-${name}" (unitOf name spec)) enabled;

      networking.firewall.allowedTCPPorts =
        concatMap (name: optional cfg.${name}.openFirewall (portOf cfg.${name}.listenAddress))
          (builtins.attrNames enabled);
    }

    (mkIf (localDatabases != { }) {
      services.postgresql = {
        enable = mkDefault true;
        ensureDatabases = mapAttrsToList (name: _: cfg.${name}.databaseName) localDatabases;
        ensureUsers = mapAttrsToList (name: _: { name = "realchat-${name}"; }) localDatabases;
      };
      # `ensureDBOwnership` needs the role and the database to share a name; here the database
      # keeps the service's name (as in every other deployment) and the role the unit's user.
      systemd.services.postgresql-setup.script = lib.mkAfter (concatStringsSep "\n"
        (mapAttrsToList
          (name: _: "psql -tAc 'ALTER DATABASE \"${cfg.${name}.databaseName}\" OWNER TO \"realchat-${name}\"'")
          localDatabases));
    })

    # The services only add their jobs and rules to a Prometheus the host runs; they do not turn
    # it on. `createLocalDatabase` turns the local PostgreSQL on (`mkDefault`) because the service
    # cannot run without it, as nixpkgs' modules do for a database they create; the services run
    # without Prometheus, and turning it on would start a server answering on every interface
    # (nixpkgs' default `listenAddress`) with storage of its own, which is the operator's choice.
    # nixpkgs' exporters (`services.prometheus.exporters.*`) leave the server to the operator too.
    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        inherit scrapeConfigs;
        inherit (cfg.prometheus) ruleFiles;
      };
      warnings = optional (!config.services.prometheus.enable)
        "services.realchat.prometheus.enable adds scrape jobs and alert rules to services.prometheus, which is not enabled: set services.prometheus.enable = true, or they are not used.";
    })
  ];
}
