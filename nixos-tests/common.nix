# The machines both VM tests boot: `backend` runs PostgreSQL, Redis, Apache Kafka (KRaft) and
# auth, profile, messaging and the gateway; `delivery1` and `delivery2` run one delivery replica
# each; `client` only has the `realchat` command line. Every RealChat service is configured
# through the NixOS module, as on a real host.
{ module, packages }:

let
  # A KRaft cluster id is 16 bytes in URL-safe base64; these are the bytes of "realchat-vm-test".
  clusterId = "cmVhbGNoYXQtdm0tdGVzdA";
  kafkaBrokers = [ "backend:9092" ];
in
{
  backend = { pkgs, ... }: {
    imports = [ module ];

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
    imports = [ module ];

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
