data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  tags   = merge(var.tags, { "realchat:module" = "services" })
  region = data.aws_region.current.region

  services = toset(["gateway", "auth", "messaging", "profile", "delivery"])

  # Main and admin (/metrics, /healthz, /readyz) port of each service.
  listen = {
    gateway   = { port = var.ports.gateway, admin = var.ports.gateway_admin }
    auth      = { port = var.ports.auth, admin = var.ports.auth_admin }
    messaging = { port = var.ports.messaging, admin = var.ports.messaging_admin }
    profile   = { port = var.ports.profile, admin = var.ports.profile_admin }
    delivery  = { port = var.ports.delivery, admin = var.ports.delivery_admin }
  }

  # The load balancer checks the gateway's and delivery's /readyz itself; the gRPC services, which
  # it does not reach, get a small sidecar whose container health check probes their /readyz.
  behind_alb   = toset(["gateway", "delivery"])
  grpc         = toset(["auth", "messaging", "profile"])
  in_cloud_map = toset(["auth", "messaging", "profile", "delivery"])

  # A JSON key of a secret is picked with `<arn>:<key>::`; IAM wants the bare secret ARN.
  secret_arn = { for name, spec in local.settings : name => distinct([for value in values(spec.secrets) : replace(value, "/:[A-Za-z_]+::$/", "")]) }

  stop_timeout = var.shutdown_grace_secs + 10

  log_configuration = {
    for name in concat(tolist(local.services), ["bootstrap"]) : name => {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this[name].name
        awslogs-region        = local.region
        awslogs-stream-prefix = name
      }
    }
  }

  # Every task starts with this container: it fetches the CA bundles into a volume the others mount
  # read-only, so the service images need no CA store of their own.
  trust_script = join("\n", concat(["set -eu", "cd ${var.trust_dir}"], flatten([
    for file, urls in var.trust_sources : concat([": > ${file}.part"], [for url in urls : "wget -q -T 20 -O - '${url}' >> ${file}.part"], ["mv ${file}.part ${file}"])
  ])))

  trust_volume = { sourceVolume = "trust", containerPath = var.trust_dir, readOnly = true }

  trust_container = {
    for name in concat(tolist(local.services), ["bootstrap"]) : name => {
      name                   = "trust"
      image                  = var.helper_image
      essential              = false
      command                = ["sh", "-c", local.trust_script]
      readonlyRootFilesystem = true
      mountPoints            = [{ sourceVolume = "trust", containerPath = var.trust_dir, readOnly = false }]
      logConfiguration       = local.log_configuration[name]
    }
  }

  service_container = {
    for name in local.services : name => {
      name      = name
      image     = var.images[name]
      essential = true
      portMappings = [
        { name = "main", containerPort = local.listen[name].port, protocol = "tcp" },
        { name = "admin", containerPort = local.listen[name].admin, protocol = "tcp" },
      ]
      environment            = [for key in sort(keys(local.settings[name].environment)) : { name = key, value = local.settings[name].environment[key] }]
      secrets                = [for key in sort(keys(local.settings[name].secrets)) : { name = key, valueFrom = local.settings[name].secrets[key] }]
      dockerLabels           = lookup(local.internal_tls_labels, name, null)
      readonlyRootFilesystem = true
      mountPoints            = [local.trust_volume]
      dependsOn              = [{ containerName = "trust", condition = "SUCCESS" }]
      stopTimeout            = local.stop_timeout
      ulimits                = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration       = local.log_configuration[name]
    }
  }

  readyz_container = {
    for name in local.grpc : name => {
      name                   = "readyz"
      image                  = var.helper_image
      essential              = true
      command                = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 5 & wait $!; done"]
      readonlyRootFilesystem = true
      healthCheck = {
        command     = ["CMD-SHELL", "wget -q -T 4 -O /dev/null http://127.0.0.1:${local.listen[name].admin}/readyz || exit 1"]
        interval    = 15
        timeout     = 5
        retries     = 4
        startPeriod = 60
      }
      dependsOn        = [{ containerName = name, condition = "START" }]
      logConfiguration = local.log_configuration[name]
    }
  }

  task_containers = {
    for name in local.services : name => concat(
      [local.trust_container[name], local.service_container[name]],
      contains(local.grpc, name) ? [local.readyz_container[name]] : [],
    )
  }
}

# --- Cluster, logs, roles --------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "this" {
  for_each = toset(concat(tolist(local.services), ["bootstrap"]))

  name              = "/realchat/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn

  tags = merge(local.tags, { "realchat:service" = each.key })
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# The execution role is what ECS uses to start a task: pull the image, write its logs, and read the
# secrets of its own service, nothing else.
resource "aws_iam_role" "execution" {
  for_each = toset(concat(tolist(local.services), ["bootstrap"]))

  name               = "${var.name}-${each.key}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = merge(local.tags, { "realchat:service" = each.key })
}

locals {
  execution_secrets = merge(
    { for name in local.services : name => local.secret_arn[name] },
    {
      bootstrap = distinct(concat(
        [var.postgres.master_user_secret_arn, var.kafka.admin_user.secret_arn],
        [for database in values(var.postgres.databases) : database.password_secret_arn],
        local.secret_arn["auth-migrate"],
        local.secret_arn["profile-migrate"],
        local.secret_arn["messaging-migrate"],
      ))
    },
  )
  secret_keys = distinct(concat(
    [var.postgres.kms_key_arn, var.kafka.kms_key_arn, var.redis.kms_key_arn, aws_kms_key.auth_kek.arn],
    local.internal_tls_kms_key_arn == null ? [] : [local.internal_tls_kms_key_arn],
  ))
}

data "aws_iam_policy_document" "execution" {
  for_each = aws_iam_role.execution

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this[each.key].arn}:*"]
  }

  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.execution_secrets[each.key]
  }

  statement {
    sid       = "DecryptSecretsThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = local.secret_keys

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "PullImages"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = var.ecr_repository_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "LogInToEcr"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  for_each = aws_iam_role.execution

  name   = "start-task"
  role   = each.value.id
  policy = data.aws_iam_policy_document.execution[each.key].json
}

# The task role is what the running process may do with AWS: the services call no AWS API, so it
# holds no permission at all. It is separate per service so one can be given some later.
resource "aws_iam_role" "task" {
  for_each = toset(concat(tolist(local.services), ["bootstrap"]))

  name               = "${var.name}-${each.key}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = merge(local.tags, { "realchat:service" = each.key })
}

# --- Auth's key-encryption keys -------------------------------------------------------------------

# Auth seals its signing keys in its database under a key-encryption key (KEK), so that a copy of
# the database (a snapshot, a dump) cannot mint tokens. Each name in
# auth_key_encryption_key_generations gets 32 random bytes once; the last seals
# (REALCHAT_AUTH_KEY_ENCRYPTION_KEY), and all of them still open what they sealed
# (REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS), so a rotation is: append a name, apply, redeploy auth
# (each task reseals as it starts), then drop the old name (infra/README.md).
locals {
  auth_kek_current = var.auth_key_encryption_key_generations[length(var.auth_key_encryption_key_generations) - 1]
}

data "aws_iam_policy_document" "auth_kek" {
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

# A key of its own rather than the database's: whoever may decrypt the database's snapshots must
# not thereby hold the other half needed to open the signing keys in them. It encrypts the other
# secrets this module makes as well, the services' internal TLS identities (internal_tls.tf).
resource "aws_kms_key" "auth_kek" {
  description             = "${var.name}: secrets of the services (auth's key-encryption keys, internal TLS identities)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.auth_kek.json

  tags = merge(local.tags, { "realchat:service" = "auth" })
}

resource "aws_kms_alias" "auth_kek" {
  name          = "alias/${var.name}-auth-kek"
  target_key_id = aws_kms_key.auth_kek.key_id
}

resource "random_bytes" "auth_kek" {
  for_each = toset(var.auth_key_encryption_key_generations)

  length = 32
}

resource "aws_secretsmanager_secret" "auth_kek" {
  #checkov:skip=CKV2_AWS_57:Generated by Terraform and rotated by the procedure in infra/README.md (a new generation, auth redeploys and reseals its signing keys); a rotation Lambda cannot reseal them.
  name                    = "${var.name}/auth/key-encryption-keys"
  description             = "${var.name}: auth's key-encryption keys (current: the one that seals; old: every one that still opens)"
  kms_key_id              = aws_kms_key.auth_kek.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(local.tags, { "realchat:service" = "auth" })
}

resource "aws_secretsmanager_secret_version" "auth_kek" {
  secret_id = aws_secretsmanager_secret.auth_kek.id
  # `old` lists the current key as well, so that ECS never has an empty value to pass; auth tries
  # the current key first anyway.
  secret_string = jsonencode({
    current = random_bytes.auth_kek[local.auth_kek_current].base64
    old     = join(",", [for generation in var.auth_key_encryption_key_generations : random_bytes.auth_kek[generation].base64])
  })
}

# --- Internal names --------------------------------------------------------------------------------

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.internal_domain
  description = "${var.name}: internal names of the RealChat services"
  vpc         = var.vpc_id

  tags = local.tags
}

resource "aws_service_discovery_service" "this" {
  for_each = local.in_cloud_map

  name = each.key

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }

  tags = merge(local.tags, { "realchat:service" = each.key })
}

# --- Load balancer ---------------------------------------------------------------------------------

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_76:No web ACL is created here (web_acl_arn attaches the operator's own); nothing behind this load balancer runs Java, so Log4j rules do not apply.
  name               = var.name
  load_balancer_type = "application"
  internal           = false
  subnets            = var.public_subnet_ids
  security_groups    = [var.security_group_ids.alb]

  # WebSockets to delivery stay open while delivery pings them, so the idle timeout must be longer
  # than the ping interval.
  idle_timeout               = var.alb_idle_timeout_secs
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  # The load balancer appends the peer it saw to X-Forwarded-For; the gateway takes the client
  # from that entry, one hop from the right (REALCHAT_GATEWAY_TRUSTED_PROXY_HOPS = 1).
  xff_header_processing_mode = "append"

  dynamic "access_logs" {
    for_each = var.alb_access_logs_bucket == null ? [] : [var.alb_access_logs_bucket]

    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.alb_idle_timeout_secs > var.delivery_ping_interval_secs
      error_message = "alb_idle_timeout_secs must be longer than delivery_ping_interval_secs, or the load balancer cuts idle WebSockets between two pings."
    }
  }
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the hop to the task stays inside the VPC, limited by security groups to the load balancer.
  for_each = local.behind_alb

  name                 = "${var.name}-${each.key}"
  port                 = local.listen[each.key].port
  protocol             = "HTTP"
  protocol_version     = "HTTP1"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.shutdown_grace_secs + 5

  health_check {
    enabled             = true
    path                = "/readyz"
    port                = tostring(local.listen[each.key].admin)
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this["gateway"].arn
  }

  tags = local.tags
}

# Sockets go straight to delivery (which checks the token itself); everything else to the gateway.
resource "aws_lb_listener_rule" "websocket" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this["delivery"].arn
  }

  condition {
    path_pattern {
      values = ["/v1/ws"]
    }
  }

  tags = local.tags
}

# --- Task definitions and services -----------------------------------------------------------------

resource "aws_ecs_task_definition" "service" {
  for_each = local.services

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.tasks[each.key].cpu)
  memory                   = tostring(var.tasks[each.key].memory)
  execution_role_arn       = aws_iam_role.execution[each.key].arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "trust"
  }

  container_definitions = jsonencode(local.task_containers[each.key])

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_ecs_service" "this" {
  for_each = local.services

  name             = each.key
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.service[each.key].arn
  desired_count    = var.tasks[each.key].desired
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  propagate_tags   = "SERVICE"

  enable_execute_command             = false
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = contains(local.behind_alb, each.key) ? 60 : null

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [var.security_group_ids[each.key]]
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = contains(local.behind_alb, each.key) ? [1] : []

    content {
      target_group_arn = aws_lb_target_group.this[each.key].arn
      container_name   = each.key
      container_port   = local.listen[each.key].port
    }
  }

  dynamic "service_registries" {
    for_each = contains(local.in_cloud_map, each.key) ? [1] : []

    content {
      registry_arn = aws_service_discovery_service.this[each.key].arn
    }
  }

  tags = merge(local.tags, { "realchat:service" = each.key })

  lifecycle {
    # Autoscaling owns the count once the service exists.
    ignore_changes = [desired_count]
  }

  # Roles, databases, topics and migrations come first (see bootstrap.tf), the listener must exist
  # before a target group can be attached, and auth's keys and every service's internal TLS
  # identity must be in their secrets before the tasks start.
  depends_on = [
    terraform_data.bootstrap,
    aws_lb_listener.https,
    aws_iam_role_policy.execution,
    aws_secretsmanager_secret_version.auth_kek,
    aws_secretsmanager_secret_version.internal_tls,
  ]
}

resource "aws_appautoscaling_target" "this" {
  for_each = local.services

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this[each.key].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.tasks[each.key].min
  max_capacity       = var.tasks[each.key].max

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_appautoscaling_policy" "cpu" {
  for_each = local.services

  name               = "${var.name}-${each.key}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
