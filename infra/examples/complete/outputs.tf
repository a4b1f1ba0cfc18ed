output "url" {
  description = "Base URL of the API; give it to the CLI as REALCHAT_URL."
  value       = "https://${var.domain_name}"
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer behind the URL."
  value       = module.services.alb_dns_name
}

output "cluster_name" {
  description = "ECS cluster running the services."
  value       = module.services.cluster_name
}

output "service_names" {
  description = "ECS service of each RealChat service."
  value       = module.services.service_names
}

output "log_groups" {
  description = "CloudWatch log group of each service and of the bootstrap task."
  value       = module.services.log_groups
}

output "bootstrap_task_definition_arn" {
  description = "The bootstrap task (roles, databases, topics, ACLs, migrations)."
  value       = module.services.bootstrap_task_definition_arn
}

output "postgres_address" {
  description = "Host name of the RDS instance (reachable only from inside the VPC)."
  value       = module.postgres.address
}

output "kafka_bootstrap_brokers" {
  description = "SASL/SCRAM TLS bootstrap servers of MSK (reachable only from inside the VPC)."
  value       = module.kafka.bootstrap_brokers
}

output "internal_certificates_expire" {
  description = "When each service's internal TLS certificate expires (RFC 3339); an apply in its last 90 days renews it and rolls the service."
  value       = { for name, identity in module.services.internal_tls : name => identity.expires }
}
