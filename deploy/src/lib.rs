//! Static checks of the p2pchat Terraform deployment in `deploy/terraform`.
//!
//! The checks run offline, with no AWS account and no provider download: they
//! parse the `.tf` files with [`hcl`] and look at the configuration as written.
//! Each check is a function that takes a parsed [`hcl::Body`] (all `.tf` files
//! of the directory merged, see [`load_dir`]) and returns the [`Violation`]s it
//! found; an empty list means the rule holds.
//!
//! Expressions are compared through their HCL text (`var.peer_port`,
//! `aws_security_group.client.id`, `toset(var.user_ssh_cidrs)`), and
//! numeric ports given as `var.NAME` are resolved through the variable's
//! default. What the checks cannot see (values computed by AWS, the rendered
//! user data) is checked by `deploy/terraform/check.sh` or not at all; the
//! README of the deployment says which.

use std::fmt;
use std::path::{Path, PathBuf};

use hcl::{Block, Body, Expression};

/// The rules the deployment must keep. Each [`Violation`] names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The coordinator's security group admits QUIC: UDP on the coordinator
    /// port, and never TCP on that port.
    CoordinatorQuicIngress,
    /// The client security group admits UDP on the peer port from the client
    /// security group itself and from a variable's CIDR list.
    PeerPortIngress,
    /// SSH (TCP 22) is admitted to each security group only from that
    /// group's own CIDR variables: the coordinator from the operator's, the
    /// clients from the users' (and the operator's). No chat user's address
    /// reaches the coordinator's SSH.
    SshAccessSeparated,
    /// No ingress rule has a literal world-open source (`0.0.0.0/0`, `::/0`).
    NoLiteralOpenIngress,
    /// Every instance and launch template requires IMDSv2 tokens.
    Imdsv2Required,
    /// Every root, EBS block device and EBS volume is encrypted.
    EncryptedVolumes,
    /// No user data carries or reads private key material.
    NoKeysInUserData,
    /// Nothing but a variable guard mentions the CA's private key.
    CaKeyNeverReferenced,
    /// Every variable has a non-empty description and a type.
    VariablesDocumented,
    /// Every taggable resource is tagged: provider `default_tags`, else its
    /// own `tags`.
    TagsEverywhere,
    /// Every taggable resource (but S3 objects) has a `Name` tag.
    NameTags,
    /// Chat users log in to client instances with their own Unix accounts
    /// (no shared `ec2-user`, no sudo), each with their own data folder.
    PerUserAccounts,
    /// The service account has a fixed UID and its data volume is chowned
    /// recursively, so a replaced instance can read the volume it mounts.
    StableServiceOwner,
    /// An instance whose user data changes is replaced (cloud-init runs only
    /// at an instance's first boot, so a changed user data would never run).
    BootConfigApplied,
    /// No ingress rule depends on an instance's auto-assigned public IP,
    /// which changes when the instance is stopped and started.
    NoEphemeralIpRules,
    /// A map variable merged into the default tags is bounded so that S3
    /// objects (10 tags at most) still take the default tags and a `Name`.
    ExtraTagsBounded,
    /// Downloads at boot are retried, and the units that run them keep
    /// retrying instead of giving up.
    FetchRetries,
    /// The data volume is set up by a systemd unit that retries (at every
    /// boot, and until the volume appears), not by run-once user data.
    DataVolumeUnit,
    /// `.terraform.lock.hcl` is committed (not ignored) and pins every
    /// required provider to a version inside its constraint.
    ProviderLockCommitted,
    /// The coordinator's metrics reach CloudWatch: it serves them on
    /// loopback only (the endpoint has no authentication), the CloudWatch
    /// agent's scrape configuration targets that same address, the user
    /// data names the log group they go to, and that group's retention is
    /// finite.
    MetricsShipped,
    /// An alarm fires when the coordinator is down or unready: it watches
    /// the readiness metric the instance reports from `/readyz`, fires below
    /// 1, treats missing data as breaching (a dead instance reports nothing)
    /// and notifies the actions a variable names.
    ReadinessAlarm,
    /// The coordinator's data volume is snapshotted at least daily by a Data
    /// Lifecycle Manager policy that targets tags the volume has and keeps
    /// as many snapshots as a variable says.
    DataVolumeSnapshots,
    /// One coordinator is the default and creates nothing of the cluster: a
    /// `coordinator_count` variable defaults to 1, `local.cluster` is
    /// `coordinator_count > 1`, every cluster-only resource (database,
    /// password, NATS rule or binary) is counted on `local.cluster`, and the
    /// coordinator's user data gets its cluster part only in cluster mode
    /// (`""` otherwise), so a single coordinator's user data is unchanged.
    SingleNodeDefault,
    /// The cluster's accounts database is encrypted at rest, not publicly
    /// accessible, in a subnet group of private subnets, behind its own
    /// security group, backed up, protected from deletion by a variable, and
    /// given no plain `password` argument.
    DatabasePrivate,
    /// The cluster's ports are open between the cluster's own machines only:
    /// the NATS route port from the coordinator security group itself, the
    /// NATS client port 4222 not at all (loopback), PostgreSQL only from the
    /// coordinator security group. No CIDR source on any of them.
    ClusterPortsInternal,
    /// The database password is generated by Terraform and goes only to RDS
    /// and to an SSM SecureString parameter, both through write-only
    /// arguments: no output, user data, local or other resource refers to
    /// it, and no user-data template takes a password placeholder (the
    /// instances read the parameter at start).
    DatabasePasswordInSsmOnly,
    /// NATS runs on every coordinator node: JetStream with its store on the
    /// data volume, clients on 127.0.0.1:4222 only, a named cluster with
    /// routes, a unit that retries and starts before the coordinator, and a
    /// coordinator drop-in that wants it and passes `--nats`, `--node` and
    /// `--database` through environment files.
    NatsOnTheNodes,
    /// The cluster's database connection is TLS that checks the server:
    /// `database_require_tls` defaults to true and drives both
    /// `rds.force_ssl` and the coordinators' `sslmode=verify-full`, whose
    /// `sslrootcert` is the RDS CA bundle that the node's fetch step
    /// downloads (retried, checked to hold a PEM certificate) before each
    /// start. `sslmode=require` alone would encrypt without checking who
    /// answers.
    DatabaseTlsVerified,
}

/// One place where the configuration breaks a [`Rule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule that is broken.
    pub rule: Rule,
    /// Where: a block address such as `aws_instance.client` or `variable.region`.
    pub location: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {}: {}", self.rule, self.location, self.message)
    }
}

fn violation(rule: Rule, location: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation {
        rule,
        location: location.into(),
        message: message.into(),
    }
}

/// Why a Terraform directory could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// A directory or file could not be read.
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.tf` file is not valid HCL.
    Parse {
        /// The file that failed.
        path: PathBuf,
        /// The parser's error.
        source: hcl::Error,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => write!(f, "reading {}: {source}", path.display()),
            LoadError::Parse { path, source } => write!(f, "parsing {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Parse { source, .. } => Some(source),
        }
    }
}

/// Returns the `.tf` files directly in `dir` (Terraform does not recurse),
/// sorted by name.
pub fn tf_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "tf") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every `.tf` file in `dir` and merges them into one body, the way
/// Terraform sees one module.
pub fn load_dir(dir: &Path) -> Result<Body, LoadError> {
    let mut structures = Vec::new();
    for path in tf_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let body = hcl::parse(&text).map_err(|source| LoadError::Parse {
            path: path.clone(),
            source,
        })?;
        structures.extend(body.into_inner());
    }
    Ok(Body(structures))
}

// ------------------------------------------------------------------ helpers

/// The HCL text of an expression (empty if it cannot be formatted).
pub fn expr_text(expr: &Expression) -> String {
    hcl::format::to_string(expr).unwrap_or_default()
}

fn block_text(block: &Block) -> String {
    hcl::format::to_string(block).unwrap_or_default()
}

fn label(block: &Block, i: usize) -> &str {
    block.labels().get(i).map(|l| l.as_str()).unwrap_or("")
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn attr_text(body: &Body, key: &str) -> Option<String> {
    attr(body, key).map(expr_text)
}

fn sub_blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

/// `resource` blocks as (type, name, body).
fn resources(body: &Body) -> impl Iterator<Item = (&str, &str, &Body)> {
    sub_blocks(body, "resource").map(|b| (label(b, 0), label(b, 1), b.body()))
}

/// The `default` of `variable "NAME"`, if it has one.
pub fn variable_default(body: &Body, name: &str) -> Option<Expression> {
    sub_blocks(body, "variable")
        .find(|b| label(b, 0) == name)
        .and_then(|b| attr(b.body(), "default").cloned())
}

/// Resolves a port expression's text to a number: a literal, or `var.NAME`
/// with a numeric default.
fn resolve_port(body: &Body, text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let name = text.strip_prefix("var.")?;
    match variable_default(body, name)? {
        Expression::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// True if `text` references `prefix.name` as a whole identifier (so that
/// `var.a` does not match `var.ab`).
fn references(text: &str, prefix: &str, name: &str) -> bool {
    let needle = format!("{prefix}.{name}");
    text.match_indices(&needle).any(|(i, _)| {
        let before_ok = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        let after_ok = text[i + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        before_ok && after_ok
    })
}

// ------------------------------------------------------------------ ingress

/// Transport protocol of a security group rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (`tcp` or `6`).
    Tcp,
    /// UDP (`udp` or `17`).
    Udp,
    /// Every protocol (`-1` or `all`); ports are ignored.
    All,
    /// Anything else (ICMP, a number, an expression).
    Other,
}

/// One ingress rule, whichever way it is written: an `ingress` block in
/// `aws_security_group`, an `aws_security_group_rule` of type `ingress`, or an
/// `aws_vpc_security_group_ingress_rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    /// Address of the block that declares it.
    pub location: String,
    /// The security group it belongs to, e.g. `aws_security_group.client`.
    pub security_group: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// First port, resolved through variable defaults when possible.
    pub from_port: Option<i64>,
    /// Last port, resolved through variable defaults when possible.
    pub to_port: Option<i64>,
    /// Source expressions as text: CIDR lists or variables (a `for_each` over
    /// a collection is substituted for `each.value`), or security groups as
    /// `aws_security_group.NAME`.
    pub sources: Vec<String>,
}

impl IngressRule {
    /// True if the rule admits `protocol` on `port`.
    pub fn admits(&self, protocol: Protocol, port: i64) -> bool {
        match self.protocol {
            Protocol::All => true,
            p if p == protocol => match (self.from_port, self.to_port) {
                (Some(from), Some(to)) => from <= port && port <= to,
                // An unresolvable range may include the port.
                _ => true,
            },
            _ => false,
        }
    }
}

fn protocol_of(text: Option<String>) -> Protocol {
    let text = text.unwrap_or_default();
    match text.trim().trim_matches('"').to_ascii_lowercase().as_str() {
        "tcp" | "6" => Protocol::Tcp,
        "udp" | "17" => Protocol::Udp,
        "-1" | "all" => Protocol::All,
        _ => Protocol::Other,
    }
}

/// `aws_security_group.x.id` -> `aws_security_group.x`.
fn group_ref(text: &str) -> String {
    text.trim()
        .strip_suffix(".id")
        .unwrap_or(text.trim())
        .to_string()
}

fn port_of(body: &Body, rule: &Body, key: &str) -> Option<i64> {
    attr_text(rule, key).and_then(|t| resolve_port(body, &t))
}

/// Collects every ingress rule of the configuration.
pub fn ingress_rules(body: &Body) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for (ty, name, res) in resources(body) {
        let location = format!("{ty}.{name}");
        let for_each = attr_text(res, "for_each");
        let expand = |t: String| match &for_each {
            Some(fe) if t.contains("each.value") || t.contains("each.key") => fe.clone(),
            _ => t,
        };
        match ty {
            "aws_security_group" => {
                for ing in sub_blocks(res, "ingress") {
                    let b = ing.body();
                    let mut sources: Vec<String> =
                        ["cidr_blocks", "ipv6_cidr_blocks", "prefix_list_ids"]
                            .iter()
                            .filter_map(|k| attr_text(b, k))
                            .collect();
                    if let Some(groups) = attr(b, "security_groups") {
                        match groups {
                            Expression::Array(items) => {
                                sources.extend(items.iter().map(|e| group_ref(&expr_text(e))))
                            }
                            other => sources.push(expr_text(other)),
                        }
                    }
                    if matches!(attr(b, "self"), Some(Expression::Bool(true))) {
                        sources.push(format!("aws_security_group.{name}"));
                    }
                    rules.push(IngressRule {
                        location: location.clone(),
                        security_group: format!("aws_security_group.{name}"),
                        protocol: protocol_of(attr_text(b, "protocol")),
                        from_port: port_of(body, b, "from_port"),
                        to_port: port_of(body, b, "to_port"),
                        sources,
                    });
                }
            }
            "aws_security_group_rule" => {
                let kind = attr_text(res, "type").unwrap_or_default();
                if kind.trim_matches('"') != "ingress" {
                    continue;
                }
                let group = group_ref(&attr_text(res, "security_group_id").unwrap_or_default());
                let mut sources: Vec<String> =
                    ["cidr_blocks", "ipv6_cidr_blocks", "prefix_list_ids"]
                        .iter()
                        .filter_map(|k| attr_text(res, k))
                        .map(&expand)
                        .collect();
                if let Some(src) = attr_text(res, "source_security_group_id") {
                    sources.push(group_ref(&src));
                }
                if matches!(attr(res, "self"), Some(Expression::Bool(true))) {
                    sources.push(group.clone());
                }
                rules.push(IngressRule {
                    location,
                    security_group: group,
                    protocol: protocol_of(attr_text(res, "protocol")),
                    from_port: port_of(body, res, "from_port"),
                    to_port: port_of(body, res, "to_port"),
                    sources,
                });
            }
            "aws_vpc_security_group_ingress_rule" => {
                let mut sources: Vec<String> = ["cidr_ipv4", "cidr_ipv6", "prefix_list_id"]
                    .iter()
                    .filter_map(|k| attr_text(res, k))
                    .map(&expand)
                    .collect();
                if let Some(src) = attr_text(res, "referenced_security_group_id") {
                    sources.push(group_ref(&src));
                }
                rules.push(IngressRule {
                    location,
                    security_group: group_ref(
                        &attr_text(res, "security_group_id").unwrap_or_default(),
                    ),
                    protocol: protocol_of(attr_text(res, "ip_protocol")),
                    from_port: port_of(body, res, "from_port"),
                    to_port: port_of(body, res, "to_port"),
                    sources,
                });
            }
            _ => {}
        }
    }
    rules
}

/// Rule [`Rule::CoordinatorQuicIngress`]: some ingress rule of
/// `coordinator_sg` (e.g. `aws_security_group.coordinator`) admits UDP on
/// `port`, and none admits TCP on `port` (QUIC is UDP; a TCP rule is a mistake
/// that opens a port nobody listens on).
pub fn check_coordinator_quic_ingress(
    body: &Body,
    coordinator_sg: &str,
    port: i64,
) -> Vec<Violation> {
    let rules = ingress_rules(body);
    let mut out = Vec::new();
    let on_sg: Vec<&IngressRule> = rules
        .iter()
        .filter(|r| r.security_group == coordinator_sg)
        .collect();
    if !on_sg
        .iter()
        .any(|r| r.protocol == Protocol::Udp && r.admits(Protocol::Udp, port))
    {
        out.push(violation(
            Rule::CoordinatorQuicIngress,
            coordinator_sg,
            format!("no ingress rule admits UDP {port} (QUIC) to the coordinator"),
        ));
    }
    for r in on_sg {
        if r.protocol == Protocol::Tcp && r.admits(Protocol::Tcp, port) {
            out.push(violation(
                Rule::CoordinatorQuicIngress,
                &r.location,
                format!("admits TCP {port}: QUIC is UDP"),
            ));
        }
    }
    out
}

/// Rule [`Rule::PeerPortIngress`]: the client group `client_sg` admits UDP on
/// `port` from `client_sg` itself (client instances talk to each other) and
/// from a variable's CIDR list (`var.…`), so that the operator decides who
/// else may reach the peers.
pub fn check_peer_port_ingress(body: &Body, client_sg: &str, port: i64) -> Vec<Violation> {
    let rules = ingress_rules(body);
    let udp: Vec<&IngressRule> = rules
        .iter()
        .filter(|r| {
            r.security_group == client_sg
                && r.protocol == Protocol::Udp
                && r.admits(Protocol::Udp, port)
        })
        .collect();
    let mut out = Vec::new();
    if !udp.iter().any(|r| r.sources.iter().any(|s| s == client_sg)) {
        out.push(violation(
            Rule::PeerPortIngress,
            client_sg,
            format!("no rule admits UDP {port} from the client security group itself"),
        ));
    }
    if !udp
        .iter()
        .any(|r| r.sources.iter().any(|s| s.contains("var.")))
    {
        out.push(violation(
            Rule::PeerPortIngress,
            client_sg,
            format!("no rule admits UDP {port} from a variable's CIDR list"),
        ));
    }
    out
}

/// The `var.NAME` references in `text`.
pub fn variable_refs(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in text.match_indices("var.") {
        let before_ok = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        if !before_ok {
            continue;
        }
        let name: String = text[i + 4..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Rule [`Rule::SshAccessSeparated`]: every ingress rule that admits TCP 22
/// (a TCP range that contains 22 or an all-protocol rule) belongs to one of
/// the groups in `allowed` and has as sources only references to that
/// group's variables (`(group, [variable, …])`); and every group in `allowed`
/// has a rule for SSH (possibly over an empty list). So the operator's
/// coordinator is reachable by SSH only from the operator's CIDRs, never from
/// the chat users' addresses.
pub fn check_ssh_access(body: &Body, allowed: &[(&str, &[&str])]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for r in ingress_rules(body) {
        if !r.admits(Protocol::Tcp, 22) {
            continue;
        }
        let Some((group, vars)) = allowed.iter().find(|(g, _)| *g == r.security_group) else {
            out.push(violation(
                Rule::SshAccessSeparated,
                &r.location,
                format!("admits TCP 22 to {}, which takes no SSH", r.security_group),
            ));
            continue;
        };
        seen.push(group);
        for s in &r.sources {
            let refs = variable_refs(s);
            if refs.is_empty() || refs.iter().any(|v| !vars.contains(&v.as_str())) {
                out.push(violation(
                    Rule::SshAccessSeparated,
                    &r.location,
                    format!(
                        "admits TCP 22 to {group} from `{s}`; only from {}",
                        vars.iter()
                            .map(|v| format!("var.{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    for (group, _) in allowed {
        if !seen.contains(group) {
            out.push(violation(
                Rule::SshAccessSeparated,
                *group,
                "no ingress rule admits SSH from its variable",
            ));
        }
    }
    out
}

/// Rule [`Rule::NoLiteralOpenIngress`]: no ingress source is a literal
/// `0.0.0.0/0` or `::/0`. Opening a port to the world is the operator's choice,
/// made through a variable; egress rules and routes are not ingress.
pub fn check_no_literal_open_ingress(body: &Body) -> Vec<Violation> {
    ingress_rules(body)
        .into_iter()
        .flat_map(|r| {
            r.sources
                .iter()
                .filter(|s| s.contains("0.0.0.0/0") || s.contains("::/0"))
                .map(|s| {
                    violation(
                        Rule::NoLiteralOpenIngress,
                        &r.location,
                        format!("ingress from the literal `{s}`; use a variable"),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

// ------------------------------------------------------------------ instances

fn instances(body: &Body) -> impl Iterator<Item = (&str, &str, &Body)> {
    resources(body).filter(|(ty, _, _)| *ty == "aws_instance" || *ty == "aws_launch_template")
}

/// Rule [`Rule::Imdsv2Required`]: every `aws_instance` and
/// `aws_launch_template` has a `metadata_options` block with
/// `http_tokens = "required"` (IMDSv1 lets a server-side request forgery read
/// the instance role's credentials).
pub fn check_imdsv2_required(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for (ty, name, res) in instances(body) {
        let required = sub_blocks(res, "metadata_options").any(|m| {
            matches!(attr(m.body(), "http_tokens"), Some(Expression::String(s)) if s == "required")
        });
        if !required {
            out.push(violation(
                Rule::Imdsv2Required,
                format!("{ty}.{name}"),
                "metadata_options.http_tokens is not \"required\"",
            ));
        }
    }
    out
}

fn is_true(expr: Option<&Expression>) -> bool {
    match expr {
        Some(Expression::Bool(b)) => *b,
        Some(Expression::String(s)) => s == "true",
        _ => false,
    }
}

/// Rule [`Rule::EncryptedVolumes`]: every `aws_instance` declares a
/// `root_block_device` (else the root volume's encryption is left to the
/// account default) and every `root_block_device`, `ebs_block_device`, launch
/// template `block_device_mappings.ebs` and `aws_ebs_volume` has
/// `encrypted = true`.
pub fn check_encrypted_volumes(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for (ty, name, res) in resources(body) {
        let location = format!("{ty}.{name}");
        let mut devices: Vec<(&str, &Body)> = Vec::new();
        match ty {
            "aws_instance" => {
                if sub_blocks(res, "root_block_device").next().is_none() {
                    out.push(violation(
                        Rule::EncryptedVolumes,
                        &location,
                        "no root_block_device block, so the root volume is not declared encrypted",
                    ));
                }
                for kind in ["root_block_device", "ebs_block_device"] {
                    devices.extend(sub_blocks(res, kind).map(|b| (kind, b.body())));
                }
            }
            "aws_launch_template" => {
                for mapping in sub_blocks(res, "block_device_mappings") {
                    devices.extend(
                        sub_blocks(mapping.body(), "ebs")
                            .map(|b| ("block_device_mappings.ebs", b.body())),
                    );
                }
            }
            "aws_ebs_volume" => devices.push(("volume", res)),
            _ => {}
        }
        for (kind, dev) in devices {
            if !is_true(attr(dev, "encrypted")) {
                out.push(violation(
                    Rule::EncryptedVolumes,
                    &location,
                    format!("{kind} is not encrypted = true"),
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ keys

const FILE_FUNCTIONS: &[&str] = &[
    "file",
    "filebase64",
    "templatefile",
    "filesha256",
    "filesha512",
    "filemd5",
    "filebase64sha256",
    "filebase64sha512",
];

/// True if a path expression's text names key material: a `.key` or `.pem`
/// key file or a `*key_path` variable.
fn is_key_path(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains(".key") || t.contains("key_path") || t.contains("_key.pem") || t.contains("-key.pem")
}

/// Calls of file-reading functions inside `expr` whose first argument names a
/// key file.
fn key_file_reads(expr: &Expression, found: &mut Vec<String>) {
    match expr {
        Expression::FuncCall(call) => {
            let fname = call.name.name.as_str();
            if FILE_FUNCTIONS.contains(&fname) {
                if let Some(first) = call.args.first() {
                    let path = expr_text(first);
                    if is_key_path(&path) {
                        found.push(format!("{fname}({path})"));
                    }
                }
            }
            for a in &call.args {
                key_file_reads(a, found);
            }
        }
        Expression::Array(items) => items.iter().for_each(|e| key_file_reads(e, found)),
        Expression::Object(obj) => obj.values().for_each(|e| key_file_reads(e, found)),
        Expression::Parenthesis(e) => key_file_reads(e, found),
        Expression::Conditional(c) => {
            key_file_reads(&c.cond_expr, found);
            key_file_reads(&c.true_expr, found);
            key_file_reads(&c.false_expr, found);
        }
        // Anything else (templates, for expressions, operations): fall back to
        // the text, which catches `file("x.key")` written anywhere.
        other => {
            let text = expr_text(other);
            for f in FILE_FUNCTIONS {
                if text.contains(&format!("{f}(")) && is_key_path(&text) {
                    found.push(text.clone());
                    break;
                }
            }
        }
    }
}

/// Names (`var.X`, `local.Y`) whose value is key material: variables whose
/// name ends in `key_path` or contains `private_key`, and locals that read a
/// key file or refer to such a name (followed through any chain of locals).
pub fn key_material_names(body: &Body) -> Vec<String> {
    let mut names: Vec<String> = sub_blocks(body, "variable")
        .map(|b| label(b, 0))
        .filter(|n| n.ends_with("key_path") || n.contains("private_key"))
        .map(|n| format!("var.{n}"))
        .collect();
    let locals: Vec<(String, &Expression)> = sub_blocks(body, "locals")
        .flat_map(|b| {
            b.body()
                .attributes()
                .map(|a| (a.key().to_string(), a.expr()))
        })
        .collect();
    loop {
        let before = names.len();
        for (name, expr) in &locals {
            let full = format!("local.{name}");
            if names.contains(&full) {
                continue;
            }
            let text = expr_text(expr);
            let mut reads = Vec::new();
            key_file_reads(expr, &mut reads);
            let tainted = !reads.is_empty()
                || names.iter().any(|n| {
                    let (prefix, rest) = n.split_once('.').unwrap_or(("", n));
                    references(&text, prefix, rest)
                });
            if tainted {
                names.push(full);
            }
        }
        if names.len() == before {
            return names;
        }
    }
}

/// Rule [`Rule::NoKeysInUserData`]: the `user_data` / `user_data_base64` of
/// every instance and launch template contains no `PRIVATE KEY` text, calls no
/// file function on a key path, refers to no key-material name (see
/// [`key_material_names`]) and reads no SSM parameter's value.
pub fn check_no_keys_in_user_data(body: &Body) -> Vec<Violation> {
    let tainted = key_material_names(body);
    let mut out = Vec::new();
    for (ty, name, res) in instances(body) {
        for key in ["user_data", "user_data_base64"] {
            let Some(expr) = attr(res, key) else { continue };
            let location = format!("{ty}.{name}.{key}");
            let text = expr_text(expr);
            if text.contains("PRIVATE KEY") {
                out.push(violation(
                    Rule::NoKeysInUserData,
                    &location,
                    "contains PRIVATE KEY text",
                ));
            }
            let mut reads = Vec::new();
            key_file_reads(expr, &mut reads);
            for r in reads {
                out.push(violation(
                    Rule::NoKeysInUserData,
                    &location,
                    format!("reads a key file: {r}"),
                ));
            }
            for n in &tainted {
                let (prefix, rest) = n.split_once('.').unwrap_or(("", n));
                if references(&text, prefix, rest) {
                    out.push(violation(
                        Rule::NoKeysInUserData,
                        &location,
                        format!("refers to key material {n}"),
                    ));
                }
            }
            if text.contains("aws_ssm_parameter.") && text.contains(".value") {
                out.push(violation(
                    Rule::NoKeysInUserData,
                    &location,
                    "embeds an SSM parameter's value; fetch it on the instance instead",
                ));
            }
        }
    }
    out
}

/// Checks the text of a user-data template file: rule
/// [`Rule::NoKeysInUserData`] for what Terraform does not see until it
/// renders (`PRIVATE KEY` text in the template).
pub fn check_user_data_template(name: &str, text: &str) -> Vec<Violation> {
    if text.contains("PRIVATE KEY") {
        vec![violation(
            Rule::NoKeysInUserData,
            name,
            "the template contains PRIVATE KEY text",
        )]
    } else {
        Vec::new()
    }
}

/// Rule [`Rule::CaKeyNeverReferenced`]: the CA's private key stays on the
/// operator's machine. No variable is named for it (`*ca_key*`) or defaults to
/// a `ca.key` path, and no other block (resource, data, locals, output,
/// module, provider) mentions `ca.key` or `ca_key`. A variable's validation
/// may name `ca.key` to refuse it.
pub fn check_ca_key_never_referenced(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for block in body.blocks() {
        let ident = block.identifier();
        let address = std::iter::once(ident)
            .chain(block.labels().iter().map(|l| l.as_str()))
            .collect::<Vec<_>>()
            .join(".");
        if ident == "variable" {
            let name = label(block, 0).to_ascii_lowercase();
            let default = attr_text(block.body(), "default").unwrap_or_default();
            if name.contains("ca_key") || default.contains("ca.key") {
                out.push(violation(
                    Rule::CaKeyNeverReferenced,
                    &address,
                    "a variable for the CA's private key: it must never reach Terraform",
                ));
            }
            continue;
        }
        let text = block_text(block).to_ascii_lowercase();
        if text.contains("ca.key") || text.contains("ca_key") {
            out.push(violation(
                Rule::CaKeyNeverReferenced,
                &address,
                "mentions the CA's private key",
            ));
        }
    }
    out
}

// ------------------------------------------------------------------ variables

/// Rule [`Rule::VariablesDocumented`]: every `variable` block has a
/// `description` that is a non-empty string and a `type`.
pub fn check_variables_documented(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for v in sub_blocks(body, "variable") {
        let location = format!("variable.{}", label(v, 0));
        match attr(v.body(), "description") {
            Some(Expression::String(s)) if !s.trim().is_empty() => {}
            _ => out.push(violation(
                Rule::VariablesDocumented,
                &location,
                "no non-empty description",
            )),
        }
        if attr(v.body(), "type").is_none() {
            out.push(violation(Rule::VariablesDocumented, &location, "no type"));
        }
    }
    out
}

// ------------------------------------------------------------------ tags

/// Resource types of the AWS provider that take `tags`.
pub const TAGGABLE: &[&str] = &[
    "aws_cloudwatch_log_group",
    "aws_cloudwatch_metric_alarm",
    "aws_db_instance",
    "aws_db_parameter_group",
    "aws_db_subnet_group",
    "aws_default_security_group",
    "aws_dlm_lifecycle_policy",
    "aws_ebs_volume",
    "aws_eip",
    "aws_iam_instance_profile",
    "aws_iam_role",
    "aws_instance",
    "aws_internet_gateway",
    "aws_kms_key",
    "aws_launch_template",
    "aws_route_table",
    "aws_s3_bucket",
    "aws_s3_object",
    "aws_security_group",
    "aws_ssm_parameter",
    "aws_subnet",
    "aws_vpc",
    "aws_vpc_security_group_egress_rule",
    "aws_vpc_security_group_ingress_rule",
];

/// Resource types that take no `tags` (so the tag rules skip them).
pub const UNTAGGABLE: &[&str] = &[
    "aws_eip_association",
    "aws_iam_role_policy",
    "aws_iam_role_policy_attachment",
    "aws_route",
    "aws_route53_record",
    "aws_route_table_association",
    "aws_s3_bucket_ownership_controls",
    "aws_s3_bucket_policy",
    "aws_s3_bucket_public_access_block",
    "aws_s3_bucket_server_side_encryption_configuration",
    "aws_s3_bucket_versioning",
    "aws_security_group_rule",
    "aws_volume_attachment",
    "random_password",
    "terraform_data",
];

/// True if the `aws` provider sets a non-empty `default_tags.tags`.
pub fn has_default_tags(body: &Body) -> bool {
    sub_blocks(body, "provider")
        .filter(|p| label(p, 0) == "aws")
        .any(|p| {
            sub_blocks(p.body(), "default_tags").any(|d| match attr(d.body(), "tags") {
                Some(Expression::Object(o)) => !o.is_empty(),
                Some(Expression::Null) | None => false,
                // A reference (e.g. local.common_tags) counts as set.
                Some(_) => true,
            })
        })
}

/// Rule [`Rule::TagsEverywhere`]: either the `aws` provider sets a non-empty
/// `default_tags`, or every resource of a [`TAGGABLE`] type sets `tags`.
/// A resource type in neither [`TAGGABLE`] nor [`UNTAGGABLE`] is reported too,
/// so that a new kind of resource gets a decision.
pub fn check_tags_everywhere(body: &Body) -> Vec<Violation> {
    let defaults = has_default_tags(body);
    let mut out = Vec::new();
    for (ty, name, res) in resources(body) {
        let location = format!("{ty}.{name}");
        if TAGGABLE.contains(&ty) {
            if !defaults && attr(res, "tags").is_none() {
                out.push(violation(
                    Rule::TagsEverywhere,
                    &location,
                    "no tags and no default_tags in the aws provider",
                ));
            }
        } else if !UNTAGGABLE.contains(&ty) {
            out.push(violation(
                Rule::TagsEverywhere,
                &location,
                "unknown resource type: add it to TAGGABLE or UNTAGGABLE in deploy/src/lib.rs",
            ));
        }
    }
    out
}

/// Rule [`Rule::NameTags`]: every resource of a [`TAGGABLE`] type except
/// `aws_s3_object` sets `tags` with a `Name` key (what the console shows).
pub fn check_name_tags(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for (ty, name, res) in resources(body) {
        if !TAGGABLE.contains(&ty) || ty == "aws_s3_object" {
            continue;
        }
        let named = match attr(res, "tags") {
            Some(Expression::Object(o)) => o.keys().any(|k| expr_key(k) == "Name"),
            Some(other) => expr_text(other).contains("Name"),
            None => false,
        };
        if !named {
            out.push(violation(
                Rule::NameTags,
                format!("{ty}.{name}"),
                "no Name tag",
            ));
        }
    }
    out
}

fn expr_key(key: &hcl::ObjectKey) -> String {
    match key {
        hcl::ObjectKey::Identifier(i) => i.as_str().to_string(),
        hcl::ObjectKey::Expression(Expression::String(s)) => s.clone(),
        hcl::ObjectKey::Expression(e) => expr_text(e),
        _ => String::new(),
    }
}

// ------------------------------------------------------------------ templates

/// A `templatefile(PATH, { … })` call: the path's text and the names passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCall {
    /// Where the call is, e.g. `aws_instance.client.user_data`.
    pub location: String,
    /// The path argument as HCL text, e.g. `"${path.module}/files/x.sh.tftpl"`.
    pub path: String,
    /// The keys of the variables object.
    pub vars: Vec<String>,
}

/// Every `templatefile` call used as an instance's user data, directly or
/// through one encoding function (`base64gzip`, `base64encode`).
pub fn user_data_template_calls(body: &Body) -> Vec<TemplateCall> {
    let mut calls = Vec::new();
    for (ty, name, res) in instances(body) {
        for key in ["user_data", "user_data_base64"] {
            let expr = match attr(res, key) {
                Some(Expression::FuncCall(outer))
                    if matches!(outer.name.name.as_str(), "base64gzip" | "base64encode") =>
                {
                    outer.args.first()
                }
                other => other,
            };
            if let Some(Expression::FuncCall(call)) = expr {
                if call.name.name.as_str() != "templatefile" {
                    continue;
                }
                let path = call.args.first().map(expr_text).unwrap_or_default();
                let vars = match call.args.get(1) {
                    Some(Expression::Object(o)) => o.keys().map(expr_key).collect(),
                    _ => Vec::new(),
                };
                calls.push(TemplateCall {
                    location: format!("{ty}.{name}.{key}"),
                    path,
                    vars,
                });
            }
        }
    }
    calls
}

/// The `${name}` placeholders of a template's text, in order of appearance,
/// each once (`$${` escapes are skipped).
pub fn template_placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("${") {
        let start = i + off;
        i = start + 2;
        if start > 0 && bytes[start - 1] == b'$' {
            continue;
        }
        if let Some(end) = text[i..].find('}') {
            let inner = text[i..i + end].trim();
            if !inner.is_empty()
                && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !names.iter().any(|n| n == inner)
            {
                names.push(inner.to_string());
            }
        }
    }
    names
}

// ------------------------------------------------------------------ users

/// Rule [`Rule::PerUserAccounts`] over the configuration: no output or
/// resource tells anyone to log in to a client instance as `ec2-user` (the
/// operator's account, with passwordless sudo and the operator's key pair).
pub fn check_no_shared_login(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for block in body.blocks() {
        if !matches!(block.identifier(), "output" | "resource" | "locals") {
            continue;
        }
        let text = block_text(block);
        if text.contains("ec2-user@") && text.contains("aws_instance.client") {
            let address = std::iter::once(block.identifier())
                .chain(block.labels().iter().map(|l| l.as_str()))
                .collect::<Vec<_>>()
                .join(".");
            out.push(violation(
                Rule::PerUserAccounts,
                address,
                "hands out ec2-user logins to client instances; users log in with their own accounts",
            ));
        }
    }
    out
}

/// Rule [`Rule::PerUserAccounts`] over the client setup script: it creates
/// one Unix account per user (`useradd`) with a private data folder
/// (`install -d -m 0700` or `chmod 0700`), and grants no sudo (no `wheel`
/// group, no sudoers file).
pub fn check_client_accounts_script(name: &str, text: &str) -> Vec<Violation> {
    let code = shell_code(text);
    let mut out = Vec::new();
    if !code.contains("useradd") {
        out.push(violation(
            Rule::PerUserAccounts,
            name,
            "creates no Unix account per chat user (no useradd)",
        ));
    }
    if !(code.contains("-m 0700") || code.contains("chmod 0700") || code.contains("chmod 700")) {
        out.push(violation(
            Rule::PerUserAccounts,
            name,
            "gives users no private (0700) data folder",
        ));
    }
    if code.contains("wheel") || code.contains("sudoers") {
        out.push(violation(
            Rule::PerUserAccounts,
            name,
            "grants chat users sudo",
        ));
    }
    out
}

/// The lines of a shell script without comments (a `#` at the start of a
/// line or after a blank), for checks that must not be fooled by prose.
pub fn shell_code(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut cut = line.len();
            let bytes = line.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
                    cut = i;
                    break;
                }
            }
            &line[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shell commands of a script with their continuation lines joined.
fn shell_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in shell_code(text).lines() {
        let trimmed = line.trim_end();
        if let Some(head) = trimmed.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(trimmed);
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

// ------------------------------------------------------------------ service owner

/// Rule [`Rule::StableServiceOwner`] over a boot script or template: every
/// `useradd --system` names a fixed `--uid` (a system UID is otherwise the
/// first free one, which differs between AMIs, and a replaced instance
/// would not own the volume it mounts), and every `chown` of the data folder
/// (`$DATA_DIR` or `/var/lib/p2pchat`) is recursive.
pub fn check_stable_service_owner(name: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for cmd in shell_commands(text) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let Some(pos) = words.iter().position(|w| *w == "useradd" || *w == "chown") else {
            continue;
        };
        let args = &words[pos + 1..];
        if words[pos] == "useradd" && args.iter().any(|a| *a == "--system" || *a == "-r") {
            let fixed = args
                .iter()
                .any(|a| *a == "--uid" || *a == "-u" || a.starts_with("--uid="));
            if !fixed {
                out.push(violation(
                    Rule::StableServiceOwner,
                    name,
                    format!("`{cmd}` picks whatever UID is free; give it a fixed --uid"),
                ));
            }
        }
        if words[pos] == "chown"
            && args
                .iter()
                .any(|a| a.contains("DATA_DIR") || a.contains("/var/lib/p2pchat"))
        {
            let recursive = args.iter().any(|a| {
                *a == "-R"
                    || *a == "--recursive"
                    || (a.starts_with('-') && !a.starts_with("--") && a.contains('R'))
            });
            if !recursive {
                out.push(violation(
                    Rule::StableServiceOwner,
                    name,
                    format!("`{cmd}` leaves the files inside with their old owner; use chown -R"),
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ boot config

/// Rule [`Rule::BootConfigApplied`]: every `aws_instance` with user data sets
/// `user_data_replace_on_change = true`. Without it a changed user data
/// (a new port, a new coordinator address) stops and starts the instance,
/// and cloud-init, which runs user data once per instance, ignores it.
pub fn check_boot_config_applied(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    for (ty, name, res) in resources(body) {
        if ty != "aws_instance" {
            continue;
        }
        let has_user_data =
            attr(res, "user_data").is_some() || attr(res, "user_data_base64").is_some();
        if has_user_data && !is_true(attr(res, "user_data_replace_on_change")) {
            out.push(violation(
                Rule::BootConfigApplied,
                format!("{ty}.{name}"),
                "user data changes would not run (user_data_replace_on_change is not true)",
            ));
        }
    }
    out
}

/// Rule [`Rule::NoEphemeralIpRules`]: no ingress rule's source or
/// `for_each` refers, directly or through locals, to an `aws_instance`'s
/// `public_ip` (auto-assigned, it changes on stop/start while the rule keeps
/// the old one). Admit instances by Elastic IP or security group instead.
pub fn check_no_ephemeral_ip_rules(body: &Body) -> Vec<Violation> {
    let is_ephemeral = |text: &str| text.contains("aws_instance.") && text.contains("public_ip");
    let locals: Vec<(String, String)> = sub_blocks(body, "locals")
        .flat_map(|b| {
            b.body()
                .attributes()
                .map(|a| (a.key().to_string(), expr_text(a.expr())))
        })
        .collect();
    let mut tainted: Vec<String> = Vec::new();
    loop {
        let before = tainted.len();
        for (name, text) in &locals {
            if tainted.contains(name) {
                continue;
            }
            if is_ephemeral(text) || tainted.iter().any(|t| references(text, "local", t)) {
                tainted.push(name.clone());
            }
        }
        if tainted.len() == before {
            break;
        }
    }
    let mut out = Vec::new();
    for (ty, name, res) in resources(body) {
        if !matches!(
            ty,
            "aws_vpc_security_group_ingress_rule"
                | "aws_security_group_rule"
                | "aws_security_group"
        ) {
            continue;
        }
        let text = hcl::format::to_string(res).unwrap_or_default();
        let via_local = tainted.iter().find(|t| references(&text, "local", t));
        if is_ephemeral(&text) || via_local.is_some() {
            out.push(violation(
                Rule::NoEphemeralIpRules,
                format!("{ty}.{name}"),
                match via_local {
                    Some(l) => format!("admits local.{l}, an instance's changing public IP"),
                    None => "admits an instance's changing public IP".to_string(),
                },
            ));
        }
    }
    out
}

// ------------------------------------------------------------------ tag budget

/// Most tags an S3 object may carry.
pub const S3_OBJECT_MAX_TAGS: usize = 10;

/// Rule [`Rule::ExtraTagsBounded`]: every map variable merged into the
/// `aws` provider's `default_tags` (directly or through a local) has a
/// validation `length(var.NAME) <= N` with N + the literal default tags + 1
/// (`Name`) at most [`S3_OBJECT_MAX_TAGS`]: S3 objects take at most 10 tags,
/// and an 11th fails at apply time, after half the deployment exists.
pub fn check_extra_tags_bounded(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(expr) = sub_blocks(body, "provider")
        .filter(|p| label(p, 0) == "aws")
        .flat_map(|p| sub_blocks(p.body(), "default_tags").collect::<Vec<_>>())
        .find_map(|d| attr(d.body(), "tags"))
    else {
        return out;
    };
    // Follow one level of local.X.
    let mut expr = expr.clone();
    let text = expr_text(&expr);
    if let Some(name) = text.trim().strip_prefix("local.") {
        if let Some(e) = sub_blocks(body, "locals")
            .flat_map(|b| b.body().attributes().collect::<Vec<_>>())
            .find(|a| a.key() == name)
            .map(|a| a.expr().clone())
        {
            expr = e;
        }
    }
    let mut literal = 0usize;
    let mut vars: Vec<String> = Vec::new();
    let count = |e: &Expression, literal: &mut usize, vars: &mut Vec<String>| match e {
        Expression::Object(o) => *literal += o.len(),
        other => vars.extend(variable_refs(&expr_text(other))),
    };
    match &expr {
        Expression::FuncCall(call) if call.name.name.as_str() == "merge" => {
            for a in &call.args {
                count(a, &mut literal, &mut vars);
            }
        }
        other => count(other, &mut literal, &mut vars),
    }
    let budget = S3_OBJECT_MAX_TAGS.saturating_sub(literal + 1);
    for v in vars {
        let location = format!("variable.{v}");
        let bound = sub_blocks(body, "variable")
            .filter(|b| label(b, 0) == v)
            .flat_map(|b| sub_blocks(b.body(), "validation").collect::<Vec<_>>())
            .filter_map(|val| attr_text(val.body(), "condition"))
            .find_map(|cond| length_bound(&cond, &v));
        match bound {
            Some(n) if n <= budget => {}
            Some(n) => out.push(violation(
                Rule::ExtraTagsBounded,
                &location,
                format!(
                    "allows {n} tags, but S3 objects take {S3_OBJECT_MAX_TAGS}: {literal} default tags and Name leave {budget}"
                ),
            )),
            None => out.push(violation(
                Rule::ExtraTagsBounded,
                &location,
                format!(
                    "merged into default_tags without a validation `length(var.{v}) <= {budget}` (S3 objects take {S3_OBJECT_MAX_TAGS} tags)"
                ),
            )),
        }
    }
    out
}

/// The N of `length(var.NAME) <= N` (or `< N`, giving N - 1) in a condition.
fn length_bound(cond: &str, var: &str) -> Option<usize> {
    let needle = format!("length(var.{var})");
    let compact: String = cond.chars().filter(|c| !c.is_whitespace()).collect();
    let rest = &compact[compact.find(&needle)? + needle.len()..];
    let (strict, rest) = if let Some(r) = rest.strip_prefix("<=") {
        (false, r)
    } else {
        (true, rest.strip_prefix('<')?)
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: usize = digits.parse().ok()?;
    Some(if strict { n.checked_sub(1)? } else { n })
}

// ------------------------------------------------------------------ boot retries

/// Rule [`Rule::FetchRetries`] over a boot script: every `aws s3 cp` /
/// `aws ssm get-parameter` and every `curl -o FILE` runs under a `retry` wrapper (at first boot the
/// instance role may not have propagated and the Elastic IP may be moving).
pub fn check_fetch_retries(name: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for cmd in shell_commands(text) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let next = words.get(i + 1).copied().unwrap_or("");
            // A `curl` that saves what it gets (`-o FILE`, not /dev/null)
            // is a download too.
            let curl_download = *w == "curl"
                && words[i..]
                    .windows(2)
                    .any(|p| (p[0] == "-o" || p[0] == "--output") && p[1] != "/dev/null");
            if (*w == "aws" && (next == "s3" || next == "ssm")) || curl_download {
                if !words[..i].iter().any(|w| w.contains("retry")) {
                    out.push(violation(
                        Rule::FetchRetries,
                        name,
                        format!("`{cmd}` is not retried"),
                    ));
                }
                break;
            }
        }
    }
    out
}

/// The value of `key=` in a unit's text (last one wins, as in systemd).
pub fn unit_setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// Every value of a list setting such as `Wants=` (systemd adds them up).
pub fn unit_list(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

/// Rule [`Rule::FetchRetries`] over a systemd unit that fetches or waits at
/// start: it restarts on failure (`Restart=on-failure` or `always`) and never
/// stops retrying (`StartLimitIntervalSec=0`).
pub fn check_unit_retries(name: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    if !matches!(unit_setting(text, "Restart"), Some("on-failure" | "always")) {
        out.push(violation(
            Rule::FetchRetries,
            name,
            "no Restart=on-failure: a failed start is never retried",
        ));
    }
    if unit_setting(text, "StartLimitIntervalSec") != Some("0") {
        out.push(violation(
            Rule::FetchRetries,
            name,
            "no StartLimitIntervalSec=0: systemd stops retrying after 5 failed starts",
        ));
    }
    out
}

/// Rule [`Rule::DataVolumeUnit`]: the run-once user data does not wait for or
/// format the data volume (a volume that appears late would leave nothing to
/// retry); a unit in `units` runs the volume set-up and retries, and the
/// service `service` wants it, starts after it and checks the mount.
pub fn check_data_volume_unit(
    user_data: (&str, &str),
    units: &[(&str, &str)],
    service: &str,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let code = shell_code(user_data.1);
    if code.contains("mkfs") || code.contains("/dev/disk/by-id") {
        out.push(violation(
            Rule::DataVolumeUnit,
            user_data.0,
            "the run-once user data sets up the data volume; a unit must, so that it retries",
        ));
    }
    let volume_unit = units.iter().find(|(n, t)| {
        *n != service && unit_setting(t, "ExecStart").is_some_and(|e| e.contains("data-volume"))
    });
    let Some((vname, vtext)) = volume_unit else {
        out.push(violation(
            Rule::DataVolumeUnit,
            service,
            "no unit sets up the data volume (ExecStart=…data-volume…)",
        ));
        return out;
    };
    for v in check_unit_retries(vname, vtext) {
        out.push(violation(Rule::DataVolumeUnit, v.location, v.message));
    }
    match units.iter().find(|(n, _)| *n == service) {
        Some((_, stext)) => {
            let has = |key: &str| unit_list(stext, key).iter().any(|u| u == vname);
            if !(has("Wants") || has("Requires")) || !has("After") {
                out.push(violation(
                    Rule::DataVolumeUnit,
                    service,
                    format!("does not have Wants= and After= {vname}"),
                ));
            }
            if unit_setting(stext, "RequiresMountsFor").is_some() {
                out.push(violation(
                    Rule::DataVolumeUnit,
                    service,
                    "RequiresMountsFor= turns a late volume into a dependency failure, which Restart= does not retry",
                ));
            }
            if !stext.contains("mountpoint") {
                out.push(violation(
                    Rule::DataVolumeUnit,
                    service,
                    "does not check that the data volume is mounted before it starts",
                ));
            }
        }
        None => out.push(violation(Rule::DataVolumeUnit, service, "no such unit")),
    }
    out
}

// ------------------------------------------------------------------ provider lock

/// A version constraint in Terraform's normalised form: each version with
/// three components (`>= 6.8, < 7.0` -> `>= 6.8.0, < 7.0.0`).
pub fn normalize_constraints(text: &str) -> String {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let split = part
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(part.len());
            let (op, version) = part.split_at(split);
            let mut nums: Vec<&str> = version.split('.').collect();
            while nums.len() < 3 {
                nums.push("0");
            }
            let op = op.trim();
            if op.is_empty() {
                nums.join(".")
            } else {
                format!("{op} {}", nums.join("."))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rule [`Rule::ProviderLockCommitted`]: `lock` (the text of
/// `.terraform.lock.hcl`, `None` if absent) has a `provider` block for every
/// `required_providers` source with a `version` and the same `constraints`,
/// and no line of `gitignore` ignores the lock file.
pub fn check_provider_lock(body: &Body, lock: Option<&str>, gitignore: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for line in gitignore.lines().map(str::trim) {
        if !line.starts_with('#')
            && !line.starts_with('!')
            && line.trim_start_matches("**/").trim_start_matches('/') == ".terraform.lock.hcl"
        {
            out.push(violation(
                Rule::ProviderLockCommitted,
                ".gitignore",
                "ignores .terraform.lock.hcl: commit it so every operator gets the same provider",
            ));
        }
    }
    let Some(lock) = lock else {
        out.push(violation(
            Rule::ProviderLockCommitted,
            ".terraform.lock.hcl",
            "missing: run terraform init and commit the lock file",
        ));
        return out;
    };
    let lock = match hcl::parse(lock) {
        Ok(b) => b,
        Err(e) => {
            out.push(violation(
                Rule::ProviderLockCommitted,
                ".terraform.lock.hcl",
                format!("does not parse: {e}"),
            ));
            return out;
        }
    };
    let required = sub_blocks(body, "terraform")
        .flat_map(|t| sub_blocks(t.body(), "required_providers").collect::<Vec<_>>())
        .flat_map(|r| r.body().attributes().collect::<Vec<_>>());
    for provider in required {
        let Expression::Object(o) = provider.expr() else {
            continue;
        };
        let get = |k: &str| {
            o.iter()
                .find(|(key, _)| expr_key(key) == k)
                .map(|(_, v)| expr_text(v).trim_matches('"').to_string())
        };
        let Some(source) = get("source") else {
            continue;
        };
        let full = if source.matches('/').count() == 1 {
            format!("registry.terraform.io/{source}")
        } else {
            source.clone()
        };
        let Some(entry) = sub_blocks(&lock, "provider").find(|b| label(b, 0) == full) else {
            out.push(violation(
                Rule::ProviderLockCommitted,
                ".terraform.lock.hcl",
                format!("no entry for {full}"),
            ));
            continue;
        };
        let version = attr_text(entry.body(), "version").unwrap_or_default();
        if version.trim_matches('"').is_empty() {
            out.push(violation(
                Rule::ProviderLockCommitted,
                ".terraform.lock.hcl",
                format!("{full} has no version"),
            ));
        }
        let constraints = attr_text(entry.body(), "constraints").unwrap_or_default();
        if let Some(wanted) = get("version") {
            if normalize_constraints(constraints.trim_matches('"'))
                != normalize_constraints(&wanted)
            {
                out.push(violation(
                    Rule::ProviderLockCommitted,
                    ".terraform.lock.hcl",
                    format!("{full}: constraints {constraints} differ from required_providers {wanted:?}"),
                ));
            }
        }
    }
    out
}

/// Every check of the p2pchat deployment with its resource names and ports:
/// coordinator group `aws_security_group.coordinator` on UDP 7070, client
/// group `aws_security_group.client` on UDP 7071, SSH as [`SSH_ACCESS`].
/// The checks over files (scripts, units, the lock file) take their texts
/// and are run by the tests.
pub fn check_all(body: &Body) -> Vec<Violation> {
    let mut out = Vec::new();
    out.extend(check_coordinator_quic_ingress(
        body,
        "aws_security_group.coordinator",
        7070,
    ));
    out.extend(check_peer_port_ingress(
        body,
        "aws_security_group.client",
        7071,
    ));
    out.extend(check_ssh_access(body, SSH_ACCESS));
    out.extend(check_no_literal_open_ingress(body));
    out.extend(check_imdsv2_required(body));
    out.extend(check_encrypted_volumes(body));
    out.extend(check_no_keys_in_user_data(body));
    out.extend(check_ca_key_never_referenced(body));
    out.extend(check_variables_documented(body));
    out.extend(check_tags_everywhere(body));
    out.extend(check_name_tags(body));
    out.extend(check_no_shared_login(body));
    out.extend(check_boot_config_applied(body));
    out.extend(check_no_ephemeral_ip_rules(body));
    out.extend(check_extra_tags_bounded(body));
    out.extend(check_metrics_shipped(body, "aws_instance.coordinator"));
    out.extend(check_readiness_alarm(body));
    out.extend(check_data_volume_snapshots(
        body,
        "aws_ebs_volume.coordinator_data",
    ));
    out
}

/// Who may SSH where in the p2pchat deployment: the coordinator only from
/// the operator's CIDRs; client instances from the users' and the operator's.
pub const SSH_ACCESS: &[(&str, &[&str])] = &[
    ("aws_security_group.coordinator", &["operator_ssh_cidrs"]),
    (
        "aws_security_group.client",
        &["user_ssh_cidrs", "operator_ssh_cidrs"],
    ),
];

// ------------------------------------------------------------------ operating

/// The readiness metric the instance reports and the alarm watches.
pub const READINESS_METRIC: &str = "CoordinatorReady";

/// `local.NAME` resolved through the `locals` blocks (one level), else the
/// expression itself.
fn resolve_local<'a>(body: &'a Body, expr: &'a Expression) -> &'a Expression {
    let text = expr_text(expr);
    let Some(name) = text.trim().strip_prefix("local.") else {
        return expr;
    };
    sub_blocks(body, "locals")
        .find_map(|b| attr(b.body(), name))
        .unwrap_or(expr)
}

/// The (key, value text) pairs of a tag map: an object, a `merge(…)` of
/// them, or a `local.NAME` holding one.
fn tag_pairs(body: &Body, expr: &Expression) -> Vec<(String, String)> {
    match resolve_local(body, expr) {
        Expression::Object(o) => o.iter().map(|(k, v)| (expr_key(k), expr_text(v))).collect(),
        Expression::FuncCall(call) if call.name.name.as_str() == "merge" => {
            call.args.iter().flat_map(|a| tag_pairs(body, a)).collect()
        }
        _ => Vec::new(),
    }
}

fn resource_body<'a>(body: &'a Body, address: &str) -> Option<&'a Body> {
    let (ty, name) = address.split_once('.')?;
    resources(body)
        .find(|(t, n, _)| *t == ty && *n == name)
        .map(|(_, _, b)| b)
}

fn string_is(expr: Option<&Expression>, want: &str) -> bool {
    expr.map(expr_text)
        .is_some_and(|t| t.trim().trim_matches('"') == want)
}

/// Rule [`Rule::MetricsShipped`] over the configuration: some
/// `aws_cloudwatch_log_group` is named in the user data of `instance` (e.g.
/// `aws_instance.coordinator`, where the CloudWatch agent's configuration
/// is rendered), and that group sets a non-zero `retention_in_days` (the
/// default keeps logs forever, and pays for them).
pub fn check_metrics_shipped(body: &Body, instance: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(res) = resource_body(body, instance) else {
        return vec![violation(
            Rule::MetricsShipped,
            instance,
            "no such instance",
        )];
    };
    let user_data: String = ["user_data", "user_data_base64"]
        .iter()
        .filter_map(|k| attr(res, k))
        .map(expr_text)
        .collect();
    let groups: Vec<(&str, &Body)> = resources(body)
        .filter(|(ty, _, _)| *ty == "aws_cloudwatch_log_group")
        .map(|(_, name, b)| (name, b))
        .collect();
    let named: Vec<&(&str, &Body)> = groups
        .iter()
        .filter(|(name, _)| references(&user_data, "aws_cloudwatch_log_group", name))
        .collect();
    if named.is_empty() {
        out.push(violation(
            Rule::MetricsShipped,
            instance,
            "its user data names no aws_cloudwatch_log_group for the CloudWatch agent's metrics",
        ));
    }
    for (name, group) in named {
        let retention = attr(group, "retention_in_days").map(expr_text);
        if retention.as_deref().is_none_or(|r| r.trim() == "0") {
            out.push(violation(
                Rule::MetricsShipped,
                format!("aws_cloudwatch_log_group.{name}"),
                "no retention_in_days: the metrics would be kept (and paid for) forever",
            ));
        }
    }
    out
}

/// Rule [`Rule::MetricsShipped`] over the boot files: the user data
/// `(name, text)` sets `P2PCHAT_COORDINATOR_METRICS` to a loopback address
/// and enables `agent_unit`, and the scrape configuration `(name, text)`
/// targets that same address.
pub fn check_metrics_files(
    user_data: (&str, &str),
    scrape: (&str, &str),
    agent_unit: &str,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let listen = user_data
        .1
        .lines()
        .find_map(|l| l.trim().strip_prefix("P2PCHAT_COORDINATOR_METRICS="))
        .map(str::trim);
    match listen {
        None => out.push(violation(
            Rule::MetricsShipped,
            user_data.0,
            "the coordinator serves no metrics (no P2PCHAT_COORDINATOR_METRICS=)",
        )),
        Some(addr) => {
            if !(addr.starts_with("127.0.0.1:") || addr.starts_with("[::1]:")) {
                out.push(violation(
                    Rule::MetricsShipped,
                    user_data.0,
                    format!("metrics on {addr}: only loopback, the endpoint has no authentication"),
                ));
            }
            if !scrape.1.contains(addr) {
                out.push(violation(
                    Rule::MetricsShipped,
                    scrape.0,
                    format!("does not scrape {addr}, where the coordinator serves its metrics"),
                ));
            }
        }
    }
    let enabled = shell_commands(user_data.1)
        .iter()
        .any(|c| c.contains("systemctl enable") && c.contains(agent_unit));
    if !enabled {
        out.push(violation(
            Rule::MetricsShipped,
            user_data.0,
            format!("does not enable {agent_unit} (the CloudWatch agent)"),
        ));
    }
    out
}

/// Rule [`Rule::ReadinessAlarm`]: some `aws_cloudwatch_metric_alarm` watches
/// [`READINESS_METRIC`] (literally or through a local), fires when it is
/// less than the threshold, treats missing data as `breaching`, and sends
/// `alarm_actions` taken from a variable.
pub fn check_readiness_alarm(body: &Body) -> Vec<Violation> {
    let alarms: Vec<(&str, &Body)> = resources(body)
        .filter(|(ty, _, res)| {
            *ty == "aws_cloudwatch_metric_alarm"
                && attr(res, "metric_name")
                    .is_some_and(|m| string_is(Some(resolve_local(body, m)), READINESS_METRIC))
        })
        .map(|(_, name, res)| (name, res))
        .collect();
    if alarms.is_empty() {
        return vec![violation(
            Rule::ReadinessAlarm,
            "aws_cloudwatch_metric_alarm",
            format!(
                "no alarm watches {READINESS_METRIC}: nobody hears that the coordinator is down"
            ),
        )];
    }
    let mut out = Vec::new();
    for (name, alarm) in alarms {
        let location = format!("aws_cloudwatch_metric_alarm.{name}");
        if !string_is(attr(alarm, "treat_missing_data"), "breaching") {
            out.push(violation(
                Rule::ReadinessAlarm,
                &location,
                "treat_missing_data is not \"breaching\": a dead instance reports nothing and would never alarm",
            ));
        }
        let comparison = attr(alarm, "comparison_operator").map(expr_text);
        if comparison.is_none_or(|c| !c.contains("LessThan")) {
            out.push(violation(
                Rule::ReadinessAlarm,
                &location,
                "does not fire when readiness drops (comparison_operator LessThanThreshold)",
            ));
        }
        let actions = attr(alarm, "alarm_actions").map(expr_text);
        if actions.is_none_or(|a| variable_refs(&a).is_empty()) {
            out.push(violation(
                Rule::ReadinessAlarm,
                &location,
                "alarm_actions do not come from a variable: nobody is told",
            ));
        }
    }
    out
}

/// Rule [`Rule::ReadinessAlarm`] over the reporter script `(name, text)`: it
/// asks `/readyz` and puts [`READINESS_METRIC`] with `put-metric-data`.
pub fn check_readiness_reporter(name: &str, text: &str) -> Vec<Violation> {
    let code = shell_code(text);
    let mut out = Vec::new();
    for (needle, why) in [
        ("/readyz", "does not ask /readyz"),
        ("put-metric-data", "does not put a metric (put-metric-data)"),
        (
            READINESS_METRIC,
            "does not report the metric the alarm watches",
        ),
    ] {
        if !code.contains(needle) {
            out.push(violation(Rule::ReadinessAlarm, name, why));
        }
    }
    out
}

/// Rule [`Rule::DataVolumeSnapshots`]: an `aws_dlm_lifecycle_policy` that is
/// not disabled snapshots `VOLUME`s whose `target_tags` are all tags of
/// `volume` (e.g. `aws_ebs_volume.coordinator_data`), at least once a day
/// (`interval` of at most 24 `HOURS`, or a cron expression), and keeps a
/// `retain_rule` count taken from a variable.
pub fn check_data_volume_snapshots(body: &Body, volume: &str) -> Vec<Violation> {
    let Some(vol) = resource_body(body, volume) else {
        return vec![violation(
            Rule::DataVolumeSnapshots,
            volume,
            "no such volume",
        )];
    };
    let volume_tags = attr(vol, "tags")
        .map(|t| tag_pairs(body, t))
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut any = false;
    for (ty, name, res) in resources(body) {
        if ty != "aws_dlm_lifecycle_policy" {
            continue;
        }
        any = true;
        let location = format!("{ty}.{name}");
        let before = problems.len();
        let mut problem = |why: String| {
            problems.push(violation(Rule::DataVolumeSnapshots, &location, why));
        };
        if string_is(attr(res, "state"), "DISABLED") {
            problem("the policy is disabled".into());
        }
        let Some(details) = sub_blocks(res, "policy_details").next().map(|b| b.body()) else {
            problem("no policy_details".into());
            continue;
        };
        let types = attr(details, "resource_types")
            .map(expr_text)
            .unwrap_or_default();
        if !types.contains("\"VOLUME\"") {
            problem("resource_types does not include VOLUME".into());
        }
        let targets = attr(details, "target_tags")
            .map(|t| tag_pairs(body, t))
            .unwrap_or_default();
        if targets.is_empty() {
            problem("no target_tags".into());
        }
        for (k, v) in &targets {
            if !volume_tags.iter().any(|(vk, vv)| vk == k && vv == v) {
                problem(format!(
                    "targets tag {k} = {v}, which {volume} does not have"
                ));
            }
        }
        let schedules: Vec<&Body> = sub_blocks(details, "schedule").map(|b| b.body()).collect();
        let daily = schedules.iter().any(|s| {
            sub_blocks(s, "create_rule").any(|c| {
                let c = c.body();
                let hours = attr(c, "interval")
                    .and_then(|i| match i {
                        Expression::Number(n) => n.as_i64(),
                        _ => None,
                    })
                    .is_some_and(|h| (1..=24).contains(&h));
                (hours && string_is(attr(c, "interval_unit"), "HOURS"))
                    || attr(c, "cron_expression").is_some()
            })
        });
        if !daily {
            problem("no schedule creates a snapshot at least every 24 hours".into());
        }
        let retained = schedules.iter().any(|s| {
            sub_blocks(s, "retain_rule").any(|r| {
                ["count", "interval"].iter().any(|k| {
                    attr(r.body(), k).is_some_and(|e| !variable_refs(&expr_text(e)).is_empty())
                })
            })
        });
        if !retained {
            problem("no retain_rule whose count comes from a variable".into());
        }
        if problems.len() == before {
            return Vec::new();
        }
    }
    if !any {
        problems.push(violation(
            Rule::DataVolumeSnapshots,
            volume,
            "no aws_dlm_lifecycle_policy snapshots it",
        ));
    }
    problems
}

// ------------------------------------------------------------------ cluster (issue 12)

/// The NATS client port: loopback only, no security group rule may admit it.
pub const NATS_CLIENT_PORT: i64 = 4222;
/// PostgreSQL's port.
pub const POSTGRES_PORT: i64 = 5432;

/// Resource types that exist only in cluster mode.
pub const CLUSTER_ONLY_TYPES: &[&str] = &[
    "aws_db_instance",
    "aws_db_parameter_group",
    "aws_db_subnet_group",
    "aws_rds_cluster",
    "random_password",
];

/// `aws_security_group.x[0]` -> `aws_security_group.x`: a counted group is
/// still the same group.
fn without_index(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Rule [`Rule::SingleNodeDefault`]; `nats_port` is the NATS route port and
/// `instance` the coordinator's `aws_instance` address.
pub fn check_single_node_default(body: &Body, instance: &str, nats_port: i64) -> Vec<Violation> {
    let mut out = Vec::new();
    let rule = Rule::SingleNodeDefault;
    match variable_default(body, "coordinator_count") {
        None => out.push(violation(
            rule,
            "variable.coordinator_count",
            "no coordinator_count variable with a default: one coordinator is all there is",
        )),
        Some(d) if expr_text(&d).trim() != "1" => out.push(violation(
            rule,
            "variable.coordinator_count",
            format!(
                "defaults to {}: one coordinator must stay the default",
                expr_text(&d)
            ),
        )),
        Some(_) => {}
    }
    let cluster = sub_blocks(body, "locals").find_map(|b| attr(b.body(), "cluster").map(expr_text));
    if cluster
        .as_deref()
        .map(|t| t.split_whitespace().collect::<String>())
        != Some("var.coordinator_count>1".to_string())
    {
        out.push(violation(
            rule,
            "locals.cluster",
            "no local `cluster = var.coordinator_count > 1` to switch cluster mode on",
        ));
    }
    // `count = local.cluster ? N : 0` (or `X && local.cluster ? N : 0`): none
    // with the default of one coordinator.
    let counted = |res: &Body| match attr(res, "count") {
        Some(Expression::Conditional(c)) => {
            let cond: String = expr_text(&c.cond_expr).split_whitespace().collect();
            (cond == "local.cluster" || cond.ends_with("&&local.cluster"))
                && matches!(&c.false_expr, Expression::Number(n) if n.as_i64() == Some(0))
        }
        _ => false,
    };
    let cluster_rules: Vec<String> = ingress_rules(body)
        .into_iter()
        .filter(|r| {
            r.protocol != Protocol::All
                && (r.admits(Protocol::Tcp, nats_port) || r.admits(Protocol::Tcp, POSTGRES_PORT))
        })
        .map(|r| r.location)
        .collect();
    for (ty, name, res) in resources(body) {
        let location = format!("{ty}.{name}");
        let cluster_only = CLUSTER_ONLY_TYPES.contains(&ty)
            || name.contains("nats")
            || name.contains("database")
            || cluster_rules.contains(&location);
        if cluster_only && !counted(res) {
            out.push(violation(
                rule,
                &location,
                "exists in cluster mode only, but its count is not `local.cluster ? N : 0`",
            ));
        }
    }
    // The user data's cluster part: `local.cluster ? … : ""`.
    let Some(res) = resource_body(body, instance) else {
        out.push(violation(rule, instance, "no such instance"));
        return out;
    };
    let mut found = false;
    for key in ["user_data", "user_data_base64"] {
        let Some(expr) = attr(res, key) else { continue };
        let mut stack = vec![expr];
        while let Some(e) = stack.pop() {
            match e {
                Expression::FuncCall(call) => {
                    if call.name.name.as_str() == "templatefile" {
                        if let Some(Expression::Object(o)) = call.args.get(1) {
                            for (k, v) in o.iter() {
                                if expr_key(k) != "cluster_setup" {
                                    continue;
                                }
                                found = true;
                                let ok = matches!(v, Expression::Conditional(c)
                                    if references(&expr_text(&c.cond_expr), "local", "cluster")
                                        && matches!(&c.false_expr, Expression::String(s) if s.is_empty()));
                                if !ok {
                                    out.push(violation(
                                        rule,
                                        format!("{instance}.{key}"),
                                        "cluster_setup is not `local.cluster ? … : \"\"`: a single coordinator's user data would change",
                                    ));
                                }
                            }
                        }
                    } else {
                        stack.extend(call.args.iter());
                    }
                }
                Expression::Parenthesis(inner) => stack.push(inner),
                _ => {}
            }
        }
    }
    if !found {
        out.push(violation(
            rule,
            instance,
            "its user data takes no cluster_setup: no node is ever told it is in a cluster",
        ));
    }
    out
}

/// Rule [`Rule::DatabasePrivate`] over every `aws_db_instance` (and there
/// must be one).
pub fn check_database_private(body: &Body) -> Vec<Violation> {
    let rule = Rule::DatabasePrivate;
    let dbs: Vec<(&str, &Body)> = resources(body)
        .filter(|(ty, _, _)| *ty == "aws_db_instance")
        .map(|(_, n, b)| (n, b))
        .collect();
    if dbs.is_empty() {
        return vec![violation(
            rule,
            "aws_db_instance",
            "no aws_db_instance: coordinators cannot share their accounts",
        )];
    }
    let mut out = Vec::new();
    for (name, db) in dbs {
        let location = format!("aws_db_instance.{name}");
        let mut problem = |m: &str| out.push(violation(rule, &location, m));
        if !matches!(attr(db, "storage_encrypted"), Some(Expression::Bool(true))) {
            problem("storage_encrypted is not true: the accounts would be unencrypted at rest");
        }
        if !matches!(
            attr(db, "publicly_accessible"),
            Some(Expression::Bool(false))
        ) {
            problem("publicly_accessible is not false (write it out): the database must have no public address");
        }
        match attr(db, "db_subnet_group_name").map(expr_text) {
            None => problem("no db_subnet_group_name: RDS would pick the default VPC's subnets"),
            Some(group) => {
                let group = without_index(&group);
                let group = group.strip_suffix(".name").unwrap_or(&group);
                let subnets = resource_body(body, group)
                    .and_then(|g| attr(g, "subnet_ids"))
                    .map(expr_text)
                    .unwrap_or_default();
                let subnets = resolve_local_text(body, &subnets);
                if subnets.is_empty()
                    || subnets.contains("aws_subnet.public")
                    || subnets.contains("local.subnet_id")
                {
                    problem("its subnet group is not made of private subnets");
                }
            }
        }
        if attr(db, "vpc_security_group_ids").is_none() {
            problem("no vpc_security_group_ids: the VPC's default group would apply");
        }
        match attr(db, "backup_retention_period") {
            None => problem("no backup_retention_period"),
            Some(Expression::Number(n)) if n.as_i64() == Some(0) => {
                problem("backup_retention_period is 0: no automated backups")
            }
            Some(_) => {}
        }
        match attr(db, "deletion_protection") {
            None | Some(Expression::Bool(false)) => problem(
                "deletion_protection is not set (true, or a variable that defaults to true)",
            ),
            Some(_) => {}
        }
        if attr(db, "password").is_some() {
            problem("a plain password argument: send it write-only (password_wo)");
        }
    }
    out
}

/// The text of `local.NAME` when `text` is exactly that, else `text`.
fn resolve_local_text(body: &Body, text: &str) -> String {
    match text.trim().strip_prefix("local.") {
        Some(name) => sub_blocks(body, "locals")
            .find_map(|b| attr(b.body(), name))
            .map(expr_text)
            .unwrap_or_else(|| text.to_string()),
        None => text.to_string(),
    }
}

/// Rule [`Rule::ClusterPortsInternal`]: `coordinator_sg` (e.g.
/// `aws_security_group.coordinator`) admits TCP `nats_port` from itself and
/// nothing else does; nothing admits the NATS client port; PostgreSQL is
/// admitted to the database's groups from `coordinator_sg` only, and is
/// admitted at all.
pub fn check_cluster_ports(body: &Body, coordinator_sg: &str, nats_port: i64) -> Vec<Violation> {
    let rule = Rule::ClusterPortsInternal;
    let mut out = Vec::new();
    let only_coordinators = |r: &IngressRule| {
        !r.sources.is_empty() && r.sources.iter().all(|s| without_index(s) == coordinator_sg)
    };
    let rules: Vec<IngressRule> = ingress_rules(body)
        .into_iter()
        .map(|mut r| {
            r.security_group = without_index(&r.security_group);
            r
        })
        .collect();
    let db_groups: Vec<String> = resources(body)
        .filter(|(ty, _, _)| *ty == "aws_db_instance")
        .filter_map(|(_, _, b)| attr(b, "vpc_security_group_ids"))
        .flat_map(|e| match e {
            Expression::Array(items) => items
                .iter()
                .map(|i| without_index(&group_ref(&expr_text(i))))
                .collect(),
            other => vec![without_index(&group_ref(&expr_text(other)))],
        })
        .collect();
    let mut nats_ok = false;
    let mut pg_ok = false;
    for r in &rules {
        if r.admits(Protocol::Tcp, NATS_CLIENT_PORT) && r.protocol != Protocol::All {
            out.push(violation(
                rule,
                &r.location,
                format!("admits the NATS client port {NATS_CLIENT_PORT}, which listens on loopback only"),
            ));
        }
        if r.protocol != Protocol::All && r.admits(Protocol::Tcp, nats_port) {
            if r.security_group == coordinator_sg && only_coordinators(r) {
                nats_ok = true;
            } else {
                out.push(violation(
                    rule,
                    &r.location,
                    format!("admits the NATS route port {nats_port} from {:?}: only the coordinator group itself may", r.sources),
                ));
            }
        }
        if r.protocol != Protocol::All && r.admits(Protocol::Tcp, POSTGRES_PORT) {
            if db_groups.contains(&r.security_group) && only_coordinators(r) {
                pg_ok = true;
            } else {
                out.push(violation(
                    rule,
                    &r.location,
                    format!("admits PostgreSQL to {} from {:?}: only the database's group, from the coordinators", r.security_group, r.sources),
                ));
            }
        }
    }
    if !nats_ok {
        out.push(violation(
            rule,
            coordinator_sg,
            format!("no rule admits the NATS route port {nats_port} from the coordinator group itself: the nodes cannot form a cluster"),
        ));
    }
    if !pg_ok {
        out.push(violation(
            rule,
            "aws_db_instance",
            "no rule admits PostgreSQL to the database's security group from the coordinators",
        ));
    }
    out
}

/// Rule [`Rule::DatabasePasswordInSsmOnly`] over the configuration.
pub fn check_database_password(body: &Body) -> Vec<Violation> {
    let rule = Rule::DatabasePasswordInSsmOnly;
    let mut out = Vec::new();
    let generated: Vec<String> = resources(body)
        .filter(|(ty, _, _)| *ty == "random_password")
        .map(|(_, n, _)| n.to_string())
        .collect();
    if generated.is_empty() {
        out.push(violation(
            rule,
            "random_password",
            "no random_password: the database password would have to come from somewhere else",
        ));
    }
    let mentions_password = |text: &str| {
        generated
            .iter()
            .any(|n| references(text, "random_password", n))
            || (text.contains("aws_db_instance.") && text.contains(".password"))
    };
    for block in body.blocks() {
        let location = format!(
            "{}{}",
            block.identifier(),
            block
                .labels()
                .iter()
                .map(|l| format!(".{}", l.as_str()))
                .collect::<String>()
        );
        let ty = label(block, 0);
        let allowed = block.identifier() == "resource"
            && matches!(ty, "aws_ssm_parameter" | "aws_db_instance");
        if allowed {
            let b = block.body();
            for a in b.attributes() {
                let text = expr_text(a.expr());
                if !mentions_password(&text) {
                    continue;
                }
                let write_only = matches!(a.key(), "value_wo" | "password_wo");
                if !write_only {
                    out.push(violation(
                        rule,
                        format!("{location}.{}", a.key()),
                        "takes the password through an argument that is kept in the state: use value_wo / password_wo",
                    ));
                }
            }
            if ty == "aws_ssm_parameter"
                && b.attributes()
                    .any(|a| mentions_password(&expr_text(a.expr())))
                && !string_is(attr(b, "type"), "SecureString")
            {
                out.push(violation(
                    rule,
                    &location,
                    "holds the password but is not a SecureString",
                ));
            }
        } else if mentions_password(&block_text(block)) {
            out.push(violation(
                rule,
                &location,
                "refers to the database password: only RDS and its SSM parameter may",
            ));
        }
    }
    out
}

/// Rule [`Rule::DatabasePasswordInSsmOnly`] over a user-data template: no
/// placeholder carries a password (a `*_parameter` placeholder names the
/// parameter, which is fine).
pub fn check_template_has_no_password(name: &str, text: &str) -> Vec<Violation> {
    template_placeholders(text)
        .into_iter()
        .filter(|p| p.contains("password") && !p.ends_with("_parameter"))
        .map(|p| {
            violation(
                Rule::DatabasePasswordInSsmOnly,
                name,
                format!("placeholder ${{{p}}} would put the password in user data"),
            )
        })
        .collect()
}

/// Rule [`Rule::NatsOnTheNodes`] over the cluster part of the user data (it
/// writes nats.conf and cluster.env), the NATS unit and the coordinator's
/// cluster drop-in.
pub fn check_nats_files(
    cluster_setup: (&str, &str),
    nats_unit: (&str, &str),
    dropin: (&str, &str),
) -> Vec<Violation> {
    let rule = Rule::NatsOnTheNodes;
    let mut out = Vec::new();
    let (name, text) = cluster_setup;
    let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut need = |ok: bool, location: &str, m: &str| {
        if !ok {
            out.push(violation(rule, location, m));
        }
    };
    need(
        text.contains("/etc/p2pchat/nats.conf"),
        name,
        "writes no /etc/p2pchat/nats.conf",
    );
    need(
        compact.contains("listen: 127.0.0.1:4222"),
        name,
        "the NATS client port does not listen on 127.0.0.1:4222 only",
    );
    need(
        compact.contains("jetstream {") && compact.contains("store_dir: /var/lib/p2pchat/"),
        name,
        "no JetStream with its store on the data volume (/var/lib/p2pchat)",
    );
    need(
        compact.contains("cluster {")
            && compact.contains("routes: [")
            && compact.contains("name: "),
        name,
        "no named NATS cluster with routes",
    );
    need(
        text.contains("server_name: "),
        name,
        "no server_name: clustered JetStream needs one per node",
    );
    need(
        text.contains("P2PCHAT_COORDINATOR_NATS=nats://127.0.0.1:4222")
            && text.contains("P2PCHAT_COORDINATOR_NODE="),
        name,
        "cluster.env does not give the coordinator --nats nats://127.0.0.1:4222 and --node",
    );
    need(
        shell_code(text).contains("systemctl enable p2pchat-nats.service"),
        name,
        "does not enable p2pchat-nats.service",
    );
    let (uname, unit) = nats_unit;
    need(
        unit_list(unit, "Before")
            .iter()
            .any(|u| u == "p2pchat-coordinator.service"),
        uname,
        "NATS does not start before the coordinator",
    );
    need(
        unit.contains("ExecStartPre=/usr/bin/mountpoint -q /var/lib/p2pchat"),
        uname,
        "does not check that the data volume (its JetStream store) is mounted",
    );
    need(
        unit_setting(unit, "ExecStart")
            .is_some_and(|e| e.contains("nats-server") && e.contains("/etc/p2pchat/nats.conf")),
        uname,
        "does not run nats-server with /etc/p2pchat/nats.conf",
    );
    let (dname, d) = dropin;
    need(
        unit_list(d, "Wants")
            .iter()
            .any(|u| u == "p2pchat-nats.service")
            && unit_list(d, "After")
                .iter()
                .any(|u| u == "p2pchat-nats.service"),
        dname,
        "the coordinator does not want and start after p2pchat-nats.service",
    );
    let envs = unit_list(d, "EnvironmentFile");
    need(
        envs.iter().any(|e| e == "/etc/p2pchat/cluster.env")
            && envs
                .iter()
                .any(|e| e.trim_start_matches('-') == "/etc/p2pchat/database.env"),
        dname,
        "the coordinator does not read cluster.env (--nats, --node) and database.env (--database)",
    );
    need(
        unit_list(d, "ExecStartPre")
            .iter()
            .any(|e| e.contains("p2pchat-cluster-fetch")),
        dname,
        "nothing writes database.env from the SSM parameter before the coordinator starts",
    );
    out
}

// ------------------------------------------------------------------ database TLS

/// Where the node's fetch step puts the RDS CA bundle, and the URL's
/// `sslrootcert`.
pub const DATABASE_CA_FILE: &str = "/etc/p2pchat/rds-ca.pem";

/// Rule [`Rule::DatabaseTlsVerified`] over the configuration and the
/// cluster fetch script (`p2pchat-cluster-fetch`).
pub fn check_database_tls(body: &Body, fetch_script: (&str, &str)) -> Vec<Violation> {
    let rule = Rule::DatabaseTlsVerified;
    let mut out = Vec::new();
    let mut need = |ok: bool, location: &str, m: &str| {
        if !ok {
            out.push(violation(rule, location, m));
        }
    };
    need(
        matches!(
            variable_default(body, "database_require_tls"),
            Some(Expression::Bool(true))
        ),
        "variable.database_require_tls",
        "database_require_tls does not default to true",
    );
    let force_ssl = resources(body)
        .filter(|(ty, _, _)| *ty == "aws_db_parameter_group")
        .flat_map(|(_, _, b)| sub_blocks(b, "parameter"))
        .find(|p| string_is(attr(p.body(), "name"), "rds.force_ssl"))
        .and_then(|p| attr_text(p.body(), "value"));
    need(
        force_ssl.is_some_and(|v| references(&v, "var", "database_require_tls")),
        "aws_db_parameter_group",
        "no rds.force_ssl parameter set from var.database_require_tls",
    );
    let user_data: Vec<String> = instances(body)
        .filter(|(_, name, _)| name.contains("coordinator"))
        .filter_map(|(_, _, b)| attr_text(b, "user_data_base64").or(attr_text(b, "user_data")))
        .collect();
    need(
        user_data
            .iter()
            .any(|t| t.contains("\"verify-full\"") && references(t, "var", "database_require_tls")),
        "aws_instance.coordinator",
        "the coordinators' user data does not ask for sslmode=verify-full when \
         database_require_tls is true",
    );
    need(
        !user_data.iter().any(|t| t.contains("sslmode=require")),
        "aws_instance.coordinator",
        "the coordinators' user data says sslmode=require: encrypted, but nobody checks \
         who answers",
    );
    let (name, text) = fetch_script;
    let code = shell_code(text);
    need(
        code.contains(&format!("sslrootcert={DATABASE_CA_FILE}")),
        name,
        "the database URL names no sslrootcert=/etc/p2pchat/rds-ca.pem",
    );
    let commands = shell_commands(text);
    need(
        commands
            .iter()
            .any(|c| c.contains("retry curl") && c.contains("CA_URL")),
        name,
        "the RDS CA bundle is not downloaded (retry curl ... $P2PCHAT_DATABASE_CA_URL)",
    );
    need(
        code.contains("BEGIN CERTIFICATE"),
        name,
        "the downloaded CA bundle is not checked to hold a PEM certificate",
    );
    out
}
