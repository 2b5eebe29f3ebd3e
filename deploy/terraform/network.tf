# Network: a VPC with one public subnet (unless existing_subnet_id is given)
# and one security group per role. Security group rules allow exactly:
#   coordinator: UDP coordinator_port (QUIC) from the client instances and
#                from var.coordinator_allowed_cidrs; TCP 22 from
#                var.operator_ssh_cidrs only (default none: SSM Session Manager).
#                Cluster mode (coordinator_count > 1) only: TCP
#                nats_cluster_port (NATS routes) from the coordinator group
#                itself, nothing else.
#   database:    (cluster mode only) TCP 5432 from the coordinator group only.
#   clients:     UDP peer_port from the other client instances and from
#                var.peer_allowed_cidrs; TCP 22 from var.user_ssh_cidrs (the
#                chat users) and var.operator_ssh_cidrs.
# Traffic that reaches an instance through a public address carries the
# sender's public address, which a security-group reference does not match,
# so the client instances are admitted both by group (private addresses) and
# by their Elastic IPs (the addresses the peers advertise and dial), which
# stay the same when an instance is stopped, started or replaced.

locals {
  create_network = var.existing_subnet_id == null

  subnet_id         = local.create_network ? aws_subnet.public[0].id : var.existing_subnet_id
  vpc_id            = local.create_network ? aws_vpc.main[0].id : data.aws_subnet.existing[0].vpc_id
  availability_zone = local.create_network ? aws_subnet.public[0].availability_zone : data.aws_subnet.existing[0].availability_zone
  # Known at plan time for a created subnet, so the nodes' fixed addresses are too.
  subnet_cidr = local.create_network ? var.public_subnet_cidr : data.aws_subnet.existing[0].cidr_block

  # The database's subnets (cluster mode): private, in two availability zones.
  private_subnet_ids = local.create_network ? aws_subnet.private[*].id : var.existing_private_subnet_ids

  # Elastic IPs of the client instances, keyed by index so that the keys are
  # known at plan time.
  client_public_cidrs = { for i, e in aws_eip.client : tostring(i) => "${e.public_ip}/32" }
}

data "aws_subnet" "existing" {
  count = local.create_network ? 0 : 1
  id    = var.existing_subnet_id
}

resource "aws_vpc" "main" {
  count = local.create_network ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = "${var.name}-vpc" }
}

# Strip the rules of the VPC's default security group: nothing uses it.
resource "aws_default_security_group" "main" {
  count  = local.create_network ? 1 : 0
  vpc_id = aws_vpc.main[0].id

  tags = { Name = "${var.name}-default-unused" }
}

resource "aws_internet_gateway" "main" {
  count  = local.create_network ? 1 : 0
  vpc_id = aws_vpc.main[0].id

  tags = { Name = "${var.name}-igw" }
}

resource "aws_subnet" "public" {
  count = local.create_network ? 1 : 0

  vpc_id                  = aws_vpc.main[0].id
  cidr_block              = var.public_subnet_cidr
  availability_zone       = coalesce(var.availability_zone, data.aws_availability_zones.available.names[0])
  map_public_ip_on_launch = true

  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table" "public" {
  count  = local.create_network ? 1 : 0
  vpc_id = aws_vpc.main[0].id

  # A route, not a firewall rule: the subnet's way out to the internet.
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main[0].id
  }

  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table_association" "public" {
  count          = local.create_network ? 1 : 0
  subnet_id      = aws_subnet.public[0].id
  route_table_id = aws_route_table.public[0].id
}

# Cluster mode: two private subnets for the database (an RDS subnet group
# spans two availability zones). They have no route to the internet: the
# VPC's main route table only routes inside the VPC.
resource "aws_subnet" "private" {
  count = local.create_network && local.cluster ? 2 : 0

  vpc_id                  = aws_vpc.main[0].id
  cidr_block              = var.private_subnet_cidrs[count.index]
  availability_zone       = data.aws_availability_zones.available.names[count.index]
  map_public_ip_on_launch = false

  tags = { Name = "${var.name}-private-${count.index}" }
}

# ---------------------------------------------------------------- coordinator

resource "aws_security_group" "coordinator" {
  name_prefix = "${var.name}-coordinator-"
  description = "p2pchat coordinator: QUIC (UDP) and operator SSH"
  vpc_id      = local.vpc_id

  tags = { Name = "${var.name}-coordinator" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_quic_from_clients" {
  security_group_id            = aws_security_group.coordinator.id
  description                  = "QUIC from client instances (private addresses)"
  ip_protocol                  = "udp"
  from_port                    = var.coordinator_port
  to_port                      = var.coordinator_port
  referenced_security_group_id = aws_security_group.client.id

  tags = { Name = "${var.name}-coordinator-quic-clients" }
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_quic_from_client_ips" {
  for_each = local.client_public_cidrs

  security_group_id = aws_security_group.coordinator.id
  description       = "QUIC from client instance ${each.key} (public address)"
  ip_protocol       = "udp"
  from_port         = var.coordinator_port
  to_port           = var.coordinator_port
  cidr_ipv4         = each.value

  tags = { Name = "${var.name}-coordinator-quic-client-${each.key}" }
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_quic_from_cidrs" {
  for_each = toset(var.coordinator_allowed_cidrs)

  security_group_id = aws_security_group.coordinator.id
  description       = "QUIC from var.coordinator_allowed_cidrs"
  ip_protocol       = "udp"
  from_port         = var.coordinator_port
  to_port           = var.coordinator_port
  cidr_ipv4         = each.value

  tags = { Name = "${var.name}-coordinator-quic-${each.value}" }
}

# The operator only: chat users never reach the coordinator's SSH.
resource "aws_vpc_security_group_ingress_rule" "coordinator_ssh" {
  for_each = toset(var.operator_ssh_cidrs)

  security_group_id = aws_security_group.coordinator.id
  description       = "Operator SSH from var.operator_ssh_cidrs"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value

  tags = { Name = "${var.name}-coordinator-ssh-${each.value}" }
}

# Cluster mode: NATS routes between the coordinator nodes, from this group
# only (the nodes dial each other's fixed private addresses). The NATS client
# port 4222 listens on 127.0.0.1 and has no rule.
resource "aws_vpc_security_group_ingress_rule" "coordinator_nats_cluster" {
  count = local.cluster ? 1 : 0

  security_group_id            = aws_security_group.coordinator.id
  description                  = "NATS cluster routes between coordinator nodes only"
  ip_protocol                  = "tcp"
  from_port                    = var.nats_cluster_port
  to_port                      = var.nats_cluster_port
  referenced_security_group_id = aws_security_group.coordinator.id

  tags = { Name = "${var.name}-coordinator-nats-cluster" }
}

# Outbound: HTTPS to S3 and SSM, DNS, NTP, OS updates, QUIC replies; in
# cluster mode also NATS routes to the other nodes and PostgreSQL.
resource "aws_vpc_security_group_egress_rule" "coordinator_all" {
  security_group_id = aws_security_group.coordinator.id
  description       = "All outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = { Name = "${var.name}-coordinator-egress" }
}

# ---------------------------------------------------------------- database

# Cluster mode: the database admits PostgreSQL from the coordinators only. No
# egress rule: Terraform removes AWS's default allow-all egress, and the
# database dials nothing.
resource "aws_security_group" "database" {
  count = local.cluster ? 1 : 0

  name_prefix = "${var.name}-database-"
  description = "p2pchat accounts database: PostgreSQL from the coordinators only"
  vpc_id      = local.vpc_id

  tags = { Name = "${var.name}-database" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "database_from_coordinators" {
  count = local.cluster ? 1 : 0

  security_group_id            = aws_security_group.database[0].id
  description                  = "PostgreSQL from the coordinator nodes only"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.coordinator.id

  tags = { Name = "${var.name}-database-from-coordinators" }
}

# ---------------------------------------------------------------- clients

resource "aws_security_group" "client" {
  name_prefix = "${var.name}-client-"
  description = "p2pchat client instances: peer QUIC (UDP) and SSH"
  vpc_id      = local.vpc_id

  tags = { Name = "${var.name}-client" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "client_peer_from_clients" {
  security_group_id            = aws_security_group.client.id
  description                  = "Peer QUIC between client instances (private addresses)"
  ip_protocol                  = "udp"
  from_port                    = var.peer_port
  to_port                      = var.peer_port
  referenced_security_group_id = aws_security_group.client.id

  tags = { Name = "${var.name}-client-peer-clients" }
}

resource "aws_vpc_security_group_ingress_rule" "client_peer_from_client_ips" {
  for_each = local.client_public_cidrs

  security_group_id = aws_security_group.client.id
  description       = "Peer QUIC from client instance ${each.key} (public address)"
  ip_protocol       = "udp"
  from_port         = var.peer_port
  to_port           = var.peer_port
  cidr_ipv4         = each.value

  tags = { Name = "${var.name}-client-peer-client-${each.key}" }
}

resource "aws_vpc_security_group_ingress_rule" "client_peer_from_cidrs" {
  for_each = toset(var.peer_allowed_cidrs)

  security_group_id = aws_security_group.client.id
  description       = "Peer QUIC from var.peer_allowed_cidrs"
  ip_protocol       = "udp"
  from_port         = var.peer_port
  to_port           = var.peer_port
  cidr_ipv4         = each.value

  tags = { Name = "${var.name}-client-peer-${each.value}" }
}

resource "aws_vpc_security_group_ingress_rule" "client_ssh" {
  for_each = toset(concat(var.user_ssh_cidrs, var.operator_ssh_cidrs))

  security_group_id = aws_security_group.client.id
  description       = "SSH from var.user_ssh_cidrs and var.operator_ssh_cidrs"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value

  tags = { Name = "${var.name}-client-ssh-${each.value}" }
}

# Outbound: peers dial the coordinator and other peers at any address.
resource "aws_vpc_security_group_egress_rule" "client_all" {
  security_group_id = aws_security_group.client.id
  description       = "All outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = { Name = "${var.name}-client-egress" }
}
