# Client instances where chat users log in over SSH, each with their own Unix
# account (var.chat_users), and run `peer`. Each instance has an Elastic IP,
# so the security group rules that admit it and the address its peer
# advertises stay right when it is stopped, started or replaced. The
# boot-time unit p2pchat-client-setup installs the peer binary and the CA
# certificate, creates the users' accounts and private data folders, and
# writes the login environment.

resource "aws_eip" "client" {
  count  = var.client_count
  domain = "vpc"

  tags = { Name = "${var.name}-client-${count.index}" }
}

resource "aws_instance" "client" {
  count = var.client_count

  ami                    = local.ami_id
  instance_type          = var.client_instance_type
  subnet_id              = local.subnet_id
  vpc_security_group_ids = [aws_security_group.client.id]
  iam_instance_profile   = aws_iam_instance_profile.client.name
  # The operator's key pair, for ec2-user (null: SSM Session Manager only).
  # Chat users log in with their own accounts and keys.
  key_name   = var.key_pair_name
  monitoring = false

  # A public address until the Elastic IP is associated (the first boot's
  # downloads retry across the swap).
  associate_public_ip_address = true

  user_data = templatefile("${path.module}/files/client-user-data.sh.tftpl", {
    region              = var.region
    bucket              = aws_s3_bucket.artifacts.id
    peer_binary_object  = aws_s3_object.peer_binary.key
    ca_cert_object      = aws_s3_object.ca_cert.key
    chat_users_object   = aws_s3_object.chat_users.key
    client_index        = count.index
    coordinator_address = local.coordinator_address
    peer_port           = var.peer_port
    advertise_ip        = aws_eip.client[count.index].public_ip
    setup_unit          = file("${path.module}/files/p2pchat-client-setup.service")
    setup_script        = file("${path.module}/files/p2pchat-client-setup.sh")
  })
  # cloud-init runs user data once per instance: a changed port or
  # coordinator address must replace the instance, or it would never be
  # applied. What users change day to day (the user list, the binary) is read
  # from S3 by the setup unit instead, so it replaces nothing. A replacement
  # loses what users kept on the instance (their chat history in
  # ~/.local/share/p2pchat): say so to users before changing the boot script.
  user_data_replace_on_change = true

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

resource "aws_eip_association" "client" {
  count = var.client_count

  instance_id   = aws_instance.client[count.index].id
  allocation_id = aws_eip.client[count.index].id
}
