variable "name" {
  type        = string
  description = "Prefix of every resource name; also the MSK cluster name."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Three isolated subnets in three availability zones (the network module's data_subnet_ids); one broker goes in each."

  validation {
    condition     = length(var.subnet_ids) == 3
    error_message = "subnet_ids must hold exactly three subnets, one per zone."
  }
}

variable "security_group_id" {
  type        = string
  description = "Security group of the broker tier (the network module's security_group_ids[\"kafka\"])."
}

variable "kafka_version" {
  type        = string
  description = "Apache Kafka version of the brokers."
  default     = "3.6.0"

  validation {
    condition     = can(regex("^[3-9]\\.[0-9]+\\.[0-9]+$", var.kafka_version))
    error_message = "kafka_version must be a 3.x or later version such as 3.6.0."
  }
}

variable "broker_instance_type" {
  type        = string
  description = "Broker instance type."
  default     = "kafka.m7g.large"

  validation {
    condition     = startswith(var.broker_instance_type, "kafka.")
    error_message = "broker_instance_type must be an MSK type such as kafka.m7g.large or kafka.t3.small."
  }
}

variable "broker_volume_size_gb" {
  type        = number
  description = "EBS storage per broker in GiB."
  default     = 100

  validation {
    condition     = var.broker_volume_size_gb >= 1 && var.broker_volume_size_gb <= 16384
    error_message = "broker_volume_size_gb must be from 1 to 16384."
  }
}

variable "topic_prefix" {
  type        = string
  description = "Prefix of every topic name (REALCHAT_KAFKA_TOPIC_PREFIX), for sharing a cluster between deployments; empty for none."
  default     = ""

  validation {
    condition     = can(regex("^[a-zA-Z0-9._-]*$", var.topic_prefix))
    error_message = "topic_prefix may hold only letters, digits, '.', '_' and '-'."
  }
}

variable "topics" {
  type        = map(number)
  description = "Topics and their partition counts (DESIGN.md): each also gets its `.dlq` with the same count. Names without the prefix."
  default = {
    "realchat.messages.v1" = 12
    "realchat.users.v1"    = 6
  }

  validation {
    condition     = alltrue([for topic, partitions in var.topics : can(regex("^[a-zA-Z0-9._-]+$", topic)) && partitions >= 1 && floor(partitions) == partitions])
    error_message = "Topic names may hold only letters, digits, '.', '_' and '-', and partition counts must be whole numbers of at least 1."
  }
}

variable "clients" {
  type = map(object({
    produce = list(string)
    consume = list(string)
    group   = optional(string)
  }))
  description = "Kafka users, one per service: the topics (without prefix) it writes and reads, and its consumer group. Each gets a SASL/SCRAM secret and ACLs for exactly these."
  default = {
    auth      = { produce = ["realchat.users.v1"], consume = [] }
    messaging = { produce = ["realchat.messages.v1", "realchat.users.v1.dlq"], consume = ["realchat.users.v1"], group = "messaging" }
    profile   = { produce = ["realchat.users.v1.dlq"], consume = ["realchat.users.v1"], group = "profile" }
    delivery  = { produce = ["realchat.messages.v1.dlq"], consume = ["realchat.messages.v1"], group = "delivery" }
  }

  validation {
    condition     = alltrue([for client, spec in var.clients : can(regex("^[a-z][a-z0-9_-]*$", client)) && (length(spec.consume) == 0 || spec.group != null)])
    error_message = "Client names must be lower-case identifiers, and a client that consumes needs a group."
  }
}

variable "replication_factor" {
  type        = number
  description = "Replicas of every partition; with min.insync.replicas one less, a write survives the loss of a broker."
  default     = 3

  validation {
    condition     = var.replication_factor >= 2 && var.replication_factor <= 3
    error_message = "replication_factor must be 2 or 3 on a three-broker cluster."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the broker logs are kept in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...)."
  }
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key for the broker log group (the network module's logs_kms_key_arn)."
}

variable "secret_recovery_window_days" {
  type        = number
  description = "Days a deleted SCRAM secret can still be restored (0 deletes at once, for throw-away environments)."
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or from 7 to 30."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
