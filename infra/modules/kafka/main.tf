data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  tags = merge(var.tags, { "realchat:module" = "kafka" })

  # Every topic and its dead-letter topic, with the prefix, and their partition counts.
  topics = merge(
    { for topic, partitions in var.topics : "${var.topic_prefix}${topic}" => partitions },
    { for topic, partitions in var.topics : "${var.topic_prefix}${topic}.dlq" => partitions },
  )

  # The bootstrap task's user creates topics and ACLs; it alone may operate on the cluster.
  admin_user = "bootstrap"
  users      = concat(keys(var.clients), [local.admin_user])
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

# Broker storage and the SCRAM secrets (MSK accepts only secrets under a customer-managed key).
resource "aws_kms_key" "this" {
  description             = "${var.name}: MSK storage and SASL/SCRAM secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-kafka"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/realchat/${var.name}/msk"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn

  tags = local.tags
}

resource "aws_msk_configuration" "this" {
  name           = "${var.name}-kafka"
  kafka_versions = [var.kafka_version]
  description    = "${var.name}: topics are created by the bootstrap task only, with ${var.replication_factor} replicas; ACLs apply"

  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=${var.replication_factor}
    min.insync.replicas=${var.replication_factor - 1}
    unclean.leader.election.enable=false
    allow.everyone.if.no.acl.found=true
    offsets.topic.replication.factor=3
    transaction.state.log.replication.factor=3
    transaction.state.log.min.isr=2
  PROPERTIES

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = 3

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [var.security_group_id]

    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_size_gb
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  client_authentication {
    unauthenticated = false

    sasl {
      scram = true
      iam   = false
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.this.arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  enhanced_monitoring = "PER_BROKER"

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }

  tags = local.tags
}

# --- SASL/SCRAM users: one per service and one for the bootstrap task --------------------------------

resource "random_password" "user" {
  for_each = toset(local.users)

  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "user" {
  #checkov:skip=CKV2_AWS_57:MSK reads SCRAM secrets at association; they are rotated by the procedure in infra/README.md (new password, apply, services redeploy).
  for_each = toset(local.users)

  # MSK only associates secrets whose name starts with AmazonMSK_.
  name                    = "AmazonMSK_${var.name}_${each.key}"
  description             = "${var.name}: SASL/SCRAM credentials of the Kafka user ${each.key}"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_secretsmanager_secret_version" "user" {
  for_each = toset(local.users)

  secret_id     = aws_secretsmanager_secret.user[each.key].id
  secret_string = jsonencode({ username = each.key, password = random_password.user[each.key].result })
}

data "aws_iam_policy_document" "msk_reads_secret" {
  for_each = toset(local.users)

  statement {
    sid       = "AWSKafkaResourcePolicy"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.user[each.key].arn]

    principals {
      type        = "Service"
      identifiers = ["kafka.amazonaws.com"]
    }
  }
}

# MSK attaches this policy itself on association; declaring it keeps the plan clean afterwards.
resource "aws_secretsmanager_secret_policy" "user" {
  for_each = toset(local.users)

  secret_arn = aws_secretsmanager_secret.user[each.key].arn
  policy     = data.aws_iam_policy_document.msk_reads_secret[each.key].json
}

resource "aws_msk_scram_secret_association" "this" {
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = [for user in local.users : aws_secretsmanager_secret.user[user].arn]

  depends_on = [aws_secretsmanager_secret_version.user, aws_secretsmanager_secret_policy.user]
}
