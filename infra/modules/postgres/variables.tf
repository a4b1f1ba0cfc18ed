variable "name" {
  type        = string
  description = "Prefix of every resource name; also the RDS instance identifier."

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
    error_message = "RDS Multi-AZ needs subnets in at least two availability zones."
  }
}

variable "security_group_id" {
  type        = string
  description = "Security group of the database tier (the network module's security_group_ids[\"postgres\"])."
}

variable "services" {
  type        = list(string)
  description = "Services that own a database: each gets a database and a login role of its name, and a password and connection URL in Secrets Manager."
  default     = ["auth", "messaging", "profile"]

  validation {
    condition     = length(var.services) > 0 && alltrue([for service in var.services : can(regex("^[a-z][a-z0-9_]{0,30}$", service)) && !contains(["postgres", "rdsadmin", "template0", "template1"], service)])
    error_message = "Each service name must be a lower-case SQL identifier (letters, digits, _) and not a reserved database name."
  }
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version, major or major.minor (minor upgrades are applied automatically)."
  default     = "16"

  validation {
    condition     = can(regex("^1[4-9](\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be PostgreSQL 14 or later, as `16` or `16.4`."
  }
}

variable "instance_class" {
  type        = string
  description = "RDS instance class."
  default     = "db.m7g.large"

  validation {
    condition     = startswith(var.instance_class, "db.")
    error_message = "instance_class must be an RDS class such as db.m7g.large."
  }
}

variable "allocated_storage_gb" {
  type        = number
  description = "Initial gp3 storage in GiB."
  default     = 50

  validation {
    condition     = var.allocated_storage_gb >= 20 && var.allocated_storage_gb <= 65536
    error_message = "allocated_storage_gb must be from 20 to 65536."
  }
}

variable "max_allocated_storage_gb" {
  type        = number
  description = "Upper bound of storage autoscaling in GiB (at least allocated_storage_gb)."
  default     = 500

  validation {
    condition     = var.max_allocated_storage_gb >= 20 && var.max_allocated_storage_gb <= 65536
    error_message = "max_allocated_storage_gb must be from 20 to 65536."
  }
}

variable "multi_az" {
  type        = bool
  description = "Keep a synchronous standby in another zone and fail over to it."
  default     = true
}

variable "backup_retention_days" {
  type        = number
  description = "Days automated backups (and point-in-time recovery) are kept."
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be from 7 to 35."
  }
}

variable "backup_window" {
  type        = string
  description = "Daily UTC window for automated backups, hh24:mi-hh24:mi."
  default     = "02:00-03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_window))
    error_message = "backup_window must look like 02:00-03:00."
  }
}

variable "maintenance_window" {
  type        = string
  description = "Weekly UTC maintenance window, ddd:hh24:mi-ddd:hh24:mi, not overlapping the backup window."
  default     = "sun:04:00-sun:05:00"

  validation {
    condition     = can(regex("^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window))
    error_message = "maintenance_window must look like sun:04:00-sun:05:00."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to delete the instance (turn off, apply, then destroy, to remove it on purpose)."
  default     = true
}

variable "performance_insights_retention_days" {
  type        = number
  description = "Days Performance Insights data is kept: 7 (free), 731, or a multiple of 31."
  default     = 7

  validation {
    condition     = var.performance_insights_retention_days == 7 || var.performance_insights_retention_days == 731 || (var.performance_insights_retention_days % 31 == 0 && var.performance_insights_retention_days > 0 && var.performance_insights_retention_days < 731)
    error_message = "performance_insights_retention_days must be 7, 731, or a multiple of 31."
  }
}

variable "monitoring_interval" {
  type        = number
  description = "Seconds between Enhanced Monitoring samples."
  default     = 60

  validation {
    condition     = contains([1, 5, 10, 15, 30, 60], var.monitoring_interval)
    error_message = "monitoring_interval must be 1, 5, 10, 15, 30 or 60."
  }
}

variable "master_username" {
  type        = string
  description = "Name of the master user; its password is generated and kept in Secrets Manager by RDS itself."
  default     = "realchat_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.master_username)) && !contains(["postgres", "admin", "rdsadmin"], var.master_username)
    error_message = "master_username must be a lower-case SQL identifier other than postgres, admin or rdsadmin."
  }
}

variable "ssl_root_cert_path" {
  type        = string
  description = "Path, inside the service containers, of the RDS CA bundle; written into each connection URL as sslrootcert (sslmode=verify-full)."

  validation {
    condition     = startswith(var.ssl_root_cert_path, "/")
    error_message = "ssl_root_cert_path must be an absolute path."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the PostgreSQL logs exported to CloudWatch Logs are kept."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...)."
  }
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key for the exported PostgreSQL log groups (the network module's logs_kms_key_arn)."
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
  description = "Apply instance changes at once instead of in the maintenance window."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
