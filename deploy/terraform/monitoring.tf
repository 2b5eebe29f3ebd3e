# Operating the coordinator (issue 13): its metrics in CloudWatch, one alarm
# when it is down or unready, and daily snapshots of its data volume.
#
# Metrics: the coordinator serves Prometheus metrics on loopback only
# (127.0.0.1:metrics_port, no authentication); the CloudWatch agent on the
# instance scrapes them every minute and sends them as embedded-metric-format
# logs to a log group, from which CloudWatch extracts the metrics in the
# namespace metrics_namespace (dimensions: job and the metric's labels).
#
# Readiness: p2pchat-readiness.timer asks /readyz every minute and puts
# CoordinatorReady = 1 or 0; the alarm fires when it is below 1 for three
# minutes, and treats missing data as breaching: a stopped or dead instance
# sends nothing, and that is the "down" case.
#
# Snapshots: AWS Data Lifecycle Manager snapshots every volume tagged
# Snapshots = "<name>-daily" (the coordinator's data volume) once a day at
# snapshot_time UTC and keeps the last snapshot_retention_count.

locals {
  # The tag that puts a volume under the daily snapshot policy.
  snapshot_tag = { Snapshots = "${var.name}-daily" }
  # The readiness metric the reporter puts and the alarm watches.
  readiness_metric = "CoordinatorReady"
}

resource "aws_cloudwatch_log_group" "coordinator_metrics" {
  name              = "/${var.name}/coordinator/metrics"
  retention_in_days = var.metrics_log_retention_days

  tags = { Name = "${var.name}-coordinator-metrics" }
}

resource "aws_cloudwatch_metric_alarm" "coordinator_unready" {
  alarm_name        = "${var.name}-coordinator-down-or-unready"
  alarm_description = "The p2pchat coordinator answers /readyz with an error (database not writable, not accepting) or reports nothing (down, stopped, or its instance gone)."
  namespace         = var.metrics_namespace
  metric_name       = local.readiness_metric
  dimensions = {
    Deployment = var.name
  }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  # No data is the worst case (nothing is reporting), not a reason to wait.
  treat_missing_data = "breaching"
  alarm_actions      = var.alarm_actions
  ok_actions         = var.alarm_actions

  tags = { Name = "${var.name}-coordinator-down-or-unready" }
}

# Cluster mode: every node reports CoordinatorReady under the same dimension,
# so the alarm above sees the worst node that reports, and misses a node that
# reports nothing while the others report 1. One alarm per node on its EC2
# status check covers that: a stopped, terminated or impaired instance (no
# data is breaching too). A replaced node's alarm follows its new instance id
# in the same apply.
resource "aws_cloudwatch_metric_alarm" "coordinator_node_down" {
  count = local.cluster ? var.coordinator_count : 0

  alarm_name        = "${local.coordinator_names[count.index]}-down"
  alarm_description = "p2pchat coordinator node ${local.coordinator_names[count.index]} is stopped, gone or fails its EC2 status checks (the cluster goes on with the other nodes)."
  namespace         = "AWS/EC2"
  metric_name       = "StatusCheckFailed"
  dimensions = {
    InstanceId = aws_instance.coordinator[count.index].id
  }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = { Name = "${local.coordinator_names[count.index]}-down" }
}

# ---------------------------------------------------------------- snapshots

data "aws_iam_policy_document" "dlm_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["dlm.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "dlm" {
  name_prefix        = "${var.name}-dlm-"
  description        = "Data Lifecycle Manager: daily snapshots of the p2pchat coordinator's data volume"
  assume_role_policy = data.aws_iam_policy_document.dlm_assume.json

  tags = { Name = "${var.name}-dlm" }
}

# What DLM needs for EBS snapshot policies (the volume actions of the managed
# AWSDataLifecycleManagerServiceRole policy), without fast snapshot restore
# or copies to other regions, which this policy does not use.
data "aws_iam_policy_document" "dlm" {
  statement {
    sid = "Snapshots"
    actions = [
      "ec2:CreateSnapshot",
      "ec2:CreateSnapshots",
      "ec2:DeleteSnapshot",
      "ec2:DescribeInstances",
      "ec2:DescribeVolumes",
      "ec2:DescribeSnapshots",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "TagSnapshots"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:${local.partition}:ec2:*::snapshot/*"]
  }
}

resource "aws_iam_role_policy" "dlm" {
  name   = "${var.name}-dlm-snapshots"
  role   = aws_iam_role.dlm.id
  policy = data.aws_iam_policy_document.dlm.json
}

resource "aws_dlm_lifecycle_policy" "coordinator_data" {
  # DLM accepts only letters, digits, spaces, "_" and "-" here (no ":").
  description        = "${var.name} daily snapshots of the coordinator data volume"
  execution_role_arn = aws_iam_role.dlm.arn
  state              = "ENABLED"

  policy_details {
    resource_types = ["VOLUME"]
    target_tags    = local.snapshot_tag

    schedule {
      name = "daily"

      create_rule {
        interval      = 24
        interval_unit = "HOURS"
        times         = [var.snapshot_time]
      }

      retain_rule {
        count = var.snapshot_retention_count
      }

      copy_tags = true
      tags_to_add = {
        SnapshotCreator = "dlm"
      }
    }
  }

  tags = { Name = "${var.name}-coordinator-data-snapshots" }
}
