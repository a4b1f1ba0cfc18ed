# Evaluates nix/module.nix for real, with nixpkgs' `lib` and no rest of nixpkgs: the NixOS options
# the module sets are declared here with the types NixOS gives them (systemd.services,
# networking.firewall, services.postgresql, ...), everything else a configuration sets is taken
# as free-form. The result is plain data that check-module.py compares with the settings each
# binary reports. Run by check.sh:
#
#   nix-instantiate --eval --strict --json nixos-tests/module-eval.nix --arg lib 'import <nixpkgs-lib>/lib'
{ lib }:

let
  inherit (lib) mkOption types;

  services = [ "auth" "messaging" "profile" "delivery" "gateway" ];

  # Stand-ins for packages: what `types.package` accepts and string interpolation turns into a
  # store path.
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  packages = lib.genAttrs (services ++ [ "realchat" "bench" ]) (name: fakePackage "realchat-${name}");
  pkgs = lib.genAttrs [ "curl" "openssl" ] fakePackage // {
    runCommand = name: _: _: fakePackage name;
  };

  # systemd unit values as NixOS types them (nixos/lib/systemd-unit-options.nix): a primitive or
  # a list of primitives; lists from several definitions are concatenated.
  unitPrimitive = types.oneOf [ types.bool types.int types.str types.path ];
  unitValue = types.oneOf [ unitPrimitive (types.listOf unitPrimitive) ];

  # A Prometheus scrape job as nixpkgs types it (nixos/modules/services/monitoring/prometheus):
  # a submodule of the fields Prometheus knows, each null unless set, so a misspelt or unknown
  # field is refused. Only the fields the module may set are declared here.
  staticConfig = types.submodule {
    options = {
      targets = mkOption { type = types.listOf types.str; };
      labels = mkOption { type = types.attrsOf types.str; default = { }; };
    };
  };
  scrapeConfig = types.submodule {
    options = {
      job_name = mkOption { type = types.str; };
      scrape_interval = mkOption { type = types.nullOr types.str; default = null; };
      scrape_timeout = mkOption { type = types.nullOr types.str; default = null; };
      metrics_path = mkOption { type = types.nullOr types.str; default = null; };
      scheme = mkOption { type = types.nullOr (types.enum [ "http" "https" ]); default = null; };
      static_configs = mkOption { type = types.nullOr (types.listOf staticConfig); default = null; };
    };
  };

  nixosStubs = {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };

      networking.hostName = mkOption { type = types.str; default = "nixos"; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };

      systemd.services = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options = {
            description = mkOption { type = types.str; default = ""; };
            wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
            requiredBy = mkOption { type = types.listOf types.str; default = [ ]; };
            after = mkOption { type = types.listOf types.str; default = [ ]; };
            before = mkOption { type = types.listOf types.str; default = [ ]; };
            wants = mkOption { type = types.listOf types.str; default = [ ]; };
            requires = mkOption { type = types.listOf types.str; default = [ ]; };
            bindsTo = mkOption { type = types.listOf types.str; default = [ ]; };
            partOf = mkOption { type = types.listOf types.str; default = [ ]; };
            environment = mkOption {
              type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
              default = { };
            };
            serviceConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
            unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
            script = mkOption { type = types.lines; default = ""; };
            path = mkOption { type = types.listOf types.package; default = [ ]; };
          };
        });
      };

      services.postgresql = {
        enable = mkOption { type = types.bool; default = false; };
        ensureDatabases = mkOption { type = types.listOf types.str; default = [ ]; };
        ensureUsers = mkOption {
          default = [ ];
          type = types.listOf (types.submodule {
            options = {
              name = mkOption { type = types.str; };
              ensureDBOwnership = mkOption { type = types.bool; default = false; };
              ensureClauses = mkOption { type = types.attrsOf (types.nullOr types.bool); default = { }; };
            };
          });
        };
      };
      services.apache-kafka.enable = mkOption { type = types.bool; default = false; };
      services.prometheus = {
        enable = mkOption { type = types.bool; default = false; };
        scrapeConfigs = mkOption { type = types.listOf scrapeConfig; default = [ ]; };
        ruleFiles = mkOption { type = types.listOf types.path; default = [ ]; };
      };
      services.redis.servers = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          freeformType = types.attrsOf types.anything;
          options = {
            enable = mkOption { type = types.bool; default = false; };
            port = mkOption { type = types.port; default = 6379; };
          };
        });
      };
    };
    # Options of NixOS the module does not touch (virtualisation.*, environment.systemPackages,
    # services.apache-kafka.settings, ...): accepted as they are.
    config._module.freeformType = types.lazyAttrsOf types.anything;
    config._module.args.pkgs = pkgs;
  };

  evaluate = configuration: lib.evalModules {
    modules = [
      nixosStubs
      ../nix/module.nix
      { services.realchat.packages = packages; }
      configuration
    ];
  };

  # What check-module.py looks at.
  facts = configuration:
    let
      inherit (evaluate configuration) config;
      units = lib.filterAttrs (name: _: lib.hasPrefix "realchat-" name) config.systemd.services;
    in
    {
      units = lib.mapAttrs
        (_: unit: {
          inherit (unit) environment after wants requires bindsTo partOf wantedBy serviceConfig;
        })
        units;
      firewall = config.networking.firewall.allowedTCPPorts;
      postgresql = {
        inherit (config.services.postgresql) enable ensureDatabases ensureUsers;
        setupScript = config.systemd.services.postgresql-setup.script or "";
      };
      failedAssertions = map (assertion: assertion.message)
        (builtins.filter (assertion: !assertion.assertion) config.assertions);
      inherit (config) warnings;
      prometheus = {
        inherit (config.services.prometheus) enable scrapeConfigs;
        # Where each file is read from (a string: `toString` does not copy it to the store).
        ruleFiles = map toString config.services.prometheus.ruleFiles;
      };
      # Files under /etc and their modes (`symlink`, NixOS' default, links into the store).
      etc = lib.mapAttrs (_: file: file.mode or "symlink") (config.environment.etc or { });
    };

  everyService = lib.genAttrs services (_: { enable = true; });

  # A service's internal TLS files, outside the store.
  internalTlsOf = service: {
    caFile = "/run/secrets/internal-ca.pem";
    certFile = "/run/secrets/${service}.pem";
    keyFile = "/run/secrets/${service}.key";
  };

  # Whether evaluating a configuration fails (a value refused by its option's type, say).
  refused = configuration:
    !(builtins.tryEval (builtins.deepSeq (facts configuration) true)).success;

  # The VM tests' machines, evaluated as they are written.
  vmMachines = import ./common.nix {
    module = ../nix/module.nix;
    inherit packages;
  };
  topologyNodes = (import ./topology.nix {
    module = ../nix/module.nix;
    inherit packages;
  }).nodes;
in
{
  cases = {
    # Nothing but `enable`: each unit must behave like the binary run with its defaults.
    defaults = facts { services.realchat = everyService; };

    # Every typed option set, on a host that runs PostgreSQL, Kafka and Redis itself.
    local = facts {
      services.postgresql.enable = true;
      services.apache-kafka.enable = true;
      services.redis.servers.realchat = { enable = true; port = 6379; };
      services.realchat = {
        auth = {
          enable = true;
          listenAddress = "0.0.0.0:7051";
          adminAddress = "127.0.0.1:9181";
          createLocalDatabase = true;
          kafkaBrokers = [ "127.0.0.1:9092" "10.0.0.2:9092" ];
          logFormat = "json";
          otlpEndpoint = "http://127.0.0.1:4317";
          openFirewall = true;
          environmentFile = "/run/secrets/auth.env";
          keyEncryptionKeyFile = "/run/secrets/auth-kek";
          internalTls = internalTlsOf "auth";
          settings = {
            REALCHAT_LOG = "info,realchat_auth=debug";
            REALCHAT_AUTH_MIGRATE = false;
            REALCHAT_AUTH_ACCESS_TOKEN_TTL_SECS = 600;
          };
        };
        messaging = {
          enable = true;
          listenAddress = "0.0.0.0:7052";
          createLocalDatabase = true;
          databaseName = "chat_messages";
          kafkaBrokers = [ "127.0.0.1:9092" ];
          endpoints.auth = "http://10.0.0.1:7051";
          otlpEndpoint = "http://127.0.0.1:4317";
          settings.REALCHAT_MESSAGING_SEND_WRITERS = 8;
          internalTls = internalTlsOf "messaging";
        };
        profile = {
          enable = true;
          databaseUrl = "postgres://profile@db.internal:5432/profile";
          internalTls = internalTlsOf "profile";
          kafkaBrokers = [ "127.0.0.1:9092" ];
          endpoints.auth = "http://10.0.0.1:7051";
          otlpEndpoint = "http://127.0.0.1:4317";
        };
        delivery = {
          enable = true;
          listenAddress = "[::]:8081";
          openFirewall = true;
          otlpEndpoint = "https://otel.internal:4317";
          redisUrl = "redis://127.0.0.1:6379";
          endpoints = { auth = "http://10.0.0.1:7051"; messaging = "http://10.0.0.1:7052"; };
          settings = { REALCHAT_DELIVERY_NODE_ID = "delivery-a"; REALCHAT_KAFKA_RECORD_HEADERS = true; };
          internalTls = internalTlsOf "delivery";
        };
        gateway = {
          enable = true;
          listenAddress = "0.0.0.0:443";
          openFirewall = true;
          redisUrl = "redis://127.0.0.1:6379";
          endpoints = {
            auth = "http://10.0.0.1:7051";
            messaging = "http://10.0.0.1:7052";
            profile = "http://10.0.0.1:7053";
          };
          deliveryEndpoints = [ "ws://10.0.0.11:8081" "ws://10.0.0.12:8081" ];
          otlpEndpoint = "http://127.0.0.1:4317";
          settings.REALCHAT_GATEWAY_TRUSTED_PROXY_HOPS = 1;
          internalTls = internalTlsOf "gateway";
        };
      };
    };

    # The machines of nixos-tests/, as the VM tests configure them.
    vmBackend = facts vmMachines.backend;
    vmDelivery = facts { imports = [ vmMachines.delivery ]; networking.hostName = "delivery1"; };
    # The topology test's backend also runs Prometheus.
    vmTopologyBackend = facts { imports = [ topologyNodes.backend ]; networking.hostName = "backend"; };

    # Prometheus scraping every service with nothing else set: the targets of
    # dashboards/prometheus/prometheus.yml.
    prometheusDefaults = facts {
      services.prometheus.enable = true;
      services.realchat = everyService // { prometheus.enable = true; };
    };
    # Admin listeners on every address, an instance label of the operator's, a scrape interval,
    # next to a job of the operator's own.
    prometheus = facts {
      networking.hostName = "chat1";
      services.prometheus = {
        enable = true;
        scrapeConfigs = [{ job_name = "node"; static_configs = [{ targets = [ "127.0.0.1:9100" ]; }]; }];
      };
      services.realchat = everyService // {
        prometheus = { enable = true; scrapeInterval = "15s"; };
        gateway = { enable = true; adminAddress = "0.0.0.0:9280"; };
        delivery = { enable = true; adminAddress = "[::]:9184"; prometheusInstance = "delivery-1"; };
        auth = { enable = true; adminAddress = "10.0.0.1:9181"; };
      };
    };
    # Only some services on this host: only their jobs.
    prometheusSomeServices = facts {
      networking.hostName = "edge";
      services.prometheus.enable = true;
      services.realchat = {
        prometheus.enable = true;
        gateway.enable = true;
        delivery.enable = true;
      };
    };
    # Without Prometheus on the host the jobs would go unused: the module says so.
    prometheusWithoutServer = facts {
      services.realchat = { prometheus.enable = true; auth.enable = true; };
    };

    # Settings that belong to a typed option, or are no RealChat variable: assertions refuse them.
    settingsConflict = facts {
      services.realchat.gateway = { enable = true; settings.REALCHAT_REDIS_URL = "redis://elsewhere:6379"; };
      services.realchat.auth = {
        enable = true;
        settings = { PATH = "/usr/bin"; REALCHAT_AUTH_KEY_ENCRYPTION_KEY_FILE = "/run/secrets/auth-kek"; };
      };
      services.realchat.messaging = { enable = true; settings.REALCHAT_INTERNAL_TLS_KEY_FILE = "/run/secrets/messaging.key"; };
      # The key as PEM text would land in the store.
      services.realchat.profile = { enable = true; settings.REALCHAT_INTERNAL_TLS_KEY = "-----BEGIN PRIVATE KEY-----"; };
    };
    # Internal TLS needs an authority, a certificate and a key: two of them are refused.
    internalTlsPartial = facts {
      services.realchat.messaging = {
        enable = true;
        internalTls = { inherit (internalTlsOf "messaging") caFile certFile; };
      };
    };
    # createLocalDatabase turns the local PostgreSQL on, unless it is forced off.
    databaseWithoutPostgres = facts {
      services.postgresql.enable = lib.mkForce false;
      services.realchat.auth = { enable = true; createLocalDatabase = true; };
    };
  };

  # Each of these must fail to evaluate: the option's type refuses the value.
  refused = {
    addressWithoutPort = refused { services.realchat.auth = { enable = true; listenAddress = "0.0.0.0"; }; };
    addressWithName = refused { services.realchat.auth = { enable = true; listenAddress = "localhost:7051"; }; };
    logFormatUnknown = refused { services.realchat.messaging = { enable = true; logFormat = "xml"; }; };
    brokersNotAList = refused { services.realchat.messaging = { enable = true; kafkaBrokers = "127.0.0.1:9092"; }; };
    brokersEmpty = refused { services.realchat.delivery = { enable = true; kafkaBrokers = [ ]; }; };
    redisUrlNotRedis = refused { services.realchat.gateway = { enable = true; redisUrl = "http://127.0.0.1:6379"; }; };
    databaseUrlNotPostgres = refused { services.realchat.profile = { enable = true; databaseUrl = "mysql://db/profile"; }; };
    deliveryEndpointNotWs = refused { services.realchat.gateway = { enable = true; deliveryEndpoints = [ "http://10.0.0.11:8081" ]; }; };
    endpointNotHttp = refused { services.realchat.delivery = { enable = true; endpoints.auth = "10.0.0.1:7051"; }; };
    otlpNotUrl = refused { services.realchat.auth = { enable = true; otlpEndpoint = "collector:4317"; }; };
    settingFloat = refused { services.realchat.auth = { enable = true; settings.REALCHAT_AUTH_HASH_CONCURRENCY = 1.5; }; };
    openFirewallNotBool = refused { services.realchat.gateway = { enable = true; openFirewall = "yes"; }; };
    # A typed option a service does not have.
    gatewayHasNoDatabase = refused { services.realchat.gateway = { enable = true; databaseUrl = "postgres:///gateway"; }; };
    gatewayHasNoBrokers = refused { services.realchat.gateway = { enable = true; kafkaBrokers = [ "127.0.0.1:9092" ]; }; };
    messagingHasNoKeyEncryptionKey = refused { services.realchat.messaging = { enable = true; keyEncryptionKeyFile = "/run/secrets/kek"; }; };
    # The key-encryption key must stay out of the world-readable store: no store path, and no Nix
    # path, which would be copied there.
    keyEncryptionKeyInStore = refused { services.realchat.auth = { enable = true; keyEncryptionKeyFile = "/nix/store/00000000000000000000000000000000-kek"; }; };
    keyEncryptionKeyNixPath = refused { services.realchat.auth = { enable = true; keyEncryptionKeyFile = ./auth-kek; }; };
    keyEncryptionKeyRelative = refused { services.realchat.auth = { enable = true; keyEncryptionKeyFile = "secrets/auth-kek"; }; };
    # So must the internal TLS files, the keys above all.
    internalTlsKeyInStore = refused { services.realchat.messaging = { enable = true; internalTls = internalTlsOf "messaging" // { keyFile = "/nix/store/00000000000000000000000000000000-messaging.key"; }; }; };
    internalTlsCertNixPath = refused { services.realchat.gateway = { enable = true; internalTls = internalTlsOf "gateway" // { certFile = ./gateway.pem; }; }; };
    internalTlsCaRelative = refused { services.realchat.delivery = { enable = true; internalTls = internalTlsOf "delivery" // { caFile = "internal-ca.pem"; }; }; };
    internalTlsUnknownFile = refused { services.realchat.profile = { enable = true; internalTls.chainFile = "/run/secrets/profile-chain.pem"; }; };
    prometheusIntervalNotDuration = refused { services.realchat = { prometheus = { enable = true; scrapeInterval = "10 seconds"; }; auth.enable = true; }; };
    prometheusInstanceEmpty = refused { services.realchat = { prometheus.enable = true; auth = { enable = true; prometheusInstance = ""; }; }; };
    prometheusRuleFileRelative = refused { services.realchat.prometheus = { enable = true; ruleFiles = [ "rules/extra.yml" ]; }; };
  };

  # A well-typed value next to each refused one, so a check that refuses everything is noticed.
  accepted = {
    ipv6Address = !(refused { services.realchat.auth = { enable = true; listenAddress = "[::1]:7051"; }; });
    brokerByName = !(refused { services.realchat.messaging = { enable = true; kafkaBrokers = [ "kafka-1.internal:9092" ]; }; });
    rediss = !(refused { services.realchat.gateway = { enable = true; redisUrl = "rediss://cache.internal:6380"; }; });
    keyEncryptionKeyOutsideStore = !(refused { services.realchat.auth = { enable = true; keyEncryptionKeyFile = "/run/keys/auth-kek"; }; });
    internalTlsOutsideStore = !(refused { services.realchat.profile = { enable = true; internalTls = internalTlsOf "profile"; }; });
    prometheusIntervalCompound = !(refused { services.realchat = { prometheus = { enable = true; scrapeInterval = "1m30s"; }; auth.enable = true; }; });
  };

  # The repository's rule files, which `services.realchat.prometheus.ruleFiles` must default to.
  ruleFilesDirectory = toString ../dashboards/prometheus/rules;

  # Node names of each VM test, for the type check of its script.
  vmTestNodes = lib.genAttrs [ "topology" "kafka-outage" ]
    (test: builtins.attrNames (import (./. + "/${test}.nix") { module = { }; inherit packages; }).nodes);
}
