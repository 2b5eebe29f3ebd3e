# Artifacts: the binaries and public certificates go to a private, encrypted
# S3 bucket that only the instance roles can read (object by object); the
# coordinator's private key goes to an SSM SecureString parameter that only
# the coordinator role can read. The CA's private key is never read here.

locals {
  # Certificates are read only once they exist, so that step 1 of the README
  # (`terraform apply -target=aws_eip.coordinator`, before any certificate is
  # made) works; the preconditions below turn a missing file into a clear error.
  ca_cert_pem          = fileexists(pathexpand(var.ca_cert_path)) ? file(pathexpand(var.ca_cert_path)) : ""
  coordinator_cert_pem = fileexists(pathexpand(var.coordinator_cert_path)) ? file(pathexpand(var.coordinator_cert_path)) : ""

  object_keys = {
    coordinator_binary = "bin/coordinator"
    nats_server_binary = "bin/nats-server"
    peer_binary        = "bin/peer"
    ca_cert            = "pki/ca.pem"
    coordinator_cert   = "pki/coordinator.pem"
    chat_users         = "config/chat-users"
  }

  # `user NAME CLIENT_INDEX` and `key NAME PUBLIC_KEY` lines (public keys
  # only). Each client instance sets up the accounts of its own index.
  chat_users_lines = join("", flatten([
    for name in sort(keys(var.chat_users)) : concat(
      ["user ${name} ${var.chat_users[name].client}\n"],
      [for k in var.chat_users[name].ssh_public_keys : "key ${name} ${k}\n"],
    )
  ]))

  coordinator_key_parameter_name = "/${var.name}/coordinator/tls-key"
}

resource "aws_s3_bucket" "artifacts" {
  bucket_prefix = "${var.name}-artifacts-"
  force_destroy = var.artifact_bucket_force_destroy

  tags = { Name = "${var.name}-artifacts" }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Versioning keeps the previous binary around for a quick rollback.
resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  versioning_configuration {
    status = "Enabled"
  }
}

# Refuse any request that is not over TLS.
resource "aws_s3_bucket_policy" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}

resource "aws_s3_object" "coordinator_binary" {
  bucket      = aws_s3_bucket.artifacts.id
  key         = local.object_keys.coordinator_binary
  source      = pathexpand(var.coordinator_binary_path)
  source_hash = filebase64sha256(pathexpand(var.coordinator_binary_path))

  tags = { Name = "${var.name}-coordinator-binary" }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

resource "aws_s3_object" "peer_binary" {
  bucket      = aws_s3_bucket.artifacts.id
  key         = local.object_keys.peer_binary
  source      = pathexpand(var.peer_binary_path)
  source_hash = filebase64sha256(pathexpand(var.peer_binary_path))

  tags = { Name = "${var.name}-peer-binary" }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

resource "aws_s3_object" "ca_cert" {
  bucket       = aws_s3_bucket.artifacts.id
  key          = local.object_keys.ca_cert
  content      = local.ca_cert_pem
  content_type = "application/x-pem-file"

  tags = { Name = "${var.name}-ca-cert" }

  lifecycle {
    precondition {
      condition     = can(regex("-----BEGIN CERTIFICATE-----", local.ca_cert_pem))
      error_message = "No CA certificate at ca_cert_path: run p2pchat-certs with the coordinator's Elastic IP first (README, step 3)."
    }
  }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

# The chat users' accounts, read by every client instance at each run of
# p2pchat-client-setup: adding a user replaces no instance.
resource "aws_s3_object" "chat_users" {
  bucket       = aws_s3_bucket.artifacts.id
  key          = local.object_keys.chat_users
  content      = local.chat_users_lines
  content_type = "text/plain"

  tags = { Name = "${var.name}-chat-users" }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

resource "aws_s3_object" "coordinator_cert" {
  bucket       = aws_s3_bucket.artifacts.id
  key          = local.object_keys.coordinator_cert
  content      = local.coordinator_cert_pem
  content_type = "application/x-pem-file"

  tags = { Name = "${var.name}-coordinator-cert" }

  lifecycle {
    precondition {
      condition     = can(regex("-----BEGIN CERTIFICATE-----", local.coordinator_cert_pem))
      error_message = "No coordinator certificate at coordinator_cert_path: run p2pchat-certs with the coordinator's Elastic IP first (README, step 3)."
    }
  }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

# The coordinator's TLS private key, encrypted with the account's aws/ssm KMS
# key. `value_wo` is write-only: Terraform sends it to SSM but keeps it out of
# the plan and the state. It is re-sent whenever value_wo_version changes,
# which is derived from a digest of the key file, so rotating the key file and
# applying updates the parameter (48 bits of a SHA-256 digest of the key are
# kept in the state; they reveal nothing usable about the key).
resource "aws_ssm_parameter" "coordinator_key" {
  name        = local.coordinator_key_parameter_name
  description = "TLS private key of the p2pchat coordinator (read by the coordinator instance role only)"
  type        = "SecureString"
  tier        = "Standard"

  value_wo         = fileexists(pathexpand(var.coordinator_key_path)) ? file(pathexpand(var.coordinator_key_path)) : ""
  value_wo_version = fileexists(pathexpand(var.coordinator_key_path)) ? parseint(substr(filesha256(pathexpand(var.coordinator_key_path)), 0, 12), 16) : 0

  tags = { Name = "${var.name}-coordinator-tls-key" }

  lifecycle {
    precondition {
      condition     = fileexists(pathexpand(var.coordinator_key_path))
      error_message = "No coordinator key at coordinator_key_path: run p2pchat-certs with the coordinator's Elastic IP first (README, step 3)."
    }
  }
}
