# The coordinator: one instance with an Elastic IP and a separate encrypted
# EBS volume for its database.
#
# The Elastic IP is its own resource (allocated before anything else, see the
# README's two-step apply) because the coordinator certificate must name it.
#
# Persistent storage: a separate volume rather than the root volume with
# delete_on_termination = false. The accounts database then survives the
# instance being replaced (a new AMI, changed user data, a changed instance
# type), is re-attached and mounted by the new instance without manual steps,
# can be snapshotted on its own, and is not orphaned by `terraform destroy`
# (which deletes it: snapshot it first if the accounts matter).

data "aws_ami" "al2023" {
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["al2023-ami-2023.*-kernel-*-${var.architecture}"]
  }

  filter {
    name   = "architecture"
    values = [var.architecture]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = ["ebs"]
  }
}

locals {
  ami_id = coalesce(var.ami_id, data.aws_ami.al2023.id)

  coordinator_address = "${aws_eip.coordinator.public_ip}:${var.coordinator_port}"
}

resource "aws_eip" "coordinator" {
  domain = "vpc"

  tags = { Name = "${var.name}-coordinator" }
}

resource "aws_ebs_volume" "coordinator_data" {
  availability_zone = local.availability_zone
  size              = var.coordinator_data_volume_size_gb
  type              = "gp3"
  encrypted         = true

  # local.snapshot_tag puts it under the daily snapshot policy (monitoring.tf).
  tags = merge({ Name = "${var.name}-coordinator-data" }, local.snapshot_tag)
}

resource "aws_instance" "coordinator" {
  ami                    = local.ami_id
  instance_type          = var.coordinator_instance_type
  subnet_id              = local.subnet_id
  vpc_security_group_ids = [aws_security_group.coordinator.id]
  iam_instance_profile   = aws_iam_instance_profile.coordinator.name
  # The operator's key pair, if any; SSH is open only to operator_ssh_cidrs.
  key_name   = var.key_pair_name
  monitoring = false

  # Only public values here: bucket and object names, the parameter's name,
  # ports and the volume id. The key is fetched from SSM at (re)start.
  # Compressed (cloud-init unpacks gzip): with its embedded scripts, units and
  # monitoring configuration the script is over EC2's 16 KiB user-data limit.
  user_data_base64 = base64gzip(templatefile("${path.module}/files/coordinator-user-data.sh.tftpl", {
    region                    = var.region
    bucket                    = aws_s3_bucket.artifacts.id
    coordinator_binary_object = aws_s3_object.coordinator_binary.key
    coordinator_cert_object   = aws_s3_object.coordinator_cert.key
    coordinator_key_parameter = aws_ssm_parameter.coordinator_key.name
    coordinator_port          = var.coordinator_port
    data_volume_id            = aws_ebs_volume.coordinator_data.id
    log_level                 = var.coordinator_log_level
    metrics_port              = var.metrics_port
    metrics_namespace         = var.metrics_namespace
    deployment                = var.name
    cloudwatch_agent_config = templatefile("${path.module}/files/cloudwatch-agent.json.tftpl", {
      log_group = aws_cloudwatch_log_group.coordinator_metrics.name
      namespace = var.metrics_namespace
    })
    prometheus_config = templatefile("${path.module}/files/prometheus.yaml.tftpl", {
      metrics_port = var.metrics_port
    })
    monitoring_script = file("${path.module}/files/p2pchat-monitoring.sh")
    monitoring_unit   = file("${path.module}/files/p2pchat-monitoring.service")
    readiness_script  = file("${path.module}/files/p2pchat-readiness.sh")
    readiness_unit    = file("${path.module}/files/p2pchat-readiness.service")
    readiness_timer   = file("${path.module}/files/p2pchat-readiness.timer")
    unit_file         = file("${path.module}/files/p2pchat-coordinator.service")
    fetch_script      = file("${path.module}/files/p2pchat-coordinator-fetch.sh")
    volume_script     = file("${path.module}/files/p2pchat-data-volume.sh")
    volume_unit       = file("${path.module}/files/p2pchat-data-volume.service")
  }))
  # The database lives on its own volume, so replacing the instance when the
  # boot script changes loses nothing.
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
    tags                  = merge(local.common_tags, { Name = "${var.name}-coordinator-root" })
  }

  tags = { Name = "${var.name}-coordinator" }

  # The role's policies must exist before the first boot fetches anything.
  depends_on = [aws_iam_role_policy.coordinator, aws_iam_role_policy.coordinator_monitoring]

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_eip_association" "coordinator" {
  instance_id   = aws_instance.coordinator.id
  allocation_id = aws_eip.coordinator.id
}

resource "aws_volume_attachment" "coordinator_data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.coordinator_data.id
  instance_id = aws_instance.coordinator.id
  # Let the instance stop services and unmount cleanly before detaching.
  stop_instance_before_detaching = true
}
