# What every container that runs a RealChat binary is given: plain settings in `environment`, and in
# `secrets` the ones that carry credentials, as Secrets Manager ARNs (`<arn>:<json-key>::` picks one
# key of a JSON secret); every service gets its internal TLS identity that way (internal_tls.tf):
# the authorities it trusts, its certificate and its key. This is the only place that names
# REALCHAT_* variables; the task definitions are built from it, and infra/tests checks every name
# here against what the binary prints with `<binary> settings`: each one must be read by that
# binary, each secret setting must come from `secrets`, and each setting whose default only works
# on one machine (127.0.0.1) must be set.

locals {
  trust_dir     = var.trust_dir
  rds_ca_file   = "${var.trust_dir}/rds-ca.pem"
  amazon_ca     = "${var.trust_dir}/amazon-ca.pem"
  internal_zone = aws_service_discovery_private_dns_namespace.this.name

  kafka_brokers = var.kafka.bootstrap_brokers
  kafka_prefix  = var.kafka.topic_prefix

  endpoints = {
    auth      = "http://auth.${local.internal_zone}:${var.ports.auth}"
    messaging = "http://messaging.${local.internal_zone}:${var.ports.messaging}"
    profile   = "http://profile.${local.internal_zone}:${var.ports.profile}"
    delivery  = "ws://delivery.${local.internal_zone}:${var.ports.delivery}"
  }

  settings = {
    gateway = {
      binary = "gateway"
      role   = "service"
      environment = {
        REALCHAT_LOG                        = var.log_filter
        REALCHAT_LOG_FORMAT                 = "json"
        REALCHAT_SHUTDOWN_GRACE_SECS        = tostring(var.shutdown_grace_secs)
        OTEL_EXPORTER_OTLP_ENDPOINT         = var.otel_endpoint
        REALCHAT_GATEWAY_ADDR               = "0.0.0.0:${var.ports.gateway}"
        REALCHAT_GATEWAY_ADMIN_ADDR         = "0.0.0.0:${var.ports.gateway_admin}"
        REALCHAT_AUTH_ENDPOINT              = local.endpoints.auth
        REALCHAT_MESSAGING_ENDPOINT         = local.endpoints.messaging
        REALCHAT_PROFILE_ENDPOINT           = local.endpoints.profile
        REALCHAT_DELIVERY_ENDPOINTS         = local.endpoints.delivery
        REALCHAT_GATEWAY_REDIS_PREFIX       = var.redis_prefix
        REALCHAT_GATEWAY_TRUSTED_PROXY_HOPS = "1"
      }
      secrets = {
        REALCHAT_REDIS_URL         = var.redis.url_secret_arn
        REALCHAT_INTERNAL_TLS_CA   = "${local.internal_tls_secret_arn.gateway}:ca::"
        REALCHAT_INTERNAL_TLS_CERT = "${local.internal_tls_secret_arn.gateway}:cert::"
        REALCHAT_INTERNAL_TLS_KEY  = "${local.internal_tls_secret_arn.gateway}:key::"
      }
    }

    auth = {
      binary = "auth"
      role   = "service"
      environment = {
        REALCHAT_LOG                           = var.log_filter
        REALCHAT_LOG_FORMAT                    = "json"
        REALCHAT_SHUTDOWN_GRACE_SECS           = tostring(var.shutdown_grace_secs)
        OTEL_EXPORTER_OTLP_ENDPOINT            = var.otel_endpoint
        REALCHAT_AUTH_GRPC_ADDR                = "0.0.0.0:${var.ports.auth}"
        REALCHAT_AUTH_ADMIN_ADDR               = "0.0.0.0:${var.ports.auth_admin}"
        REALCHAT_AUTH_DATABASE_MAX_CONNECTIONS = tostring(var.database_max_connections.auth)
        REALCHAT_AUTH_MIGRATE                  = "false"
        REALCHAT_KAFKA_BROKERS                 = local.kafka_brokers
        REALCHAT_KAFKA_TOPIC_PREFIX            = local.kafka_prefix
        REALCHAT_KAFKA_CREATE_TOPICS           = "false"
        REALCHAT_KAFKA_SECURITY_PROTOCOL       = "sasl_ssl"
        REALCHAT_KAFKA_SASL_MECHANISM          = "SCRAM-SHA-512"
        REALCHAT_KAFKA_SASL_USERNAME           = var.kafka.users.auth.username
        REALCHAT_KAFKA_SSL_CA_FILE             = local.amazon_ca
      }
      secrets = {
        REALCHAT_AUTH_DATABASE_URL   = var.postgres.databases.auth.url_secret_arn
        REALCHAT_KAFKA_SASL_PASSWORD = "${var.kafka.users.auth.secret_arn}:password::"
        # The key-encryption keys that seal the signing keys in the database (see main.tf).
        REALCHAT_AUTH_KEY_ENCRYPTION_KEY      = "${aws_secretsmanager_secret.auth_kek.arn}:current::"
        REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS = "${aws_secretsmanager_secret.auth_kek.arn}:old::"
        REALCHAT_INTERNAL_TLS_CA              = "${local.internal_tls_secret_arn.auth}:ca::"
        REALCHAT_INTERNAL_TLS_CERT            = "${local.internal_tls_secret_arn.auth}:cert::"
        REALCHAT_INTERNAL_TLS_KEY             = "${local.internal_tls_secret_arn.auth}:key::"
      }
    }

    messaging = {
      binary = "messaging"
      role   = "service"
      environment = {
        REALCHAT_LOG                                = var.log_filter
        REALCHAT_LOG_FORMAT                         = "json"
        REALCHAT_SHUTDOWN_GRACE_SECS                = tostring(var.shutdown_grace_secs)
        OTEL_EXPORTER_OTLP_ENDPOINT                 = var.otel_endpoint
        REALCHAT_MESSAGING_GRPC_ADDR                = "0.0.0.0:${var.ports.messaging}"
        REALCHAT_MESSAGING_ADMIN_ADDR               = "0.0.0.0:${var.ports.messaging_admin}"
        REALCHAT_MESSAGING_DATABASE_MAX_CONNECTIONS = tostring(var.database_max_connections.messaging)
        REALCHAT_MESSAGING_MIGRATE                  = "false"
        REALCHAT_MESSAGING_RELAY                    = "true"
        REALCHAT_AUTH_ENDPOINT                      = local.endpoints.auth
        REALCHAT_MESSAGING_CONSUMER_GROUP           = var.kafka.users.messaging.group
        REALCHAT_KAFKA_BROKERS                      = local.kafka_brokers
        REALCHAT_KAFKA_TOPIC_PREFIX                 = local.kafka_prefix
        REALCHAT_KAFKA_CREATE_TOPICS                = "false"
        REALCHAT_KAFKA_SECURITY_PROTOCOL            = "sasl_ssl"
        REALCHAT_KAFKA_SASL_MECHANISM               = "SCRAM-SHA-512"
        REALCHAT_KAFKA_SASL_USERNAME                = var.kafka.users.messaging.username
        REALCHAT_KAFKA_SSL_CA_FILE                  = local.amazon_ca
      }
      secrets = {
        REALCHAT_MESSAGING_DATABASE_URL = var.postgres.databases.messaging.url_secret_arn
        REALCHAT_KAFKA_SASL_PASSWORD    = "${var.kafka.users.messaging.secret_arn}:password::"
        REALCHAT_INTERNAL_TLS_CA        = "${local.internal_tls_secret_arn.messaging}:ca::"
        REALCHAT_INTERNAL_TLS_CERT      = "${local.internal_tls_secret_arn.messaging}:cert::"
        REALCHAT_INTERNAL_TLS_KEY       = "${local.internal_tls_secret_arn.messaging}:key::"
      }
    }

    profile = {
      binary = "profile"
      role   = "service"
      environment = {
        REALCHAT_LOG                              = var.log_filter
        REALCHAT_LOG_FORMAT                       = "json"
        REALCHAT_SHUTDOWN_GRACE_SECS              = tostring(var.shutdown_grace_secs)
        OTEL_EXPORTER_OTLP_ENDPOINT               = var.otel_endpoint
        REALCHAT_PROFILE_GRPC_ADDR                = "0.0.0.0:${var.ports.profile}"
        REALCHAT_PROFILE_ADMIN_ADDR               = "0.0.0.0:${var.ports.profile_admin}"
        REALCHAT_PROFILE_DATABASE_MAX_CONNECTIONS = tostring(var.database_max_connections.profile)
        REALCHAT_PROFILE_MIGRATE                  = "false"
        REALCHAT_AUTH_ENDPOINT                    = local.endpoints.auth
        REALCHAT_PROFILE_CONSUMER_GROUP           = var.kafka.users.profile.group
        REALCHAT_KAFKA_BROKERS                    = local.kafka_brokers
        REALCHAT_KAFKA_TOPIC_PREFIX               = local.kafka_prefix
        REALCHAT_KAFKA_CREATE_TOPICS              = "false"
        REALCHAT_KAFKA_SECURITY_PROTOCOL          = "sasl_ssl"
        REALCHAT_KAFKA_SASL_MECHANISM             = "SCRAM-SHA-512"
        REALCHAT_KAFKA_SASL_USERNAME              = var.kafka.users.profile.username
        REALCHAT_KAFKA_SSL_CA_FILE                = local.amazon_ca
      }
      secrets = {
        REALCHAT_PROFILE_DATABASE_URL = var.postgres.databases.profile.url_secret_arn
        REALCHAT_KAFKA_SASL_PASSWORD  = "${var.kafka.users.profile.secret_arn}:password::"
        REALCHAT_INTERNAL_TLS_CA      = "${local.internal_tls_secret_arn.profile}:ca::"
        REALCHAT_INTERNAL_TLS_CERT    = "${local.internal_tls_secret_arn.profile}:cert::"
        REALCHAT_INTERNAL_TLS_KEY     = "${local.internal_tls_secret_arn.profile}:key::"
      }
    }

    delivery = {
      binary = "delivery"
      role   = "service"
      environment = {
        REALCHAT_LOG                         = var.log_filter
        REALCHAT_LOG_FORMAT                  = "json"
        REALCHAT_SHUTDOWN_GRACE_SECS         = tostring(var.shutdown_grace_secs)
        OTEL_EXPORTER_OTLP_ENDPOINT          = var.otel_endpoint
        REALCHAT_DELIVERY_ADDR               = "0.0.0.0:${var.ports.delivery}"
        REALCHAT_DELIVERY_ADMIN_ADDR         = "0.0.0.0:${var.ports.delivery_admin}"
        REALCHAT_AUTH_ENDPOINT               = local.endpoints.auth
        REALCHAT_MESSAGING_ENDPOINT          = local.endpoints.messaging
        REALCHAT_DELIVERY_REDIS_PREFIX       = var.redis_prefix
        REALCHAT_DELIVERY_CONSUMER_GROUP     = var.kafka.users.delivery.group
        REALCHAT_DELIVERY_ALLOWED_ORIGINS    = join(",", var.allowed_origins)
        REALCHAT_DELIVERY_PING_INTERVAL_SECS = tostring(var.delivery_ping_interval_secs)
        REALCHAT_DELIVERY_IDLE_TIMEOUT_SECS  = tostring(var.delivery_idle_timeout_secs)
        REALCHAT_KAFKA_BROKERS               = local.kafka_brokers
        REALCHAT_KAFKA_TOPIC_PREFIX          = local.kafka_prefix
        REALCHAT_KAFKA_CREATE_TOPICS         = "false"
        REALCHAT_KAFKA_SECURITY_PROTOCOL     = "sasl_ssl"
        REALCHAT_KAFKA_SASL_MECHANISM        = "SCRAM-SHA-512"
        REALCHAT_KAFKA_SASL_USERNAME         = var.kafka.users.delivery.username
        REALCHAT_KAFKA_SSL_CA_FILE           = local.amazon_ca
      }
      secrets = {
        REALCHAT_REDIS_URL           = var.redis.url_secret_arn
        REALCHAT_KAFKA_SASL_PASSWORD = "${var.kafka.users.delivery.secret_arn}:password::"
        REALCHAT_INTERNAL_TLS_CA     = "${local.internal_tls_secret_arn.delivery}:ca::"
        REALCHAT_INTERNAL_TLS_CERT   = "${local.internal_tls_secret_arn.delivery}:cert::"
        REALCHAT_INTERNAL_TLS_KEY    = "${local.internal_tls_secret_arn.delivery}:key::"
      }
    }

    # The bootstrap task's migration steps: each service's own binary and role, `<binary> migrate`.
    auth-migrate = {
      binary = "auth"
      role   = "migrate"
      environment = {
        REALCHAT_LOG        = var.log_filter
        REALCHAT_LOG_FORMAT = "json"
      }
      secrets = {
        REALCHAT_AUTH_DATABASE_URL = var.postgres.databases.auth.url_secret_arn
      }
    }

    profile-migrate = {
      binary = "profile"
      role   = "migrate"
      environment = {
        REALCHAT_LOG        = var.log_filter
        REALCHAT_LOG_FORMAT = "json"
      }
      secrets = {
        REALCHAT_PROFILE_DATABASE_URL = var.postgres.databases.profile.url_secret_arn
      }
    }

    messaging-migrate = {
      binary = "messaging"
      role   = "migrate"
      environment = {
        REALCHAT_LOG        = var.log_filter
        REALCHAT_LOG_FORMAT = "json"
      }
      secrets = {
        REALCHAT_MESSAGING_DATABASE_URL = var.postgres.databases.messaging.url_secret_arn
      }
    }
  }
}
