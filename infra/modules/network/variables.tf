variable "name" {
  type        = string
  description = "Prefix of every resource name and Name tag (e.g. `realchat-prod`)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "cidr_block" {
  type        = string
  description = "IPv4 range of the VPC; it is split into public, private and data subnets, one of each per availability zone."
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 20
    error_message = "cidr_block must be a valid IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Exactly three availability zones of the region (MSK puts one broker in each, RDS and ElastiCache fail over between them)."

  validation {
    condition     = length(var.availability_zones) == 3 && length(distinct(var.availability_zones)) == 3
    error_message = "availability_zones must name three distinct zones."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones instead of one per zone: cheaper, but the private subnets lose outbound access if that zone fails."
  default     = false
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days the VPC flow logs are kept in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...)."
  }
}

variable "ports" {
  type = object({
    gateway         = number
    gateway_admin   = number
    delivery        = number
    delivery_admin  = number
    auth            = number
    auth_admin      = number
    messaging       = number
    messaging_admin = number
    profile         = number
    profile_admin   = number
    postgres        = number
    kafka           = number
    redis           = number
  })
  description = "Ports the security groups open between tiers: each service's main and admin listener, PostgreSQL, the MSK SASL/SCRAM TLS listener (9096) and Redis."
  default = {
    gateway         = 8080
    gateway_admin   = 9180
    delivery        = 8081
    delivery_admin  = 9184
    auth            = 7051
    auth_admin      = 9181
    messaging       = 7052
    messaging_admin = 9182
    profile         = 7053
    profile_admin   = 9183
    postgres        = 5432
    kafka           = 9096
    redis           = 6379
  }

  validation {
    condition     = alltrue([for port in values(var.ports) : port >= 1 && port <= 65535 && floor(port) == port])
    error_message = "Every port must be a whole number from 1 to 65535."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
