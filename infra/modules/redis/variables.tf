variable "name" {
  type        = string
  description = "Prefix of every resource name; also the replication group id."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Isolated subnets in at least two availability zones (the network module's data_subnet_ids)."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "Multi-AZ needs subnets in at least two availability zones."
  }
}

variable "security_group_id" {
  type        = string
  description = "Security group of the Redis tier (the network module's security_group_ids[\"redis\"])."
}

variable "engine_version" {
  type        = string
  description = "Redis OSS engine version (major.minor)."
  default     = "7.1"

  validation {
    condition     = can(regex("^[7-9]\\.[0-9]+$", var.engine_version))
    error_message = "engine_version must be 7.x or later, as major.minor (e.g. 7.1)."
  }
}

variable "node_type" {
  type        = string
  description = "Cache node type."
  default     = "cache.m7g.large"

  validation {
    condition     = startswith(var.node_type, "cache.") && !startswith(var.node_type, "cache.t1.")
    error_message = "node_type must be an ElastiCache type such as cache.m7g.large (automatic failover excludes cache.t1)."
  }
}

variable "replicas" {
  type        = number
  description = "Nodes in the group, the primary included; spread over the subnets' zones."
  default     = 2

  validation {
    condition     = var.replicas >= 2 && var.replicas <= 6
    error_message = "replicas must be from 2 (automatic failover and Multi-AZ need a replica) to 6."
  }
}

variable "snapshot_retention_days" {
  type        = number
  description = "Days daily snapshots are kept. Routes and presence rebuild themselves, so a short retention is enough."
  default     = 1

  validation {
    condition     = var.snapshot_retention_days >= 1 && var.snapshot_retention_days <= 35
    error_message = "snapshot_retention_days must be from 1 to 35."
  }
}

variable "maintenance_window" {
  type        = string
  description = "Weekly UTC maintenance window, ddd:hh24:mi-ddd:hh24:mi (at least 60 minutes)."
  default     = "sun:05:00-sun:06:00"

  validation {
    condition     = can(regex("^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window))
    error_message = "maintenance_window must look like sun:05:00-sun:06:00."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the Redis slow and engine logs are kept in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...)."
  }
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key for the Redis log groups (the network module's logs_kms_key_arn)."
}

variable "secret_recovery_window_days" {
  type        = number
  description = "Days a deleted secret can still be restored (0 deletes at once, for throw-away environments)."
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or from 7 to 30."
  }
}

variable "apply_immediately" {
  type        = bool
  description = "Apply changes at once instead of in the maintenance window."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
