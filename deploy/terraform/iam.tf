# Instance roles, least privilege:
#   coordinator: s3:GetObject on its binary and its certificate, ssm:GetParameter
#                on its key parameter, kms:Decrypt only through SSM for that parameter;
#                in cluster mode also the nats-server binary and the database
#                password's parameter (the same way: that ARN, kms:Decrypt via SSM);
#                writing its metrics log group (CloudWatch agent) and putting
#                metrics in its own namespace only (readiness reporter).
#   clients:     s3:GetObject on the peer binary, the CA certificate and the
#                chat users' list.
#   both, with enable_ssm_session_manager: registering with SSM Session
#                Manager (the operator's shell without SSH); these actions
#                take no resource narrower than "*".
# No managed policies, no wildcards on buckets or parameters.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# What the SSM agent needs for Session Manager (the actions of the managed
# AmazonSSMManagedInstanceCore policy that sessions use, without its
# parameter and document reads).
data "aws_iam_policy_document" "ssm_session" {
  statement {
    sid = "SessionManager"
    actions = [
      "ssm:UpdateInstanceInformation",
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"]
  }
}

# ---------------------------------------------------------------- coordinator

resource "aws_iam_role" "coordinator" {
  name_prefix        = "${var.name}-coordinator-"
  description        = "p2pchat coordinator instance: reads its binary, certificate and key"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json

  tags = { Name = "${var.name}-coordinator" }
}

data "aws_iam_policy_document" "coordinator" {
  statement {
    sid     = "ReadCoordinatorArtifacts"
    actions = ["s3:GetObject"]
    # Cluster mode adds the nats-server binary (the list is empty otherwise).
    resources = concat([
      "${aws_s3_bucket.artifacts.arn}/${aws_s3_object.coordinator_binary.key}",
      "${aws_s3_bucket.artifacts.arn}/${aws_s3_object.coordinator_cert.key}",
    ], [for o in aws_s3_object.nats_server_binary : "${aws_s3_bucket.artifacts.arn}/${o.key}"])
  }

  # The TLS key's parameter, and in cluster mode the database password's.
  statement {
    sid       = "ReadCoordinatorKeyParameter"
    actions   = ["ssm:GetParameter"]
    resources = concat([aws_ssm_parameter.coordinator_key.arn], aws_ssm_parameter.database_password[*].arn)
  }

  # The parameter is encrypted with the AWS-managed aws/ssm key, whose key
  # policy already lets the account's principals use it through SSM; this
  # statement makes the grant explicit and narrows it to this parameter.
  statement {
    sid       = "DecryptCoordinatorKeyParameter"
    actions   = ["kms:Decrypt"]
    resources = ["arn:${local.partition}:kms:${var.region}:${local.account_id}:key/*"]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = concat([aws_ssm_parameter.coordinator_key.arn], aws_ssm_parameter.database_password[*].arn)
    }
  }
}

# The CloudWatch agent writes the scraped metrics to their log group; the
# readiness reporter puts CoordinatorReady. PutMetricData takes no resource,
# so the namespace condition is what narrows it.
data "aws_iam_policy_document" "coordinator_monitoring" {
  statement {
    sid = "WriteMetricsLogGroup"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = [
      aws_cloudwatch_log_group.coordinator_metrics.arn,
      "${aws_cloudwatch_log_group.coordinator_metrics.arn}:*",
    ]
  }

  statement {
    sid       = "DescribeLogGroups"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"]
  }

  statement {
    sid       = "PutOwnMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metrics_namespace]
    }
  }
}

resource "aws_iam_role_policy" "coordinator_monitoring" {
  name   = "${var.name}-coordinator-monitoring"
  role   = aws_iam_role.coordinator.id
  policy = data.aws_iam_policy_document.coordinator_monitoring.json
}

resource "aws_iam_role_policy" "coordinator" {
  name   = "${var.name}-coordinator-artifacts"
  role   = aws_iam_role.coordinator.id
  policy = data.aws_iam_policy_document.coordinator.json
}

resource "aws_iam_role_policy" "coordinator_ssm_session" {
  count = var.enable_ssm_session_manager ? 1 : 0

  name   = "${var.name}-coordinator-ssm-session"
  role   = aws_iam_role.coordinator.id
  policy = data.aws_iam_policy_document.ssm_session.json
}

resource "aws_iam_instance_profile" "coordinator" {
  name_prefix = "${var.name}-coordinator-"
  role        = aws_iam_role.coordinator.name

  tags = { Name = "${var.name}-coordinator" }
}

# ---------------------------------------------------------------- clients

resource "aws_iam_role" "client" {
  name_prefix        = "${var.name}-client-"
  description        = "p2pchat client instances: read the peer binary and the CA certificate"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json

  tags = { Name = "${var.name}-client" }
}

data "aws_iam_policy_document" "client" {
  statement {
    sid     = "ReadPeerArtifacts"
    actions = ["s3:GetObject"]
    resources = [
      "${aws_s3_bucket.artifacts.arn}/${aws_s3_object.peer_binary.key}",
      "${aws_s3_bucket.artifacts.arn}/${aws_s3_object.ca_cert.key}",
      "${aws_s3_bucket.artifacts.arn}/${aws_s3_object.chat_users.key}",
    ]
  }
}

resource "aws_iam_role_policy" "client" {
  name   = "${var.name}-client-artifacts"
  role   = aws_iam_role.client.id
  policy = data.aws_iam_policy_document.client.json
}

resource "aws_iam_role_policy" "client_ssm_session" {
  count = var.enable_ssm_session_manager ? 1 : 0

  name   = "${var.name}-client-ssm-session"
  role   = aws_iam_role.client.id
  policy = data.aws_iam_policy_document.ssm_session.json
}

resource "aws_iam_instance_profile" "client" {
  name_prefix = "${var.name}-client-"
  role        = aws_iam_role.client.name

  tags = { Name = "${var.name}-client" }
}
