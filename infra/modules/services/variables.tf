variable "name" {
  type        = string
  description = "Prefix of every resource name (cluster, services, load balancer, roles)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,21}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 23 lower-case letters, digits or hyphens, starting with a letter (target group names, name-delivery, are limited to 32 characters)."
  }
}

variable "images" {
  type        = map(string)
  description = "OCI image of each service (`gateway`, `auth`, `messaging`, `profile`, `delivery`), by tag or better by digest. Changing one rolls the service out, after the bootstrap task ran with the new images."

  validation {
    condition     = length(setsubtract(toset(["gateway", "auth", "messaging", "profile", "delivery"]), toset(keys(var.images)))) == 0 && length(var.images) == 5 && alltrue([for image in values(var.images) : length(trimspace(image)) > 0])
    error_message = "images must name an image for exactly gateway, auth, messaging, profile and delivery."
  }
}

variable "migrate_command" {
  type        = list(string)
  description = "Arguments that make a service image run its migrations and exit (appended to the image's entrypoint, which is the binary)."
  default     = ["migrate"]
}

variable "vpc_id" {
  type        = string
  description = "VPC of the deployment (the network module's vpc_id)."
}

variable "public_subnet_ids" {
  type        = list(string)
  description = "Public subnets of the load balancer, in at least two zones."

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "The load balancer needs subnets in at least two zones."
  }
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets of the tasks, in at least two zones."

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "The tasks need subnets in at least two zones."
  }
}

variable "security_group_ids" {
  type        = map(string)
  description = "Security group per tier (the network module's security_group_ids): alb, gateway, delivery, auth, messaging, profile, bootstrap."

  validation {
    condition     = length(setsubtract(toset(["alb", "gateway", "delivery", "auth", "messaging", "profile", "bootstrap"]), toset(keys(var.security_group_ids)))) == 0
    error_message = "security_group_ids must hold alb, gateway, delivery, auth, messaging, profile and bootstrap."
  }
}

variable "ports" {
  type        = map(number)
  description = "Listener ports (the network module's ports): gateway, gateway_admin, delivery, delivery_admin, auth, auth_admin, messaging, messaging_admin, profile, profile_admin."

  validation {
    condition     = length(setsubtract(toset(["gateway", "gateway_admin", "delivery", "delivery_admin", "auth", "auth_admin", "messaging", "messaging_admin", "profile", "profile_admin"]), toset(keys(var.ports)))) == 0
    error_message = "ports must hold the main and admin port of every service."
  }
}

variable "postgres" {
  type = object({
    address                = string
    port                   = number
    master_username        = string
    master_user_secret_arn = string
    kms_key_arn            = string
    databases = map(object({
      database            = string
      username            = string
      password_secret_arn = string
      url_secret_arn      = string
    }))
  })
  description = "The postgres module's outputs: where the instance is, its master secret, and per service its database, role and secrets."

  validation {
    condition     = length(setsubtract(toset(["auth", "messaging", "profile"]), toset(keys(var.postgres.databases)))) == 0
    error_message = "postgres.databases must hold auth, messaging and profile."
  }
}

variable "kafka" {
  type = object({
    bootstrap_brokers  = string
    topic_prefix       = string
    topics             = map(number)
    replication_factor = number
    kms_key_arn        = string
    admin_user = object({
      username   = string
      secret_arn = string
    })
    users = map(object({
      username   = string
      secret_arn = string
      produce    = list(string)
      consume    = list(string)
      group      = optional(string)
    }))
  })
  description = "The kafka module's outputs: bootstrap servers, topics, and per service its SASL/SCRAM user, secret, ACLs and consumer group."

  validation {
    condition     = length(setsubtract(toset(["auth", "messaging", "profile", "delivery"]), toset(keys(var.kafka.users)))) == 0
    error_message = "kafka.users must hold auth, messaging, profile and delivery."
  }
}

variable "redis" {
  type = object({
    url_secret_arn = string
    kms_key_arn    = string
  })
  description = "The redis module's outputs: the secret holding the rediss:// URL with the AUTH token, and its key."
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate (issued, in this region) for the load balancer's HTTPS listener."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "ssl_policy" {
  type        = string
  description = "TLS policy of the HTTPS listener."
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "alb_idle_timeout_secs" {
  type        = number
  description = "Seconds the load balancer keeps an idle connection; must exceed delivery_ping_interval_secs so open WebSockets are never cut."
  default     = 120

  validation {
    condition     = var.alb_idle_timeout_secs >= 1 && var.alb_idle_timeout_secs <= 4000
    error_message = "alb_idle_timeout_secs must be from 1 to 4000."
  }
}

variable "alb_deletion_protection" {
  type        = bool
  description = "Refuse to delete the load balancer."
  default     = true
}

variable "alb_access_logs_bucket" {
  type        = string
  description = "Existing S3 bucket (SSE-S3, with the ELB log delivery policy) for the load balancer's access logs; null for none."
  default     = null
}

variable "web_acl_arn" {
  type        = string
  description = "WAFv2 web ACL to associate with the load balancer; null for none."
  default     = null
}

variable "delivery_ping_interval_secs" {
  type        = number
  description = "Seconds between delivery's WebSocket pings (REALCHAT_DELIVERY_PING_INTERVAL_SECS)."
  default     = 30

  validation {
    condition     = var.delivery_ping_interval_secs >= 1 && var.delivery_ping_interval_secs <= 3600
    error_message = "delivery_ping_interval_secs must be from 1 to 3600."
  }
}

variable "delivery_idle_timeout_secs" {
  type        = number
  description = "Seconds without a frame from a client before delivery closes its socket (REALCHAT_DELIVERY_IDLE_TIMEOUT_SECS)."
  default     = 90

  validation {
    condition     = var.delivery_idle_timeout_secs >= 1 && var.delivery_idle_timeout_secs <= 3600
    error_message = "delivery_idle_timeout_secs must be from 1 to 3600."
  }
}

variable "allowed_origins" {
  type        = list(string)
  description = "Browser origins allowed to open WebSockets (REALCHAT_DELIVERY_ALLOWED_ORIGINS); empty allows any."
  default     = []

  validation {
    condition     = alltrue([for origin in var.allowed_origins : can(regex("^https?://[^/,]+$", origin))])
    error_message = "Each origin must look like https://chat.example.com (scheme and host, no path, no comma)."
  }
}

variable "redis_prefix" {
  type        = string
  description = "Prefix of the Redis keys of the gateway and delivery."
  default     = "realchat:"
}

variable "shutdown_grace_secs" {
  type        = number
  description = "Seconds a task drains after SIGTERM (REALCHAT_SHUTDOWN_GRACE_SECS); ECS waits 10 s more before SIGKILL."
  default     = 20

  validation {
    condition     = var.shutdown_grace_secs >= 1 && var.shutdown_grace_secs <= 110
    error_message = "shutdown_grace_secs must be from 1 to 110 (Fargate's stop timeout is at most 120 s)."
  }
}

variable "log_filter" {
  type        = string
  description = "REALCHAT_LOG of every service, in tracing's EnvFilter syntax."
  default     = "info"
}

variable "otel_endpoint" {
  type        = string
  description = "OTLP/gRPC endpoint traces are exported to (OTEL_EXPORTER_OTLP_ENDPOINT); empty exports none."
  default     = ""
}

variable "database_max_connections" {
  type = object({
    auth      = number
    messaging = number
    profile   = number
  })
  description = "Pool size per task of each service that owns a database; times the most tasks autoscaling allows, it must fit the instance's max_connections."
  default = {
    auth      = 16
    messaging = 32
    profile   = 16
  }
}

variable "tasks" {
  type = map(object({
    cpu     = number
    memory  = number
    desired = number
    min     = number
    max     = number
  }))
  description = "Fargate size (CPU units, MiB) and task counts of each service; autoscaling keeps the count between min and max."
  default = {
    gateway   = { cpu = 512, memory = 1024, desired = 2, min = 2, max = 10 }
    auth      = { cpu = 1024, memory = 2048, desired = 2, min = 2, max = 6 }
    messaging = { cpu = 1024, memory = 2048, desired = 2, min = 2, max = 10 }
    profile   = { cpu = 512, memory = 1024, desired = 2, min = 2, max = 6 }
    delivery  = { cpu = 1024, memory = 2048, desired = 2, min = 2, max = 20 }
  }

  validation {
    condition     = length(setsubtract(toset(["gateway", "auth", "messaging", "profile", "delivery"]), toset(keys(var.tasks)))) == 0 && alltrue([for spec in values(var.tasks) : spec.min >= 1 && spec.min <= spec.desired && spec.desired <= spec.max && contains([256, 512, 1024, 2048, 4096, 8192, 16384], spec.cpu) && spec.memory >= 512])
    error_message = "tasks must size every service, with 1 <= min <= desired <= max, a Fargate CPU value (256 to 16384) and at least 512 MiB."
  }
}

variable "cpu_target_percent" {
  type        = number
  description = "Average CPU utilisation autoscaling aims at."
  default     = 60

  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 90
    error_message = "cpu_target_percent must be from 10 to 90."
  }
}

variable "internal_domain" {
  type        = string
  description = "Private DNS namespace (Cloud Map) in which auth, messaging, profile and delivery are registered."
  default     = "realchat.internal"

  validation {
    condition     = can(regex("^[a-z0-9-]+(\\.[a-z0-9-]+)+$", var.internal_domain))
    error_message = "internal_domain must be a DNS name such as realchat.internal."
  }
}

variable "trust_dir" {
  type        = string
  description = "Directory, shared by the containers of a task, where its first container writes the CA bundles (rds-ca.pem, amazon-ca.pem)."
  default     = "/realchat/certs"

  validation {
    condition     = startswith(var.trust_dir, "/") && !endswith(var.trust_dir, "/")
    error_message = "trust_dir must be an absolute path without a trailing slash."
  }
}

variable "trust_sources" {
  type        = map(list(string))
  description = "CA bundles the first container of each task fetches into trust_dir: file name to the HTTPS URLs concatenated into it. rds-ca.pem verifies RDS; amazon-ca.pem verifies MSK."
  default = {
    "rds-ca.pem" = ["https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"]
    "amazon-ca.pem" = [
      "https://www.amazontrust.com/repository/AmazonRootCA1.pem",
      "https://www.amazontrust.com/repository/AmazonRootCA2.pem",
      "https://www.amazontrust.com/repository/AmazonRootCA3.pem",
      "https://www.amazontrust.com/repository/AmazonRootCA4.pem",
      "https://www.amazontrust.com/repository/SFSRootCAG2.pem",
    ]
  }

  validation {
    condition     = contains(keys(var.trust_sources), "rds-ca.pem") && contains(keys(var.trust_sources), "amazon-ca.pem") && alltrue(flatten([for urls in values(var.trust_sources) : [for url in urls : startswith(url, "https://")]]))
    error_message = "trust_sources must define rds-ca.pem and amazon-ca.pem, from https:// URLs only."
  }
}

variable "helper_image" {
  type        = string
  description = "Small image with a shell and an HTTPS-capable wget: fetches the CA bundles and probes /readyz of the gRPC services."
  default     = "public.ecr.aws/docker/library/alpine:3.20"
}

variable "postgres_client_image" {
  type        = string
  description = "Image with psql, used by the bootstrap task to create the service roles and databases."
  default     = "public.ecr.aws/docker/library/postgres:16-alpine"
}

variable "kafka_tools_image" {
  type        = string
  description = "Image with Apache Kafka's command-line tools under /opt/kafka/bin, used by the bootstrap task to create topics and ACLs."
  default     = "apache/kafka:3.8.0"
}

variable "ecr_repository_arns" {
  type        = list(string)
  description = "ECR repositories the images are pulled from, if any; the execution roles may pull only from these."
  default     = []
}

variable "run_bootstrap" {
  type        = bool
  description = "Run the bootstrap task (roles, databases, topics, ACLs, migrations) with the AWS CLI whenever its task definition changes, before the services are updated. Needs `aws` and `bash` where Terraform runs."
  default     = true
}

variable "auth_key_encryption_key_generations" {
  type        = list(string)
  description = "Names of auth's key-encryption keys, oldest first; each gets 32 random bytes once. The last seals the signing keys, all of them open what they sealed. To rotate, append a name, apply and redeploy auth; drop the old name five minutes after that deployment has finished (infra/README.md)."
  default     = ["1"]

  validation {
    condition     = length(var.auth_key_encryption_key_generations) >= 1 && length(distinct(var.auth_key_encryption_key_generations)) == length(var.auth_key_encryption_key_generations) && alltrue([for generation in var.auth_key_encryption_key_generations : can(regex("^[A-Za-z0-9_-]+$", generation))])
    error_message = "auth_key_encryption_key_generations must name at least one key, each once, in letters, digits, - and _."
  }
}

variable "internal_tls_authorities" {
  type        = list(string)
  description = "Names of the internal certificate authorities Terraform generates, the one that issues the services' certificates first; each gets a P-256 key once, and every service trusts all of them. To change authorities, append a name, apply; move it first, apply; drop the old one, apply (infra/README.md). Unused with internal_tls_secrets."
  default     = ["1"]

  validation {
    condition     = length(var.internal_tls_authorities) >= 1 && length(distinct(var.internal_tls_authorities)) == length(var.internal_tls_authorities) && alltrue([for name in var.internal_tls_authorities : can(regex("^[A-Za-z0-9_-]+$", name))])
    error_message = "internal_tls_authorities must name at least one authority, each once, in letters, digits, - and _."
  }
}

variable "internal_tls_secrets" {
  type = object({
    secret_arns = map(string)
    kms_key_arn = optional(string)
  })
  description = "The operator's own internal TLS identities instead of generated ones: per service (gateway, auth, messaging, profile, delivery) a Secrets Manager secret with the JSON keys ca, cert and key (PEM; the certificate naming `<service>.realchat.internal`), and the KMS key they are encrypted with (null for aws/secretsmanager). null generates them, keys in the Terraform state."
  default     = null

  validation {
    condition = var.internal_tls_secrets == null ? true : (
      length(setsubtract(toset(["gateway", "auth", "messaging", "profile", "delivery"]), toset(keys(var.internal_tls_secrets.secret_arns)))) == 0 &&
      alltrue([for arn in values(var.internal_tls_secrets.secret_arns) : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[^:]+$", arn))])
    )
    error_message = "internal_tls_secrets.secret_arns must name a Secrets Manager secret ARN (without a JSON key) for each of gateway, auth, messaging, profile and delivery."
  }
}

variable "secret_recovery_window_days" {
  type        = number
  description = "Days a deleted secret (auth's key-encryption keys, the internal TLS identities) can still be restored (0 deletes at once, for throw-away environments)."
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or from 7 to 30."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the service logs are kept in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...)."
  }
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key for the service log groups (the network module's logs_kms_key_arn)."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
