data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  tags = merge(var.tags, { "realchat:module" = "network" })

  zones = { for index, zone in var.availability_zones : zone => index }

  # Public subnets hold the load balancer and the NAT gateways, private ones the tasks, data ones
  # PostgreSQL, the brokers and Redis (no route out of the VPC at all).
  public_cidrs  = { for zone, index in local.zones : zone => cidrsubnet(var.cidr_block, 4, index) }
  private_cidrs = { for zone, index in local.zones : zone => cidrsubnet(var.cidr_block, 4, index + 4) }
  data_cidrs    = { for zone, index in local.zones : zone => cidrsubnet(var.cidr_block, 4, index + 8) }

  nat_zones = var.single_nat_gateway ? [var.availability_zones[0]] : var.availability_zones

  # One security group per tier. Each flow opens one port from one tier to the next, as an egress
  # rule on the caller and an ingress rule on the callee; nothing else is open between tiers.
  tiers = {
    alb       = "The public load balancer: HTTPS from clients, to the gateway and delivery."
    gateway   = "Gateway tasks: from the load balancer, to auth, messaging, profile, delivery and Redis."
    delivery  = "Delivery tasks: from the load balancer and the gateway, to auth, messaging, Kafka and Redis."
    auth      = "Auth tasks: gRPC from the gateway, delivery, messaging and profile, to PostgreSQL and Kafka."
    messaging = "Messaging tasks: gRPC from the gateway and delivery, to auth, PostgreSQL and Kafka."
    profile   = "Profile tasks: gRPC from the gateway, to auth, PostgreSQL and Kafka."
    bootstrap = "The one-off bootstrap task (roles, databases, topics, migrations): to PostgreSQL and Kafka."
    postgres  = "RDS PostgreSQL: from the services that own a database and the bootstrap task."
    kafka     = "MSK brokers: SASL/SCRAM over TLS from the Kafka clients and the bootstrap task."
    redis     = "ElastiCache Redis: TLS from the gateway and delivery."
  }

  flows = [
    { from = "alb", to = "gateway", port = "gateway" },
    { from = "alb", to = "gateway", port = "gateway_admin" },
    { from = "alb", to = "delivery", port = "delivery" },
    { from = "alb", to = "delivery", port = "delivery_admin" },
    { from = "gateway", to = "auth", port = "auth" },
    { from = "gateway", to = "messaging", port = "messaging" },
    { from = "gateway", to = "profile", port = "profile" },
    { from = "gateway", to = "delivery", port = "delivery" },
    { from = "delivery", to = "auth", port = "auth" },
    { from = "delivery", to = "messaging", port = "messaging" },
    { from = "messaging", to = "auth", port = "auth" },
    { from = "profile", to = "auth", port = "auth" },
    { from = "auth", to = "postgres", port = "postgres" },
    { from = "messaging", to = "postgres", port = "postgres" },
    { from = "profile", to = "postgres", port = "postgres" },
    { from = "bootstrap", to = "postgres", port = "postgres" },
    { from = "auth", to = "kafka", port = "kafka" },
    { from = "messaging", to = "kafka", port = "kafka" },
    { from = "profile", to = "kafka", port = "kafka" },
    { from = "delivery", to = "kafka", port = "kafka" },
    { from = "bootstrap", to = "kafka", port = "kafka" },
    { from = "gateway", to = "redis", port = "redis" },
    { from = "delivery", to = "redis", port = "redis" },
  ]
  flow_map = { for flow in local.flows : "${flow.from}-${flow.to}-${flow.port}" => flow }

  # Tasks reach AWS APIs (Secrets Manager, CloudWatch Logs, ECR) and image registries over HTTPS
  # through the NAT gateways; the data tiers have no egress at all.
  https_out = ["gateway", "delivery", "auth", "messaging", "profile", "bootstrap"]
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(local.tags, { Name = var.name })
}

# The default security group of the VPC allows nothing, so nothing can end up in it by accident.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-default-closed" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  for_each = local.public_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value

  tags = merge(local.tags, { Name = "${var.name}-public-${each.key}", "realchat:tier" = "public" })
}

resource "aws_subnet" "private" {
  for_each = local.private_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value

  tags = merge(local.tags, { Name = "${var.name}-private-${each.key}", "realchat:tier" = "private" })
}

resource "aws_subnet" "data" {
  for_each = local.data_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value

  tags = merge(local.tags, { Name = "${var.name}-data-${each.key}", "realchat:tier" = "data" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each = aws_subnet.public

  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  for_each = toset(local.nat_zones)

  domain = "vpc"

  tags = merge(local.tags, { Name = "${var.name}-nat-${each.key}" })
}

resource "aws_nat_gateway" "this" {
  for_each = toset(local.nat_zones)

  allocation_id = aws_eip.nat[each.key].id
  subnet_id     = aws_subnet.public[each.key].id

  tags = merge(local.tags, { Name = "${var.name}-${each.key}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  for_each = local.zones

  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-private-${each.key}" })
}

resource "aws_route" "private_nat" {
  for_each = local.zones

  route_table_id         = aws_route_table.private[each.key].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? var.availability_zones[0] : each.key].id
}

resource "aws_route_table_association" "private" {
  for_each = aws_subnet.private

  subnet_id      = each.value.id
  route_table_id = aws_route_table.private[each.key].id
}

# The data subnets get a route table with only the VPC's local route.
resource "aws_route_table" "data" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-data" })
}

resource "aws_route_table_association" "data" {
  for_each = aws_subnet.data

  subnet_id      = each.value.id
  route_table_id = aws_route_table.data.id
}

# --- Logs: one key for every CloudWatch log group of the deployment --------------------------------

data "aws_iam_policy_document" "logs_key" {
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

  statement {
    sid       = "CloudWatchLogsUsesTheKey"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${var.name}: CloudWatch Logs (flow logs, service logs, broker and Redis logs)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.logs_key.json

  tags = local.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/realchat/${var.name}/vpc-flow"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = aws_kms_key.logs.arn

  tags = local.tags
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json

  tags = local.tags
}

data "aws_iam_policy_document" "flow" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn

  tags = local.tags
}

# --- Security groups ---------------------------------------------------------------------------------

resource "aws_security_group" "tier" {
  #checkov:skip=CKV2_AWS_5:Each group is attached by the module of its tier (load balancer, tasks, RDS, MSK, ElastiCache), outside this module.
  for_each = local.tiers

  name        = "${var.name}-${each.key}"
  description = each.value
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-${each.key}", "realchat:tier" = each.key })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  security_group_id = aws_security_group.tier["alb"].id
  description       = "HTTPS from clients"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "flow" {
  for_each = local.flow_map

  security_group_id            = aws_security_group.tier[each.value.to].id
  referenced_security_group_id = aws_security_group.tier[each.value.from].id
  description                  = "${each.value.port} from ${each.value.from}"
  ip_protocol                  = "tcp"
  from_port                    = var.ports[each.value.port]
  to_port                      = var.ports[each.value.port]

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "flow" {
  for_each = local.flow_map

  security_group_id            = aws_security_group.tier[each.value.from].id
  referenced_security_group_id = aws_security_group.tier[each.value.to].id
  description                  = "${each.value.port} to ${each.value.to}"
  ip_protocol                  = "tcp"
  from_port                    = var.ports[each.value.port]
  to_port                      = var.ports[each.value.port]

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https_out" {
  for_each = toset(local.https_out)

  security_group_id = aws_security_group.tier[each.key].id
  description       = "HTTPS to AWS APIs and image registries through NAT"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443

  tags = local.tags
}
