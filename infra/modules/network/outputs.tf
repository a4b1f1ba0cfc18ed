output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 range of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone in the order of availability_zones (load balancer, NAT)."
  value       = [for zone in var.availability_zones : aws_subnet.public[zone].id]
}

output "private_subnet_ids" {
  description = "Private subnets with outbound access through NAT, one per zone (the ECS tasks)."
  value       = [for zone in var.availability_zones : aws_subnet.private[zone].id]
}

output "data_subnet_ids" {
  description = "Isolated subnets without any route out of the VPC, one per zone (PostgreSQL, MSK, Redis)."
  value       = [for zone in var.availability_zones : aws_subnet.data[zone].id]
}

output "security_group_ids" {
  description = "Security group of each tier: alb, gateway, delivery, auth, messaging, profile, bootstrap, postgres, kafka, redis."
  value       = { for tier, group in aws_security_group.tier : tier => group.id }
}

output "logs_kms_key_arn" {
  description = "KMS key that CloudWatch Logs may use for every log group of the deployment."
  value       = aws_kms_key.logs.arn
}

output "ports" {
  description = "The ports the security groups open, as given."
  value       = var.ports
}
