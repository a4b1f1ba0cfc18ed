output "primary_endpoint_address" {
  description = "Host name of the primary (it follows a failover)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Port Redis listens on (TLS only)."
  value       = local.port
}

output "url_secret_arn" {
  description = "Secrets Manager secret holding the rediss:// URL with the AUTH token (REALCHAT_REDIS_URL)."
  value       = aws_secretsmanager_secret.url.arn
}

output "replication_group_id" {
  description = "ID of the replication group."
  value       = aws_elasticache_replication_group.this.id
}

output "kms_key_arn" {
  description = "KMS key of the storage and the URL secret; whoever reads the secret needs kms:Decrypt on it."
  value       = aws_kms_key.this.arn
}
