# The bootstrap task prepares what the services need and cannot make for themselves, then migrates:
#
#   trust ──> db-setup ──> auth-migrate ─────┐
#                      ├─> profile-migrate ──┼─> messaging-migrate (essential: its exit ends the task)
#   kafka-setup ─────────────────────────────┘
#
# db-setup creates each service's login role and database with the master user; kafka-setup the
# replicated topics and the ACLs; each `<service> migrate` then runs with that service's own role.
# Terraform runs it (scripts/run-task.sh) whenever its definition changes, which includes every new
# image, and updates the ECS services only after it succeeded.

locals {
  database_services = sort(keys(var.postgres.databases))

  db_setup_container = {
    name                   = "db-setup"
    image                  = var.postgres_client_image
    essential              = false
    command                = ["sh", "-c", templatefile("${path.module}/templates/db-setup.sh.tftpl", { services = local.database_services })]
    readonlyRootFilesystem = true
    environment = [
      { name = "PGHOST", value = var.postgres.address },
      { name = "PGPORT", value = tostring(var.postgres.port) },
      { name = "PGDATABASE", value = "postgres" },
      { name = "PGUSER", value = var.postgres.master_username },
      { name = "PGSSLMODE", value = "verify-full" },
      { name = "PGSSLROOTCERT", value = local.rds_ca_file },
      { name = "PGCONNECT_TIMEOUT", value = "15" },
    ]
    secrets = concat(
      [{ name = "PGPASSWORD", valueFrom = "${var.postgres.master_user_secret_arn}:password::" }],
      [for service in local.database_services : { name = "PASSWORD_${upper(service)}", valueFrom = var.postgres.databases[service].password_secret_arn }],
    )
    mountPoints      = [local.trust_volume]
    dependsOn        = [{ containerName = "trust", condition = "SUCCESS" }]
    logConfiguration = local.log_configuration["bootstrap"]
  }

  kafka_setup_container = {
    name      = "kafka-setup"
    image     = var.kafka_tools_image
    essential = false
    command = ["sh", "-c", templatefile("${path.module}/templates/kafka-setup.sh.tftpl", {
      topics             = var.kafka.topics
      replication_factor = var.kafka.replication_factor
      users              = var.kafka.users
    })]
    # The Kafka tools write their client configuration and the JVM its scratch files.
    readonlyRootFilesystem = false
    environment = [
      { name = "KAFKA_BROKERS", value = var.kafka.bootstrap_brokers },
      { name = "KAFKA_ADMIN_USERNAME", value = var.kafka.admin_user.username },
    ]
    secrets          = [{ name = "KAFKA_ADMIN_PASSWORD", valueFrom = "${var.kafka.admin_user.secret_arn}:password::" }]
    logConfiguration = local.log_configuration["bootstrap"]
  }

  migrate_container = {
    for name in ["auth-migrate", "profile-migrate", "messaging-migrate"] : name => {
      name                   = name
      image                  = var.images[local.settings[name].binary]
      essential              = name == "messaging-migrate"
      command                = var.migrate_command
      environment            = [for key in sort(keys(local.settings[name].environment)) : { name = key, value = local.settings[name].environment[key] }]
      secrets                = [for key in sort(keys(local.settings[name].secrets)) : { name = key, valueFrom = local.settings[name].secrets[key] }]
      readonlyRootFilesystem = true
      mountPoints            = [local.trust_volume]
      dependsOn = concat(
        [{ containerName = "db-setup", condition = "SUCCESS" }],
        name == "messaging-migrate" ? [
          { containerName = "kafka-setup", condition = "SUCCESS" },
          { containerName = "auth-migrate", condition = "SUCCESS" },
          { containerName = "profile-migrate", condition = "SUCCESS" },
        ] : [],
      )
      logConfiguration = local.log_configuration["bootstrap"]
    }
  }
}

resource "aws_ecs_task_definition" "bootstrap" {
  family                   = "${var.name}-bootstrap"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "1024"
  memory                   = "2048"
  execution_role_arn       = aws_iam_role.execution["bootstrap"].arn
  task_role_arn            = aws_iam_role.task["bootstrap"].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "trust"
  }

  container_definitions = jsonencode([
    local.trust_container["bootstrap"],
    local.db_setup_container,
    local.kafka_setup_container,
    local.migrate_container["auth-migrate"],
    local.migrate_container["profile-migrate"],
    local.migrate_container["messaging-migrate"],
  ])

  tags = merge(local.tags, { "realchat:service" = "bootstrap" })
}

resource "terraform_data" "bootstrap" {
  count = var.run_bootstrap ? 1 : 0

  # A new revision (new images, new settings, new topics) runs the bootstrap again.
  triggers_replace = [aws_ecs_task_definition.bootstrap.arn]

  provisioner "local-exec" {
    command = "bash '${path.module}/scripts/run-task.sh'"

    environment = {
      CLUSTER         = aws_ecs_cluster.this.name
      TASK_DEFINITION = aws_ecs_task_definition.bootstrap.arn
      SUBNETS         = join(",", var.private_subnet_ids)
      SECURITY_GROUP  = var.security_group_ids.bootstrap
      REGION          = local.region
    }
  }

  depends_on = [aws_iam_role_policy.execution, aws_ecs_cluster_capacity_providers.this]
}
