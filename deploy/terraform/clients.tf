# Client instances where users log in over SSH and run `peer`. Each gets a
# public address from the subnet; the boot-time unit p2pchat-client-setup
# installs the peer binary and the CA certificate and writes the login
# environment with the address read from the instance metadata (IMDSv2).

resource "aws_instance" "client" {
  count = var.client_count

  ami                    = local.ami_id
  instance_type          = var.client_instance_type
  subnet_id              = local.subnet_id
  vpc_security_group_ids = [aws_security_group.client.id]
  iam_instance_profile   = aws_iam_instance_profile.client.name
  key_name               = var.key_pair_name
  monitoring             = false

  associate_public_ip_address = true

  user_data = templatefile("${path.module}/files/client-user-data.sh.tftpl", {
    region              = var.region
    bucket              = aws_s3_bucket.artifacts.id
    peer_binary_object  = aws_s3_object.peer_binary.key
    ca_cert_object      = aws_s3_object.ca_cert.key
    coordinator_address = local.coordinator_address
    peer_port           = var.peer_port
    setup_unit          = file("${path.module}/files/p2pchat-client-setup.service")
    setup_script        = file("${path.module}/files/p2pchat-client-setup.sh")
  })
  # Client instances keep no state the deployment cares about (each user's
  # history lives in their home directory, which a replacement loses: say so
  # to users before changing the boot script).
  user_data_replace_on_change = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
    tags                  = merge(local.common_tags, { Name = "${var.name}-client-${count.index}-root" })
  }

  tags = { Name = "${var.name}-client-${count.index}" }

  # The role's policy must exist before the first boot fetches anything.
  depends_on = [aws_iam_role_policy.client]

  lifecycle {
    ignore_changes = [ami]
  }
}
