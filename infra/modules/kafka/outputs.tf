output "bootstrap_brokers" {
  description = "Bootstrap servers of the SASL/SCRAM TLS listener (REALCHAT_KAFKA_BROKERS), comma-separated."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "cluster_arn" {
  description = "ARN of the MSK cluster."
  value       = aws_msk_cluster.this.arn
}

output "topic_prefix" {
  description = "Prefix of every topic name (REALCHAT_KAFKA_TOPIC_PREFIX)."
  value       = var.topic_prefix
}

output "topics" {
  description = "Every topic the bootstrap task creates, with the prefix, and its partition count (dead-letter topics included)."
  value       = local.topics
}

output "replication_factor" {
  description = "Replicas of every topic the bootstrap task creates."
  value       = var.replication_factor
}

output "users" {
  description = "Per service: its SASL/SCRAM username, the secret holding its credentials as JSON (username, password), and what its ACLs allow (topics with the prefix)."
  value = {
    for client, spec in var.clients : client => {
      username   = client
      secret_arn = aws_secretsmanager_secret.user[client].arn
      produce    = [for topic in spec.produce : "${var.topic_prefix}${topic}"]
      consume    = [for topic in spec.consume : "${var.topic_prefix}${topic}"]
      group      = spec.group
    }
  }

  depends_on = [aws_msk_scram_secret_association.this]
}

output "admin_user" {
  description = "The bootstrap task's SASL/SCRAM username and the secret holding its credentials; it creates topics and ACLs."
  value = {
    username   = local.admin_user
    secret_arn = aws_secretsmanager_secret.user[local.admin_user].arn
  }

  depends_on = [aws_msk_scram_secret_association.this]
}

output "kms_key_arn" {
  description = "KMS key of the broker storage and the SCRAM secrets; whoever reads a secret needs kms:Decrypt on it."
  value       = aws_kms_key.this.arn
}
