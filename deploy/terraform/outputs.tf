output "coordinator_public_ip" {
  description = "The (first) coordinator's Elastic IP: pass it to `p2pchat-certs --ip` (README, step 3). A cluster: see coordinator_public_ips."
  value       = aws_eip.coordinator[0].public_ip
}

output "coordinator_public_ips" {
  description = "Every coordinator node's Elastic IP (one with a single coordinator): the certificate names them all (p2pchat-certs --ip, once per address) unless peers use dns_name."
  value       = aws_eip.coordinator[*].public_ip
}

output "coordinator_address" {
  description = "What peers use as --coordinator (P2PCHAT_COORDINATOR): dns_name:PORT with a DNS record, else every node's EIP:PORT, comma-separated (a single coordinator: its EIP:PORT)."
  value       = local.coordinator_address
}

output "coordinator_dns_name" {
  description = "The DNS name peers use (one A record with every node's address), or null without dns_zone_id/dns_name."
  value       = var.dns_name
}

output "coordinator_nodes" {
  description = "Every coordinator node: its name (--node in cluster mode), instance id, public and private address."
  value = {
    for i, inst in aws_instance.coordinator : local.coordinator_names[i] => {
      instance_id = inst.id
      public_ip   = aws_eip.coordinator[i].public_ip
      private_ip  = inst.private_ip
      address     = local.coordinator_addresses[i]
    }
  }
}

output "database_endpoint" {
  description = "Cluster mode: the accounts database's private HOST:PORT (reachable from the coordinators only), or null with one coordinator. Its password is only in the SSM parameter database_password_parameter."
  value       = local.cluster ? "${aws_db_instance.accounts[0].address}:${aws_db_instance.accounts[0].port}" : null
}

output "database_password_parameter" {
  description = "Cluster mode: the name (not the value) of the SSM SecureString parameter holding the database password, or null."
  value       = local.cluster ? aws_ssm_parameter.database_password[0].name : null
}

output "artifact_bucket" {
  description = "Private S3 bucket holding the binaries, the public certificates and the chat users' list."
  value       = aws_s3_bucket.artifacts.id
}

output "coordinator_key_parameter" {
  description = "Name of the SSM SecureString parameter holding the coordinator's TLS key."
  value       = aws_ssm_parameter.coordinator_key.name
}

output "coordinator_instance_id" {
  description = "The (first) coordinator's instance id, for the operator's shell: aws ssm start-session --target ID. A cluster: see coordinator_instance_ids."
  value       = aws_instance.coordinator[0].id
}

output "coordinator_instance_ids" {
  description = "Every coordinator node's instance id, in node order."
  value       = aws_instance.coordinator[*].id
}

output "operator_ssh_coordinator" {
  description = "The operator's SSH command to the coordinator (only with key_pair_name and operator_ssh_cidrs set; otherwise use SSM Session Manager)."
  value       = var.key_pair_name != null && length(var.operator_ssh_cidrs) > 0 ? "ssh -i ${var.ssh_identity_file} ec2-user@${aws_eip.coordinator[0].public_ip}" : null
}

output "client_instance_ids" {
  description = "Client instance ids, for the operator's shell: aws ssm start-session --target ID."
  value       = aws_instance.client[*].id
}

output "chat_user_commands" {
  description = "The command each chat user runs, with their own account and key, to chat (a login shell, so /etc/profile.d/p2pchat.sh sets the coordinator, CA and addresses)."
  value       = { for name, u in var.chat_users : name => "ssh -t ${name}@${aws_eip.client[u.client].public_ip} bash -lc peer" }
}

output "client_public_ips" {
  description = "Elastic IPs of the client instances (they stay the same across stop, start and replacement)."
  value       = aws_eip.client[*].public_ip
}
