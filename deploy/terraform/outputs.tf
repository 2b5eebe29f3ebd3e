output "coordinator_public_ip" {
  description = "The coordinator's Elastic IP: pass it to `p2pchat-certs --ip` (README, step 3)."
  value       = aws_eip.coordinator.public_ip
}

output "coordinator_address" {
  description = "HOST:PORT that peers use as --coordinator (P2PCHAT_COORDINATOR)."
  value       = local.coordinator_address
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
  description = "The coordinator's instance id, for the operator's shell: aws ssm start-session --target ID."
  value       = aws_instance.coordinator.id
}

output "operator_ssh_coordinator" {
  description = "The operator's SSH command to the coordinator (only with key_pair_name and operator_ssh_cidrs set; otherwise use SSM Session Manager)."
  value       = var.key_pair_name != null && length(var.operator_ssh_cidrs) > 0 ? "ssh -i ${var.ssh_identity_file} ec2-user@${aws_eip.coordinator.public_ip}" : null
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
