# Cluster mode (coordinator_count > 1): what a cluster of coordinators shares.
#   - RDS PostgreSQL for the accounts: encrypted at rest, not publicly
#     accessible, in two private subnets, reachable on 5432 from the
#     coordinators' security group only (network.tf), automated backups, a
#     final snapshot and deletion protection by default.
#   - Its password: random (letters and digits, so it needs no escaping in a
#     URL), sent to RDS and to an SSM SecureString parameter through
#     write-only arguments. The coordinators read the parameter at each start
#     (iam.tf: that parameter only, kms:Decrypt only through SSM for it) and
#     build --database on the instance; it is never in user data or an output.
#     It is in the state once, as random_password's sensitive result: keep
#     the state private (as for the rest of the deployment).
#   - The nats-server binary, in the artifact bucket like the coordinator's.
#   - Optionally one Route 53 A record with every node's Elastic IP.
# A single coordinator creates none of these (every count below is 0).

locals {
  database_name = "p2pchat"
  database_user = "p2pchat"

  database_password_parameter_name = "/${var.name}/coordinator/database-password"
}

resource "random_password" "database" {
  count = local.cluster ? 1 : 0

  length  = 40
  special = false
  # A new version number generates a new password (rotation).
  keepers = {
    version = var.database_password_version
  }
}

resource "aws_ssm_parameter" "database_password" {
  count = local.cluster ? 1 : 0

  name        = local.database_password_parameter_name
  description = "Password of the p2pchat accounts database (read by the coordinator instance role only)"
  type        = "SecureString"
  tier        = "Standard"

  value_wo         = random_password.database[0].result
  value_wo_version = var.database_password_version

  tags = { Name = "${var.name}-coordinator-database-password" }
}

resource "aws_db_subnet_group" "accounts" {
  count = local.cluster ? 1 : 0

  name_prefix = "${var.name}-accounts-"
  description = "p2pchat accounts database: private subnets only"
  subnet_ids  = local.private_subnet_ids

  tags = { Name = "${var.name}-accounts" }
}

resource "aws_db_parameter_group" "accounts" {
  count = local.cluster ? 1 : 0

  name_prefix = "${var.name}-accounts-"
  description = "p2pchat accounts database"
  family      = "postgres${var.database_engine_version}"

  parameter {
    name  = "rds.force_ssl"
    value = var.database_require_tls ? "1" : "0"
  }

  tags = { Name = "${var.name}-accounts" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "accounts" {
  count = local.cluster ? 1 : 0

  identifier_prefix = "${var.name}-accounts-"
  engine            = "postgres"
  engine_version    = var.database_engine_version
  instance_class    = var.database_instance_class
  multi_az          = var.database_multi_az

  db_name             = local.database_name
  username            = local.database_user
  password_wo         = random_password.database[0].result
  password_wo_version = var.database_password_version
  port                = 5432

  allocated_storage     = var.database_allocated_storage_gb
  max_allocated_storage = var.database_allocated_storage_gb * 5
  storage_type          = "gp3"
  storage_encrypted     = true

  db_subnet_group_name   = aws_db_subnet_group.accounts[0].name
  vpc_security_group_ids = [aws_security_group.database[0].id]
  parameter_group_name   = aws_db_parameter_group.accounts[0].name
  publicly_accessible    = false

  backup_retention_period    = var.database_backup_retention_days
  deletion_protection        = var.database_deletion_protection
  skip_final_snapshot        = var.database_skip_final_snapshot
  final_snapshot_identifier  = "${var.name}-accounts-final"
  copy_tags_to_snapshot      = true
  auto_minor_version_upgrade = true
  apply_immediately          = false

  tags = { Name = "${var.name}-accounts" }
}

resource "aws_s3_object" "nats_server_binary" {
  count = local.cluster ? 1 : 0

  bucket      = aws_s3_bucket.artifacts.id
  key         = local.object_keys.nats_server_binary
  source      = pathexpand(var.nats_server_binary_path)
  source_hash = filebase64sha256(pathexpand(var.nats_server_binary_path))

  tags = { Name = "${var.name}-nats-server-binary" }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

# One name for users: an A record holding every node's Elastic IP (a
# resolver returns them all, in varying order). Any number of coordinators.
resource "aws_route53_record" "coordinator" {
  count = var.dns_zone_id != null ? 1 : 0

  zone_id = var.dns_zone_id
  name    = var.dns_name
  type    = "A"
  ttl     = 60
  records = aws_eip.coordinator[*].public_ip
}
