# One complete RealChat deployment: the network, PostgreSQL, MSK, Redis and the five services on
# ECS Fargate behind an HTTPS load balancer at var.domain_name. Sizes are the smallest that keep
# every store highly available; raise them in the module calls below.

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      "realchat:deployment" = var.name
    }
  }
}

locals {
  # Named explicitly, so the deployment never moves when AWS adds a zone to the region.
  zones = coalesce(var.availability_zones, [for suffix in ["a", "b", "c"] : "${var.region}${suffix}"])
  # Where each task's first container puts the CA bundles; the database URLs name the RDS one.
  trust_dir = "/realchat/certs"
}

module "network" {
  source = "../../modules/network"

  name               = var.name
  availability_zones = local.zones
  single_nat_gateway = true
}

module "postgres" {
  source = "../../modules/postgres"

  name                 = var.name
  subnet_ids           = module.network.data_subnet_ids
  security_group_id    = module.network.security_group_ids["postgres"]
  instance_class       = "db.t4g.medium"
  allocated_storage_gb = 20
  deletion_protection  = var.deletion_protection
  ssl_root_cert_path   = "${local.trust_dir}/rds-ca.pem"
  logs_kms_key_arn     = module.network.logs_kms_key_arn
}

module "kafka" {
  source = "../../modules/kafka"

  name                  = var.name
  subnet_ids            = module.network.data_subnet_ids
  security_group_id     = module.network.security_group_ids["kafka"]
  broker_instance_type  = "kafka.t3.small"
  broker_volume_size_gb = 20
  logs_kms_key_arn      = module.network.logs_kms_key_arn
}

module "redis" {
  source = "../../modules/redis"

  name              = var.name
  subnet_ids        = module.network.data_subnet_ids
  security_group_id = module.network.security_group_ids["redis"]
  node_type         = "cache.t4g.small"
  replicas          = 2
  logs_kms_key_arn  = module.network.logs_kms_key_arn
}

resource "aws_acm_certificate" "api" {
  domain_name       = var.domain_name
  validation_method = "DNS"

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "certificate_validation" {
  for_each = {
    for option in aws_acm_certificate.api.domain_validation_options : option.domain_name => {
      name   = option.resource_record_name
      type   = option.resource_record_type
      record = option.resource_record_value
    }
  }

  zone_id         = var.route53_zone_id
  name            = each.value.name
  type            = each.value.type
  records         = [each.value.record]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "api" {
  certificate_arn         = aws_acm_certificate.api.arn
  validation_record_fqdns = [for record in aws_route53_record.certificate_validation : record.fqdn]
}

module "services" {
  source = "../../modules/services"

  name                = var.name
  images              = var.images
  ecr_repository_arns = var.ecr_repository_arns
  vpc_id              = module.network.vpc_id
  public_subnet_ids   = module.network.public_subnet_ids
  private_subnet_ids  = module.network.private_subnet_ids
  security_group_ids  = module.network.security_group_ids
  ports               = module.network.ports
  logs_kms_key_arn    = module.network.logs_kms_key_arn
  trust_dir           = local.trust_dir

  postgres = module.postgres
  kafka    = module.kafka
  redis    = module.redis

  certificate_arn         = aws_acm_certificate_validation.api.certificate_arn
  alb_deletion_protection = var.deletion_protection
  allowed_origins         = var.allowed_origins
  run_bootstrap           = var.run_bootstrap

  tasks = {
    gateway   = { cpu = 512, memory = 1024, desired = 2, min = 2, max = 6 }
    auth      = { cpu = 512, memory = 1024, desired = 2, min = 2, max = 4 }
    messaging = { cpu = 512, memory = 1024, desired = 2, min = 2, max = 6 }
    profile   = { cpu = 256, memory = 512, desired = 2, min = 2, max = 4 }
    delivery  = { cpu = 512, memory = 1024, desired = 2, min = 2, max = 10 }
  }
}

resource "aws_route53_record" "api" {
  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = module.services.alb_dns_name
    zone_id                = module.services.alb_zone_id
    evaluate_target_health = true
  }
}
