output "address" {
  description = "Host name of the instance (it follows a Multi-AZ failover)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the instance."
  value       = aws_db_instance.this.port
}

output "instance_arn" {
  description = "ARN of the RDS instance."
  value       = aws_db_instance.this.arn
}

output "master_username" {
  description = "Name of the master user (used only by the bootstrap task)."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret, managed by RDS, holding the master user's credentials as JSON (username, password)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "databases" {
  description = "Per service: database and role name, and the Secrets Manager ARNs of its password and of its connection URL."
  value = {
    for service in var.services : service => {
      database            = service
      username            = service
      password_secret_arn = aws_secretsmanager_secret.password[service].arn
      url_secret_arn      = aws_secretsmanager_secret.url[service].arn
    }
  }
}

output "kms_key_arn" {
  description = "KMS key of the storage and the secrets; whoever reads a secret needs kms:Decrypt on it."
  value       = aws_kms_key.this.arn
}
