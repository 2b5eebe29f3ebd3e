# The coordinators: coordinator_count instances (1 by default), each with an
# Elastic IP and a separate encrypted EBS volume.
#
# One coordinator (the default) is what it always was: SQLite on its data
# volume, no database server, no NATS, and the same user data byte for byte
# (the cluster part of the template is an empty string, appended to the end
# of an existing line, so upgrading this configuration replaces nothing).
# Two or more (cluster mode, cluster.tf): accounts in RDS PostgreSQL, presence
# and signaling over NATS JetStream on the nodes themselves; each node has a
# fixed private address (the others' NATS routes name it at first boot), its
# data volume holds the JetStream store, and every node presents the same
# certificate, fetched from the same S3 object and SSM parameter.
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

  # Cluster mode: more than one coordinator.
  cluster = var.coordinator_count > 1

  # Node names: the Name tags, and each node's --node in cluster mode. One
  # coordinator keeps the name it always had.
  coordinator_names = [
    for i in range(var.coordinator_count) : local.cluster ? "${var.name}-coordinator-${i}" : "${var.name}-coordinator"
  ]
  # Fixed private addresses of the nodes (cluster mode only).
  coordinator_private_ips = [
    for i in range(var.coordinator_count) : cidrhost(local.subnet_cidr, var.coordinator_private_ip_host_offset + i)
  ]

  # NATS routes go to the first three nodes (the seeds; the others are
  # learned by gossip), so adding a fourth or later node changes no existing
  # node's user data and replaces none of them.
  nats_seed_ips = slice(local.coordinator_private_ips, 0, min(var.coordinator_count, 3))

  # Every node's HOST:PORT, and what peers use as --coordinator: the DNS name
  # when there is one, else the comma-separated list of all nodes (a peer
  # tries them in turn). One coordinator without DNS: its EIP:PORT, as before.
  coordinator_addresses = [for e in aws_eip.coordinator : "${e.public_ip}:${var.coordinator_port}"]
  coordinator_address   = var.dns_name != null ? "${var.dns_name}:${var.coordinator_port}" : join(",", local.coordinator_addresses)
}

# The resources were single before issue 12; a single coordinator's state
# moves to index 0 with no change.
moved {
  from = aws_eip.coordinator
  to   = aws_eip.coordinator[0]
}

moved {
  from = aws_ebs_volume.coordinator_data
  to   = aws_ebs_volume.coordinator_data[0]
}

moved {
  from = aws_instance.coordinator
  to   = aws_instance.coordinator[0]
}

moved {
  from = aws_eip_association.coordinator
  to   = aws_eip_association.coordinator[0]
}

moved {
  from = aws_volume_attachment.coordinator_data
  to   = aws_volume_attachment.coordinator_data[0]
}

resource "aws_eip" "coordinator" {
  count  = var.coordinator_count
  domain = "vpc"

  tags = { Name = local.coordinator_names[count.index] }
}

resource "aws_ebs_volume" "coordinator_data" {
  count             = var.coordinator_count
  availability_zone = local.availability_zone
  size              = var.coordinator_data_volume_size_gb
  type              = "gp3"
  encrypted         = true

  # local.snapshot_tag puts it under the daily snapshot policy (monitoring.tf).
  tags = merge({ Name = "${local.coordinator_names[count.index]}-data" }, local.snapshot_tag)
}

resource "aws_instance" "coordinator" {
  count                  = var.coordinator_count
  ami                    = local.ami_id
  instance_type          = var.coordinator_instance_type
  subnet_id              = local.subnet_id
  vpc_security_group_ids = [aws_security_group.coordinator.id]
  # Cluster mode: a fixed address, named by the other nodes' NATS routes.
  private_ip           = local.cluster ? local.coordinator_private_ips[count.index] : null
  iam_instance_profile = aws_iam_instance_profile.coordinator.name
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
    data_volume_id            = aws_ebs_volume.coordinator_data[count.index].id
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
    # Cluster mode only; "" otherwise (see the top of this file). Public
    # values only: the database password is read from SSM at each start.
    cluster_setup = local.cluster ? format("\n%s", templatefile("${path.module}/files/coordinator-cluster.sh.tftpl", {
      node_name         = local.coordinator_names[count.index]
      cluster_name      = var.name
      private_ip        = local.coordinator_private_ips[count.index]
      nats_cluster_port = var.nats_cluster_port
      # Copies of the presence bucket: one per NATS server, at most 3, so
      # losing a node loses no presence state.
      nats_replicas      = min(3, var.coordinator_count)
      nats_routes        = join("\n", [for j, ip in local.nats_seed_ips : "    nats-route://${ip}:${var.nats_cluster_port}" if j != count.index])
      nats_binary_object = try(aws_s3_object.nats_server_binary[0].key, "")
      database_host      = try(aws_db_instance.accounts[0].address, "")
      database_port      = try(aws_db_instance.accounts[0].port, 5432)
      database_name      = local.database_name
      database_user      = local.database_user
      # The parameter's name, never its value.
      database_password_parameter = try(aws_ssm_parameter.database_password[0].name, "")
      # With TLS required, the coordinator checks the database's certificate
      # and name (verify-full) against the RDS CA bundle, which
      # p2pchat-cluster-fetch downloads before each start.
      database_sslmode     = var.database_require_tls ? "verify-full" : ""
      database_ca_url      = var.database_require_tls ? var.database_ca_bundle_url : ""
      cluster_fetch_script = file("${path.module}/files/p2pchat-cluster-fetch.sh")
      nats_unit            = file("${path.module}/files/p2pchat-nats.service")
      coordinator_dropin   = file("${path.module}/files/p2pchat-coordinator-cluster.conf")
    })) : ""
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
    tags                  = merge(local.common_tags, { Name = "${local.coordinator_names[count.index]}-root" })
  }

  tags = { Name = local.coordinator_names[count.index] }

  # The role's policies must exist before the first boot fetches anything.
  depends_on = [aws_iam_role_policy.coordinator, aws_iam_role_policy.coordinator_monitoring]

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_eip_association" "coordinator" {
  count         = var.coordinator_count
  instance_id   = aws_instance.coordinator[count.index].id
  allocation_id = aws_eip.coordinator[count.index].id
}

resource "aws_volume_attachment" "coordinator_data" {
  count       = var.coordinator_count
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.coordinator_data[count.index].id
  instance_id = aws_instance.coordinator[count.index].id
  # Let the instance stop services and unmount cleanly before detaching.
  stop_instance_before_detaching = true
}
