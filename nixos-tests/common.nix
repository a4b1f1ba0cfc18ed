# The machines both VM tests boot: `backend` runs PostgreSQL, Redis, Apache Kafka (KRaft) and
# auth, profile, messaging and the gateway; `delivery1` and `delivery2` run one delivery replica
# each; `client` only has the `realchat` command line. Every RealChat service is configured
# through the NixOS module, as on a real host, and the services call each other over mutual TLS.
{ module, packages }:

let
  # A KRaft cluster id is 16 bytes in URL-safe base64; these are the bytes of "realchat-vm-test".
  clusterId = "cmVhbGNoYXQtdm0tdGVzdA";
  kafkaBrokers = [ "backend:9092" ];

  # The internal certificate authority and a certificate for each service naming it
  # (`<service>.realchat.internal`, for serverAuth and clientAuth), made when the test is built.
  # Test keys only: the derivation puts them in the world-readable store, which is why the
  # machines copy them out (below) for the options, which refuse store paths.
  internalPki = pkgs: pkgs.runCommand "realchat-internal-tls" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir -p $out
    cd $out
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
      -subj "/CN=RealChat internal CA (VM tests)" \
      -addext basicConstraints=critical,CA:TRUE,pathlen:0 \
      -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem
    serial=1
    for service in auth messaging profile delivery gateway; do
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=$service.realchat.internal" -keyout $service.key -out $service.csr
      printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
        extendedKeyUsage=serverAuth,clientAuth "subjectAltName=DNS:$service.realchat.internal" \
        >$service.ext
      openssl x509 -req -in $service.csr -CA ca.pem -CAkey ca.key -set_serial $serial -days 825 \
        -extfile $service.ext -out $service.pem
      serial=$((serial + 1))
    done
    # Nothing else is issued: the authority's key goes.
    rm ca.key ./*.csr ./*.ext
  '';

  # A machine's copies of the authority and of its services' certificates and keys, in
  # /etc/realchat/internal-tls (`environment.etc` with a mode copies a file instead of linking
  # it to the store; the keys readable by root alone, as systemd loads them as credentials), and
  # those services' `internalTls` pointed at them.
  internalTls = services: { pkgs, ... }:
    let
      pki = internalPki pkgs;
      dir = "/etc/realchat/internal-tls";
      copy = file: mode: {
        name = "realchat/internal-tls/${file}";
        value = { source = "${pki}/${file}"; inherit mode; };
      };
    in
    {
      environment.etc = builtins.listToAttrs ([ (copy "ca.pem" "0444") ]
        ++ builtins.concatMap (service: [ (copy "${service}.pem" "0444") (copy "${service}.key" "0400") ]) services);
      services.realchat = builtins.listToAttrs (map
        (service: {
          name = service;
          value.internalTls = {
            caFile = "${dir}/ca.pem";
            certFile = "${dir}/${service}.pem";
            keyFile = "${dir}/${service}.key";
          };
        })
        services);
    };
in
{
  backend = { pkgs, ... }: {
    imports = [ module (internalTls [ "auth" "profile" "messaging" "gateway" ]) ];

    virtualisation.memorySize = 3072;
    virtualisation.cores = 2;
    virtualisation.diskSize = 4096;

    services.postgresql.enable = true;

    services.redis.servers.realchat = {
      enable = true;
      port = 6379;
      bind = null;
      openFirewall = true;
      # No password inside the test network; protected mode would refuse the other machines.
      settings.protected-mode = "no";
    };

    services.apache-kafka = {
      enable = true;
      inherit clusterId;
      formatLogDirs = true;
      jvmOptions = [ "-Xms256m" "-Xmx768m" ];
      settings = {
        "node.id" = 1;
        "process.roles" = [ "broker" "controller" ];
        "listeners" = [ "PLAINTEXT://:9092" "CONTROLLER://:9093" ];
        "advertised.listeners" = [ "PLAINTEXT://backend:9092" ];
        "listener.security.protocol.map" = [ "PLAINTEXT:PLAINTEXT" "CONTROLLER:PLAINTEXT" ];
        "controller.listener.names" = [ "CONTROLLER" ];
        "controller.quorum.voters" = [ "1@backend:9093" ];
        "log.dirs" = [ "/var/lib/apache-kafka" ];
        "offsets.topic.replication.factor" = 1;
        "transaction.state.log.replication.factor" = 1;
        "transaction.state.log.min.isr" = 1;
        "group.initial.rebalance.delay.ms" = 0;
        # The services create their topics (REALCHAT_KAFKA_CREATE_TOPICS) with their partition
        # counts; nothing else should.
        "auto.create.topics.enable" = false;
      };
    };
    networking.firewall.allowedTCPPorts = [ 9092 ];

    services.realchat = {
      auth = {
        enable = true;
        listenAddress = "0.0.0.0:7051";
        openFirewall = true;
        createLocalDatabase = true;
        inherit kafkaBrokers;
        logFormat = "json";
      };
      profile = {
        enable = true;
        listenAddress = "0.0.0.0:7053";
        openFirewall = true;
        createLocalDatabase = true;
        inherit kafkaBrokers;
        logFormat = "json";
      };
      messaging = {
        enable = true;
        listenAddress = "0.0.0.0:7052";
        openFirewall = true;
        createLocalDatabase = true;
        inherit kafkaBrokers;
        logFormat = "json";
      };
      gateway = {
        enable = true;
        listenAddress = "0.0.0.0:8080";
        openFirewall = true;
        redisUrl = "redis://127.0.0.1:6379";
        deliveryEndpoints = [ "ws://delivery1:8081" "ws://delivery2:8081" ];
        logFormat = "json";
        # Both tests send faster than one user's default budget.
        settings.REALCHAT_GATEWAY_RATE_LIMITS = false;
      };
    };

    environment.systemPackages = [ packages.bench pkgs.curl ];
  };

  delivery = { config, pkgs, ... }: {
    imports = [ module (internalTls [ "delivery" ]) ];

    virtualisation.memorySize = 1024;

    services.realchat.delivery = {
      enable = true;
      listenAddress = "0.0.0.0:8081";
      openFirewall = true;
      inherit kafkaBrokers;
      redisUrl = "redis://backend:6379";
      endpoints = {
        auth = "http://backend:7051";
        messaging = "http://backend:7052";
      };
      logFormat = "json";
      settings.REALCHAT_DELIVERY_NODE_ID = config.networking.hostName;
    };

    environment.systemPackages = [ pkgs.curl ];
  };

  client = { ... }: {
    environment.systemPackages = [ packages.realchat ];
  };
}
