# `terraform test` of the coordinator layouts, against mocked providers: no
# AWS account, no network once the providers are installed (check.sh runs it
# when `terraform init` can install them, and skips it otherwise). Each run
# applies the whole configuration with mock values, so every expression and
# template is evaluated, and the provider's own argument validation runs.

mock_provider "random" {}

mock_provider "aws" {
  # Values the configuration parses or that AWS would give in a fixed shape.
  mock_resource "aws_eip" {
    defaults = { public_ip = "203.0.113.10" }
  }
  mock_resource "aws_ebs_volume" {
    defaults = { id = "vol-0123456789abcdef0" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_ssm_parameter" {
    defaults = { arn = "arn:aws:ssm:us-east-1:123456789012:parameter/mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock", id = "mock-bucket" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  override_data {
    target = data.aws_availability_zones.available
    values = { names = ["us-east-1a", "us-east-1b", "us-east-1c"] }
  }
  override_data {
    target = data.aws_caller_identity.current
    values = { account_id = "123456789012" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  override_data {
    target = data.aws_ami.al2023
    values = { id = "ami-0123456789abcdef0" }
  }
  override_data {
    target = data.aws_subnet.existing
    values = { vpc_id = "vpc-0123456789abcdef0", availability_zone = "us-east-1a", cidr_block = "10.9.0.0/24" }
  }
}

variables {
  coordinator_binary_path = "tests/fake/coordinator"
  peer_binary_path        = "tests/fake/peer"
  nats_server_binary_path = "tests/fake/nats-server"
  ca_cert_path            = "tests/fake/ca-cert.txt"
  coordinator_cert_path   = "tests/fake/coordinator-cert.txt"
  coordinator_key_path    = "tests/fake/coordinator-key.txt"
}

run "one_coordinator_by_default_and_nothing_of_the_cluster" {
  command = apply

  assert {
    condition     = length(aws_instance.coordinator) == 1 && aws_instance.coordinator[0].tags.Name == "p2pchat-coordinator"
    error_message = "the default is not one coordinator with its old name"
  }
  assert {
    condition = alltrue([
      length(aws_db_instance.accounts) == 0,
      length(aws_subnet.private) == 0,
      length(aws_security_group.database) == 0,
      length(random_password.database) == 0,
      length(aws_ssm_parameter.database_password) == 0,
      length(aws_s3_object.nats_server_binary) == 0,
      length(aws_vpc_security_group_ingress_rule.coordinator_nats_cluster) == 0,
      length(aws_cloudwatch_metric_alarm.coordinator_node_down) == 0,
      length(aws_route53_record.coordinator) == 0,
    ])
    error_message = "one coordinator creates a piece of the cluster"
  }
  assert {
    condition     = output.coordinator_address == "203.0.113.10:7070" && output.database_endpoint == null
    error_message = "one coordinator's address is not its EIP:PORT"
  }
}

run "three_nodes_with_a_dns_name" {
  command = apply

  variables {
    coordinator_count = 3
    dns_zone_id       = "Z0123456789ABCDEFGHIJ"
    dns_name          = "chat.example.com"
  }

  assert {
    condition     = [for i in aws_instance.coordinator : i.private_ip] == ["10.42.1.10", "10.42.1.11", "10.42.1.12"]
    error_message = "the nodes do not have their fixed private addresses"
  }
  assert {
    condition     = [for i in aws_instance.coordinator : i.tags.Name] == ["p2pchat-coordinator-0", "p2pchat-coordinator-1", "p2pchat-coordinator-2"]
    error_message = "node names"
  }
  assert {
    condition = alltrue([
      length(aws_db_instance.accounts) == 1,
      aws_db_instance.accounts[0].storage_encrypted,
      !aws_db_instance.accounts[0].publicly_accessible,
      aws_db_instance.accounts[0].backup_retention_period == 7,
      aws_db_instance.accounts[0].deletion_protection,
      length(aws_db_subnet_group.accounts[0].subnet_ids) == 2,
    ])
    error_message = "the database is not private, encrypted, backed up and protected"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.coordinator_nats_cluster[0].referenced_security_group_id == aws_security_group.coordinator.id && aws_vpc_security_group_ingress_rule.coordinator_nats_cluster[0].cidr_ipv4 == null
    error_message = "the NATS route port is open to something else than the coordinators"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.database_from_coordinators[0].referenced_security_group_id == aws_security_group.coordinator.id
    error_message = "PostgreSQL is open to something else than the coordinators"
  }
  assert {
    condition     = output.coordinator_address == "chat.example.com:7070" && length(output.coordinator_nodes) == 3
    error_message = "peers are not given the DNS name"
  }
  assert {
    condition     = aws_route53_record.coordinator[0].type == "A" && length(aws_cloudwatch_metric_alarm.coordinator_node_down) == 3
    error_message = "no A record or no per-node alarm"
  }
  assert {
    condition     = output.database_password_parameter == "/p2pchat/coordinator/database-password"
    error_message = "the password parameter"
  }
}

run "five_nodes_route_to_three_seeds_and_peers_get_every_address" {
  command = apply

  variables {
    coordinator_count = 5
  }

  assert {
    condition     = local.nats_seed_ips == ["10.42.1.10", "10.42.1.11", "10.42.1.12"]
    error_message = "NATS seeds are not the first three nodes"
  }
  assert {
    condition     = length(split(",", output.coordinator_address)) == 5
    error_message = "without DNS, peers are not given every node's address"
  }
}

run "a_cluster_in_an_existing_subnet_needs_private_subnets" {
  command = plan

  variables {
    coordinator_count  = 3
    existing_subnet_id = "subnet-0123456789abcdef0"
  }

  expect_failures = [var.existing_private_subnet_ids]
}

run "a_cluster_needs_the_nats_server_binary" {
  command = plan

  variables {
    coordinator_count       = 3
    nats_server_binary_path = "tests/fake/missing"
  }

  expect_failures = [var.nats_server_binary_path]
}

run "one_coordinator_does_not_need_it" {
  command = plan

  variables {
    nats_server_binary_path = "tests/fake/missing"
  }
}

run "ten_nodes_are_refused" {
  command = plan

  variables {
    coordinator_count = 10
  }

  expect_failures = [var.coordinator_count]
}
