data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  tags     = merge(var.tags, { "realchat:module" = "redis" })
  port     = 6379
  log_kind = toset(["slow-log", "engine-log"])
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account root keeps administering it, as AWS requires.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; writes are limited to this key.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only and cannot be narrowed further.

  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: ElastiCache storage, snapshots and the Redis URL secret"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-redis"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-redis"
  description = "${var.name}: isolated subnets of Redis"
  subnet_ids  = var.subnet_ids

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "this" {
  for_each = local.log_kind

  name              = "/realchat/${var.name}/redis/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn

  tags = local.tags
}

# ElastiCache accepts 16 to 128 printable characters other than @, " and /; letters and digits only
# also keep the URL free of escapes.
resource "random_password" "auth_token" {
  length  = 64
  special = false
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = var.name
  description          = "${var.name}: RealChat rate limits, session routes, presence and forwarding"

  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = local.port
  num_cache_clusters   = var.replicas
  parameter_group_name = "default.redis${split(".", var.engine_version)[0]}"

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [var.security_group_id]

  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.auth_token.result
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = var.snapshot_retention_days
  maintenance_window         = var.maintenance_window
  auto_minor_version_upgrade = true
  apply_immediately          = var.apply_immediately

  dynamic "log_delivery_configuration" {
    for_each = local.log_kind

    content {
      destination      = aws_cloudwatch_log_group.this[log_delivery_configuration.value].name
      destination_type = "cloudwatch-logs"
      log_format       = "json"
      log_type         = log_delivery_configuration.value
    }
  }

  tags = local.tags
}

# What the gateway and delivery read from REALCHAT_REDIS_URL: TLS (rediss://) to the primary
# endpoint, which follows a failover, with the AUTH token.
resource "aws_secretsmanager_secret" "url" {
  #checkov:skip=CKV2_AWS_57:The AUTH token is rotated through Terraform (ROTATE strategy keeps the old token valid while the services redeploy), as infra/README.md describes.
  name                    = "${var.name}/redis/url"
  description             = "${var.name}: Redis URL with the AUTH token"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id     = aws_secretsmanager_secret.url.id
  secret_string = "rediss://:${random_password.auth_token.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:${local.port}"
}
