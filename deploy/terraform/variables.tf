# Inputs of the p2pchat EC2 deployment. Every variable has a type, a
# description and, where a wrong value would only fail later in AWS, a
# validation that fails at plan time instead.

# ---------------------------------------------------------------- general

variable "region" {
  description = "AWS region to deploy into, e.g. us-east-1."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$", var.region))
    error_message = "region must look like an AWS region name, e.g. us-east-1."
  }
}

variable "name" {
  description = "Prefix for resource names and the Deployment tag; lets several deployments share one account."
  type        = string
  default     = "p2pchat"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,23}$", var.name))
    error_message = "name must be 2-24 characters: lower-case letters, digits and '-', starting with a letter."
  }
}

variable "environment" {
  description = "Value of the Environment tag (e.g. dev, staging, prod)."
  type        = string
  default     = "dev"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,32}$", var.environment))
    error_message = "environment must be 1-32 characters of letters, digits, '_', '.' or '-'."
  }
}

variable "extra_tags" {
  description = "Additional tags merged into the provider's default_tags (applied to every taggable resource). At most 5: S3 objects take 10 tags, and the 4 default tags (Project, Deployment, ManagedBy, Environment) and Name use the rest."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(var.extra_tags) <= 5
    error_message = "extra_tags may hold at most 5 tags: S3 objects take 10, and the 4 default tags and Name use the other 5."
  }

  validation {
    condition     = alltrue([for k, v in var.extra_tags : length(k) >= 1 && length(k) <= 128 && length(v) <= 256 && !startswith(lower(k), "aws:") && !contains(["project", "deployment", "managedby", "environment", "name"], lower(k))])
    error_message = "extra_tags keys must be 1-128 characters, values at most 256, no key may start with aws:, and none may replace Project, Deployment, ManagedBy, Environment or Name."
  }
}

# ---------------------------------------------------------------- instances

variable "architecture" {
  description = "CPU architecture of the instances and of the binaries you build: x86_64 (t3.*) or arm64 (t4g.*)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be \"x86_64\" or \"arm64\"."
  }
}

variable "ami_id" {
  description = "AMI to use instead of the latest Amazon Linux 2023 image (null = look it up). It must have bash, systemd, curl and the AWS CLI v2, and a glibc at least as new as the one the binaries were linked against."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null or look like ami-0123456789abcdef0."
  }
}

variable "coordinator_instance_type" {
  description = "EC2 instance type of the coordinator; must match architecture (t3.micro for x86_64, t4g.micro for arm64)."
  type        = string
  default     = "t3.micro"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.coordinator_instance_type))
    error_message = "coordinator_instance_type must look like an instance type, e.g. t3.micro."
  }
}

variable "client_instance_type" {
  description = "EC2 instance type of the client instances where users run `peer`; must match architecture."
  type        = string
  default     = "t3.micro"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.client_instance_type))
    error_message = "client_instance_type must look like an instance type, e.g. t3.micro."
  }
}

variable "client_count" {
  description = "Number of client instances (one chatting user per instance at a time, since the peer port is fixed)."
  type        = number
  default     = 2

  validation {
    condition     = var.client_count >= 0 && var.client_count <= 50 && floor(var.client_count) == var.client_count
    error_message = "client_count must be a whole number from 0 to 50."
  }
}

variable "key_pair_name" {
  description = "Name of an existing EC2 key pair in the region, installed for ec2-user on every instance: the operator's key, never given to chat users. null = no key pair (the operator uses SSM Session Manager)."
  type        = string
  default     = null

  validation {
    condition     = var.key_pair_name == null || (length(coalesce(var.key_pair_name, "x")) > 0 && length(coalesce(var.key_pair_name, "x")) <= 255)
    error_message = "key_pair_name must be null or the name of an existing EC2 key pair."
  }
}

variable "ssh_identity_file" {
  description = "Path of the SSH private key matching key_pair_name on the operator's machine. Only used to print the operator's ssh commands in the outputs; never read by Terraform."
  type        = string
  default     = "~/.ssh/id_ed25519"
}

variable "chat_users" {
  description = "The people who chat: Unix account name => the client instance (index, 0 to client_count - 1) they log in to and their SSH public keys. Each gets their own account (no sudo) and their own data folder on that instance; one user per instance, since the peer port is fixed. Read from S3 at every boot of the client setup unit (and on systemctl restart p2pchat-client-setup), so changing it replaces nothing."
  type = map(object({
    client          = number
    ssh_public_keys = list(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for name, u in var.chat_users : can(regex("^[a-z][a-z0-9_-]{0,30}$", name)) && !contains(["root", "ec2-user", "p2pchat", "admin", "bin", "daemon", "nobody", "ssm-user", "adm", "sync", "halt", "shutdown", "operator"], name)])
    error_message = "chat_users names must be Unix account names (a-z, then up to 30 of a-z 0-9 _ -) other than system accounts such as root, ec2-user, ssm-user or p2pchat."
  }

  validation {
    condition     = alltrue([for u in values(var.chat_users) : u.client >= 0 && u.client < var.client_count && floor(u.client) == u.client])
    error_message = "every chat_users entry's client must be the index of a client instance: 0 to client_count - 1."
  }

  validation {
    condition     = length(distinct([for u in values(var.chat_users) : u.client])) == length(var.chat_users)
    error_message = "one chat user per client instance: the peer port is fixed, so two users on one instance could not chat at the same time."
  }

  validation {
    condition     = alltrue(flatten([for u in values(var.chat_users) : [for k in u.ssh_public_keys : can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/=]+( [^\\n]*)?$", k))]]))
    error_message = "every ssh_public_keys entry must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)."
  }
}

variable "root_volume_size_gb" {
  description = "Size in GiB of each instance's encrypted root volume (Amazon Linux 2023 needs at least 8)."
  type        = number
  default     = 8

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 1024
    error_message = "root_volume_size_gb must be between 8 and 1024."
  }
}

variable "coordinator_data_volume_size_gb" {
  description = "Size in GiB of the coordinator's separate encrypted EBS volume, mounted at /var/lib/p2pchat (accounts database)."
  type        = number
  default     = 4

  validation {
    condition     = var.coordinator_data_volume_size_gb >= 1 && var.coordinator_data_volume_size_gb <= 1024
    error_message = "coordinator_data_volume_size_gb must be between 1 and 1024."
  }
}

variable "coordinator_log_level" {
  description = "RUST_LOG filter for the coordinator (its logs go to the journal)."
  type        = string
  default     = "info"

  validation {
    condition     = can(regex("^[A-Za-z0-9_:=,.-]+$", var.coordinator_log_level))
    error_message = "coordinator_log_level must be a tracing filter such as info or coordinator=debug,info."
  }
}

# ---------------------------------------------------------------- network

variable "existing_subnet_id" {
  description = "ID of an existing public subnet (route to an internet gateway, public IPs on launch) to use instead of creating a VPC. null = create a VPC and subnet."
  type        = string
  default     = null

  validation {
    condition     = var.existing_subnet_id == null || can(regex("^subnet-[0-9a-f]{8,17}$", var.existing_subnet_id))
    error_message = "existing_subnet_id must be null or look like subnet-0123456789abcdef0."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created when existing_subnet_id is null."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block, e.g. 10.42.0.0/16."
  }
}

variable "public_subnet_cidr" {
  description = "CIDR of the public subnet created inside vpc_cidr when existing_subnet_id is null."
  type        = string
  default     = "10.42.1.0/24"

  validation {
    condition     = can(cidrhost(var.public_subnet_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.public_subnet_cidr))
    error_message = "public_subnet_cidr must be an IPv4 CIDR block, e.g. 10.42.1.0/24."
  }
}

variable "availability_zone" {
  description = "Availability zone of the created subnet (null = the region's first available zone). Ignored with existing_subnet_id."
  type        = string
  default     = null
}

variable "operator_ssh_cidrs" {
  description = "IPv4 CIDR blocks of the operator, allowed to SSH (TCP 22) to the coordinator and the client instances as ec2-user. Default none: the operator uses SSM Session Manager (aws ssm start-session), which needs no open port. Never put chat users' addresses here: the coordinator holds the accounts database and can read its TLS key."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.operator_ssh_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "operator_ssh_cidrs must be a list of IPv4 CIDR blocks."
  }
}

variable "user_ssh_cidrs" {
  description = "IPv4 CIDR blocks from which chat users SSH (TCP 22) to the client instances, with their own accounts (chat_users). Never opens the coordinator."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.user_ssh_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "user_ssh_cidrs must be a list of IPv4 CIDR blocks."
  }
}

variable "enable_ssm_session_manager" {
  description = "Let the instance roles register with SSM Session Manager, so that the operator (an IAM principal allowed ssm:StartSession) reaches a shell with no SSH port open."
  type        = bool
  default     = true
}

variable "coordinator_port" {
  description = "UDP port of the coordinator's QUIC endpoint (unprivileged, so the service needs no capability)."
  type        = number
  default     = 7070

  validation {
    condition     = var.coordinator_port >= 1024 && var.coordinator_port <= 65535 && floor(var.coordinator_port) == var.coordinator_port
    error_message = "coordinator_port must be a whole number from 1024 to 65535."
  }
}

variable "peer_port" {
  description = "Fixed UDP port on which `peer` listens on client instances (QUIC between peers and to the coordinator)."
  type        = number
  default     = 7071

  validation {
    condition     = var.peer_port >= 1024 && var.peer_port <= 65535 && floor(var.peer_port) == var.peer_port
    error_message = "peer_port must be a whole number from 1024 to 65535."
  }
}

variable "coordinator_allowed_cidrs" {
  description = "Extra IPv4 CIDR blocks allowed to reach the coordinator's QUIC port, for peers outside this deployment's client instances. [\"0.0.0.0/0\"] opens it to everyone. The client instances are always allowed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.coordinator_allowed_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "coordinator_allowed_cidrs must be a list of IPv4 CIDR blocks."
  }
}

variable "peer_allowed_cidrs" {
  description = "Extra IPv4 CIDR blocks allowed to reach the peer port on client instances (peers running elsewhere). [\"0.0.0.0/0\"] = from anywhere. Client instances always reach each other."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.peer_allowed_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "peer_allowed_cidrs must be a list of IPv4 CIDR blocks."
  }
}

# ---------------------------------------------------------------- artifacts

variable "coordinator_binary_path" {
  description = "Path of the `coordinator` executable built by the operator (relative paths are relative to the directory terraform runs in). Its libc must be compatible with the AMI: see README."
  type        = string
  default     = "../../target/x86_64-unknown-linux-musl/release/coordinator"

  validation {
    condition     = fileexists(pathexpand(var.coordinator_binary_path))
    error_message = "coordinator_binary_path does not name a file: build the binaries first (README, step 1)."
  }
}

variable "peer_binary_path" {
  description = "Path of the `peer` executable built by the operator (relative to the directory terraform runs in)."
  type        = string
  default     = "../../target/x86_64-unknown-linux-musl/release/peer"

  validation {
    condition     = fileexists(pathexpand(var.peer_binary_path))
    error_message = "peer_binary_path does not name a file: build the binaries first (README, step 1)."
  }
}

variable "ca_cert_path" {
  description = "Path of the CA certificate (ca.pem) written by p2pchat-certs; uploaded for the peers to verify the coordinator. The CA's private key is never read."
  type        = string
  default     = "~/p2pchat-pki/ca.pem"
}

variable "coordinator_cert_path" {
  description = "Path of the coordinator certificate (coordinator.pem) written by p2pchat-certs; it must name the coordinator's Elastic IP."
  type        = string
  default     = "~/p2pchat-pki/coordinator.pem"
}

variable "coordinator_key_path" {
  description = "Path of the coordinator's private key (coordinator.key) written by p2pchat-certs. Sent to SSM Parameter Store as a write-only value: never in the plan, the state or user data."
  type        = string
  default     = "~/p2pchat-pki/coordinator.key"

  validation {
    condition     = basename(var.coordinator_key_path) != "ca.key"
    error_message = "coordinator_key_path must name the coordinator's key, never the CA's key: the CA key stays on the operator's machine."
  }
}

variable "artifact_bucket_force_destroy" {
  description = "Let `terraform destroy` delete the artifact bucket even though it holds objects (they are rebuilt from source)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- operating

variable "metrics_port" {
  description = "TCP port of the coordinator's metrics and health listener (/metrics, /healthz, /readyz). It listens on 127.0.0.1 only: the CloudWatch agent and the readiness reporter on the instance use it; no security group rule opens it."
  type        = number
  default     = 9090

  validation {
    condition     = var.metrics_port >= 1024 && var.metrics_port <= 65535
    error_message = "metrics_port must be between 1024 and 65535."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the coordinator's metrics and of the CoordinatorReady metric the alarm watches."
  type        = string
  default     = "p2pchat"

  validation {
    condition     = can(regex("^[A-Za-z0-9_./#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 of A-Z a-z 0-9 _ . / # : - and not start with AWS/."
  }
}

variable "metrics_log_retention_days" {
  description = "Days CloudWatch Logs keeps the scraped metrics (the log group the CloudWatch agent writes; the metrics extracted from it keep CloudWatch's own retention)."
  type        = number
  default     = 14

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.metrics_log_retention_days)
    error_message = "metrics_log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "alarm_actions" {
  description = "ARNs notified when the coordinator-down-or-unready alarm changes state (an SNS topic, say). Empty: the alarm is visible in the console only."
  type        = list(string)
  default     = []
}

variable "snapshot_time" {
  description = "Time of day (UTC, HH:MM) of the daily snapshot of the coordinator's data volume."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.snapshot_time))
    error_message = "snapshot_time must be HH:MM (UTC)."
  }
}

variable "snapshot_retention_count" {
  description = "How many daily snapshots of the coordinator's data volume are kept (7: one week); older ones are deleted by Data Lifecycle Manager."
  type        = number
  default     = 7

  validation {
    condition     = var.snapshot_retention_count >= 1 && var.snapshot_retention_count <= 1000
    error_message = "snapshot_retention_count must be between 1 and 1000."
  }
}

# ---------------------------------------------------------------- cluster

variable "coordinator_count" {
  description = "Number of coordinator nodes. 1 (the default) is today's single coordinator with its SQLite database and nothing else. 2 or more is cluster mode: accounts in an RDS PostgreSQL instance, presence and signaling over a NATS JetStream cluster running on the coordinator nodes, one shared certificate. Use 3 (or another odd number): NATS JetStream needs a majority of the nodes up, so 2 nodes tolerate no failure."
  type        = number
  default     = 1

  validation {
    condition     = var.coordinator_count >= 1 && var.coordinator_count <= 9 && floor(var.coordinator_count) == var.coordinator_count
    error_message = "coordinator_count must be a whole number from 1 to 9."
  }
}

variable "coordinator_private_ip_host_offset" {
  description = "Cluster mode: node i gets the fixed private address cidrhost(<public subnet>, offset + i), so that each node's NATS routes name the others at first boot. With existing_subnet_id, pick an offset whose addresses are free in that subnet. Ignored with one coordinator (its address is assigned by AWS, as before)."
  type        = number
  default     = 10

  validation {
    condition     = var.coordinator_private_ip_host_offset >= 4 && var.coordinator_private_ip_host_offset <= 240 && floor(var.coordinator_private_ip_host_offset) == var.coordinator_private_ip_host_offset
    error_message = "coordinator_private_ip_host_offset must be a whole number from 4 (AWS reserves .0 to .3) to 240."
  }
}

variable "private_subnet_cidrs" {
  description = "Cluster mode with a created VPC: CIDRs of the two private subnets (no route to the internet) created for the database, in the region's first two availability zones (an RDS subnet group spans at least two). Inside vpc_cidr, apart from public_subnet_cidr."
  type        = list(string)
  default     = ["10.42.101.0/24", "10.42.102.0/24"]

  validation {
    condition     = length(var.private_subnet_cidrs) == 2 && alltrue([for c in var.private_subnet_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "private_subnet_cidrs must be two IPv4 CIDR blocks."
  }
}

variable "existing_private_subnet_ids" {
  description = "Cluster mode with existing_subnet_id: IDs of at least two private subnets of the same VPC, in different availability zones, for the database's subnet group. Ignored with one coordinator or a created VPC."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.existing_private_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "existing_private_subnet_ids must be subnet ids such as subnet-0123456789abcdef0."
  }

  validation {
    condition     = var.coordinator_count == 1 || var.existing_subnet_id == null || length(var.existing_private_subnet_ids) >= 2
    error_message = "a cluster (coordinator_count > 1) in an existing subnet needs existing_private_subnet_ids: two or more private subnets in different availability zones for the database."
  }
}

variable "nats_server_binary_path" {
  description = "Cluster mode: path of the nats-server executable (a release from github.com/nats-io/nats-server, for architecture; check its SHA-256 against the release's SHA256SUMS). Uploaded to the artifact bucket and fetched by every coordinator node, like the coordinator binary. Not read with one coordinator."
  type        = string
  default     = "../../target/nats-server/nats-server"

  validation {
    condition     = var.coordinator_count == 1 || fileexists(pathexpand(var.nats_server_binary_path))
    error_message = "nats_server_binary_path does not name a file: a cluster needs the nats-server binary (README, 'A cluster of coordinators')."
  }
}

variable "nats_cluster_port" {
  description = "Cluster mode: TCP port of the NATS cluster routes between coordinator nodes (open only from the coordinators' own security group). The NATS client port 4222 listens on 127.0.0.1 only."
  type        = number
  default     = 6222

  validation {
    condition     = var.nats_cluster_port >= 1024 && var.nats_cluster_port <= 65535 && var.nats_cluster_port != 4222 && floor(var.nats_cluster_port) == var.nats_cluster_port
    error_message = "nats_cluster_port must be a whole number from 1024 to 65535, other than the client port 4222."
  }
}

variable "database_instance_class" {
  description = "Cluster mode: RDS instance class of the PostgreSQL database (db.t4g.micro: 2 vCPU burstable, 1 GiB)."
  type        = string
  default     = "db.t4g.micro"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.database_instance_class))
    error_message = "database_instance_class must look like db.t4g.micro."
  }
}

variable "database_engine_version" {
  description = "Cluster mode: PostgreSQL major version (RDS picks the latest minor version and applies minor upgrades in the maintenance window)."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[3-9]$", var.database_engine_version))
    error_message = "database_engine_version must be a PostgreSQL major version from 13 to 19, e.g. 16."
  }
}

variable "database_allocated_storage_gb" {
  description = "Cluster mode: storage of the database in GiB (gp3, encrypted); RDS grows it up to 5 times this when it fills."
  type        = number
  default     = 20

  validation {
    condition     = var.database_allocated_storage_gb >= 20 && var.database_allocated_storage_gb <= 10000
    error_message = "database_allocated_storage_gb must be between 20 (the gp3 minimum) and 10000."
  }
}

variable "database_multi_az" {
  description = "Cluster mode: run the database as Multi-AZ (a standby in the second private subnet's zone, failover in 1-2 minutes; twice the cost). Without it a failed database instance stops logins until RDS replaces it."
  type        = bool
  default     = false
}

variable "database_backup_retention_days" {
  description = "Cluster mode: days RDS keeps automated backups (point-in-time restore). 0 would turn backups off and is refused."
  type        = number
  default     = 7

  validation {
    condition     = var.database_backup_retention_days >= 1 && var.database_backup_retention_days <= 35
    error_message = "database_backup_retention_days must be between 1 and 35."
  }
}

variable "database_deletion_protection" {
  description = "Cluster mode: RDS deletion protection. While true, `terraform destroy` (or going back to one coordinator) fails at the database: set it to false and apply first."
  type        = bool
  default     = true
}

variable "database_skip_final_snapshot" {
  description = "Cluster mode: delete the database without a final snapshot. false (the default) keeps a snapshot named <name>-accounts-final when the database is deleted."
  type        = bool
  default     = false
}

variable "database_require_tls" {
  description = "Cluster mode: the database refuses connections without TLS (rds.force_ssl = 1) and the coordinators connect with sslmode=verify-full, checking the database's certificate and name against the RDS CA bundle (database_ca_bundle_url, downloaded by each node before each start). false: no TLS at all; the traffic then stays inside the VPC, between the coordinators' and the database's security groups, unencrypted."
  type        = bool
  default     = true
}

variable "database_ca_bundle_url" {
  description = "Cluster mode with database_require_tls: HTTPS URL of the PEM bundle of the CAs that sign RDS certificates, downloaded by each coordinator node (with retries) to /etc/p2pchat/rds-ca.pem before each start; the coordinator does not start until it has one. The default is AWS's bundle for every commercial region; GovCloud and China regions publish their own."
  type        = string
  default     = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"

  validation {
    condition     = can(regex("^https://[A-Za-z0-9._~:/%+=,@-]+$", var.database_ca_bundle_url))
    error_message = "database_ca_bundle_url must be an https:// URL of letters, digits and . _ ~ : / % + = , @ - only (it goes unquoted into a shell-sourced file)."
  }
}

variable "database_password_version" {
  description = "Cluster mode: change this number to rotate the database password: a new random password is generated and sent, in the same apply, to RDS and to its SSM parameter (write-only arguments); then restart the coordinators."
  type        = number
  default     = 1

  validation {
    condition     = var.database_password_version >= 1 && floor(var.database_password_version) == var.database_password_version
    error_message = "database_password_version must be a whole number from 1."
  }
}

variable "dns_zone_id" {
  description = "Route 53 hosted zone id in which to create dns_name: one A record holding every coordinator's Elastic IP. null = no DNS record (peers get the list of addresses)."
  type        = string
  default     = null

  validation {
    condition     = var.dns_zone_id == null || can(regex("^Z[A-Z0-9]{1,31}$", var.dns_zone_id))
    error_message = "dns_zone_id must be null or a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ."
  }
}

variable "dns_name" {
  description = "The DNS name peers use for the coordinators (e.g. chat.example.com), in dns_zone_id; the coordinator certificate must name it (p2pchat-certs --dns). Set both or neither."
  type        = string
  default     = null

  validation {
    condition     = (var.dns_name == null) == (var.dns_zone_id == null)
    error_message = "set both dns_zone_id and dns_name, or neither."
  }

  validation {
    condition     = var.dns_name == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", coalesce(var.dns_name, "x.invalid")))
    error_message = "dns_name must be a lower-case DNS name such as chat.example.com."
  }
}
