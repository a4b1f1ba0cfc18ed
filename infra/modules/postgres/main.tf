data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  tags         = merge(var.tags, { "realchat:module" = "postgres" })
  major        = split(".", var.engine_version)[0]
  log_exports  = ["postgresql", "upgrade"]
  services     = toset(var.services)
  secret_path  = "${var.name}/postgres"
  rds_ca_label = "rds-ca-rsa2048-g1"
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

# One key for the storage, the snapshots, Performance Insights and the secrets of the database.
resource "aws_kms_key" "this" {
  description             = "${var.name}: RDS PostgreSQL storage, Performance Insights and database secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-postgres"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_db_subnet_group" "this" {
  name        = "${var.name}-postgres"
  description = "${var.name}: isolated subnets of the database"
  subnet_ids  = var.subnet_ids

  tags = local.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-postgres${local.major}-"
  family      = "postgres${local.major}"
  description = "${var.name}: TLS required, slow statements logged"

  # Every connection must use TLS; the services connect with sslmode=verify-full.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

# RDS would create these on first export, unencrypted and kept forever; creating them first sets both.
resource "aws_cloudwatch_log_group" "exports" {
  for_each = toset(local.log_exports)

  name              = "/aws/rds/instance/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn

  tags = local.tags
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = max(var.max_allocated_storage_gb, var.allocated_storage_gb)
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this.arn

  # RDS generates the master password, keeps it in Secrets Manager and rotates it; it is never in
  # the Terraform state. Only the bootstrap task uses it, to create the service roles.
  username                      = var.master_username
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this.arn

  multi_az               = var.multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [var.security_group_id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name
  ca_cert_identifier     = local.rds_ca_label

  iam_database_authentication_enabled = true

  backup_retention_period   = var.backup_retention_days
  backup_window             = var.backup_window
  maintenance_window        = var.maintenance_window
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"

  auto_minor_version_upgrade = true
  apply_immediately          = var.apply_immediately

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = var.performance_insights_retention_days

  monitoring_interval = var.monitoring_interval
  monitoring_role_arn = aws_iam_role.monitoring.arn

  enabled_cloudwatch_logs_exports = local.log_exports

  tags = local.tags

  depends_on = [aws_cloudwatch_log_group.exports, aws_iam_role_policy_attachment.monitoring]
}

# --- One login role and database per service ---------------------------------------------------------

resource "random_password" "service" {
  for_each = local.services

  length  = 40
  special = false
}

# The password alone, for the bootstrap task that creates (or re-keys) the role.
resource "aws_secretsmanager_secret" "password" {
  #checkov:skip=CKV2_AWS_57:Generated by Terraform and rotated by the procedure in infra/README.md (new password, bootstrap re-keys the role, services redeploy); a rotation Lambda would have to rewrite the URL secret too.
  for_each = local.services

  name                    = "${local.secret_path}/${each.key}/password"
  description             = "${var.name}: password of the PostgreSQL role ${each.key}"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_secretsmanager_secret_version" "password" {
  for_each = local.services

  secret_id     = aws_secretsmanager_secret.password[each.key].id
  secret_string = random_password.service[each.key].result
}

# The whole connection URL the service reads from REALCHAT_<SERVICE>_DATABASE_URL: its own role, its
# own database, TLS verified against the RDS CA bundle.
resource "aws_secretsmanager_secret" "url" {
  #checkov:skip=CKV2_AWS_57:Derived from the password secret, which is rotated by the procedure in infra/README.md.
  for_each = local.services

  name                    = "${local.secret_path}/${each.key}/url"
  description             = "${var.name}: connection URL of the ${each.key} database"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_secretsmanager_secret_version" "url" {
  for_each = local.services

  secret_id = aws_secretsmanager_secret.url[each.key].id
  secret_string = format(
    "postgres://%s:%s@%s:%d/%s?sslmode=verify-full&sslrootcert=%s",
    each.key,
    urlencode(random_password.service[each.key].result),
    aws_db_instance.this.address,
    aws_db_instance.this.port,
    each.key,
    var.ssl_root_cert_path,
  )
}
