variable "region" {
  type        = string
  description = "AWS region to deploy into (it needs three availability zones)."
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "The three availability zones to use; null takes the region's zones a, b and c."
  default     = null

  validation {
    condition     = var.availability_zones == null || try(length(distinct(var.availability_zones)) == 3, false)
    error_message = "availability_zones must name three distinct zones, or be null."
  }
}

variable "name" {
  type        = string
  description = "Name of the deployment; prefixes every resource."
  default     = "realchat"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,21}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 23 lower-case letters, digits or hyphens, starting with a letter (the services module names target groups name-delivery, at most 32 characters)."
  }
}

variable "domain_name" {
  type        = string
  description = "Public host name of the API (e.g. chat.example.com); a certificate is issued for it and it is pointed at the load balancer."

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.domain_name))
    error_message = "domain_name must be a lower-case DNS name such as chat.example.com."
  }
}

variable "route53_zone_id" {
  type        = string
  description = "Route 53 public hosted zone that holds domain_name (for the certificate's DNS validation and the alias record)."

  validation {
    condition     = can(regex("^Z[A-Z0-9]+$", var.route53_zone_id))
    error_message = "route53_zone_id must be a Route 53 zone id such as Z0123456789ABCDEFGHIJ."
  }
}

variable "images" {
  type        = map(string)
  description = "OCI image of each service (gateway, auth, messaging, profile, delivery), preferably pinned by digest."
}

variable "ecr_repository_arns" {
  type        = list(string)
  description = "ECR repositories the images live in, if they are in ECR."
  default     = []
}

variable "allowed_origins" {
  type        = list(string)
  description = "Browser origins allowed to open WebSockets; empty allows any."
  default     = []
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the database and the load balancer from deletion; set false (and apply) before `terraform destroy`."
  default     = true
}

variable "run_bootstrap" {
  type        = bool
  description = "Run the bootstrap task (roles, databases, topics, migrations) from this machine with the AWS CLI on apply."
  default     = true
}
