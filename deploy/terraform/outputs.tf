output "coordinator_public_ip" {
  description = "The coordinator's Elastic IP: pass it to `p2pchat-certs --ip` (README, step 3)."
  value       = aws_eip.coordinator.public_ip
}

output "coordinator_address" {
  description = "HOST:PORT that peers use as --coordinator (P2PCHAT_COORDINATOR)."
  value       = local.coordinator_address
}

output "artifact_bucket" {
  description = "Private S3 bucket holding the binaries and the public certificates."
  value       = aws_s3_bucket.artifacts.id
}

output "coordinator_key_parameter" {
  description = "Name of the SSM SecureString parameter holding the coordinator's TLS key."
  value       = aws_ssm_parameter.coordinator_key.name
}

output "ssh_coordinator" {
  description = "SSH command for the operator to log in to the coordinator."
  value       = "ssh -i ${var.ssh_identity_file} ec2-user@${aws_eip.coordinator.public_ip}"
}

output "ssh_clients" {
  description = "SSH commands to log in to each client instance."
  value       = [for c in aws_instance.client : "ssh -i ${var.ssh_identity_file} ec2-user@${c.public_ip}"]
}

output "peer_commands" {
  description = "Command a user runs to chat from each client instance (a login shell, so /etc/profile.d/p2pchat.sh sets the coordinator, CA and addresses)."
  value       = [for c in aws_instance.client : "ssh -t -i ${var.ssh_identity_file} ec2-user@${c.public_ip} bash -lc peer"]
}

output "client_public_ips" {
  description = "Public addresses of the client instances (they change if an instance is stopped and started; run terraform apply again then)."
  value       = aws_instance.client[*].public_ip
}
