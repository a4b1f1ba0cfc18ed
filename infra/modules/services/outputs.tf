output "alb_dns_name" {
  description = "DNS name of the load balancer; point the public name of the certificate at it (alias record)."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer, for a Route 53 alias record."
  value       = aws_lb.this.zone_id
}

output "alb_arn" {
  description = "ARN of the load balancer."
  value       = aws_lb.this.arn
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_names" {
  description = "ECS service of each RealChat service."
  value       = { for name, service in aws_ecs_service.this : name => service.name }
}

output "task_definition_arns" {
  description = "Task definition (with revision) of each service."
  value       = { for name, definition in aws_ecs_task_definition.service : name => definition.arn }
}

output "bootstrap_task_definition_arn" {
  description = "Task definition of the bootstrap task (roles, databases, topics, ACLs, migrations); run it by hand with scripts/run-task.sh when run_bootstrap is false."
  value       = aws_ecs_task_definition.bootstrap.arn
}

output "log_groups" {
  description = "CloudWatch log group of each service and of the bootstrap task."
  value       = { for name, group in aws_cloudwatch_log_group.this : name => group.name }
}

output "internal_endpoints" {
  description = "Internal URLs (Cloud Map) of auth, messaging, profile and delivery."
  value       = local.endpoints
}

output "setting_names" {
  description = "Per container running a RealChat binary: the names of the settings it is given in plain environment and from Secrets Manager."
  value = {
    for name, spec in local.settings : name => {
      binary      = spec.binary
      environment = sort(keys(spec.environment))
      secrets     = sort(keys(spec.secrets))
    }
  }
}

output "internal_tls" {
  description = "Per service: the Secrets Manager secret of its internal TLS identity (JSON keys ca, cert, key) and, when generated here, when its certificate expires (RFC 3339); an apply in its last 90 days renews it."
  value = {
    for name in local.services : name => {
      secret_arn = local.internal_tls_secret_arn[name]
      expires    = try(tls_locally_signed_cert.internal[name].validity_end_time, null)
    }
  }
}
