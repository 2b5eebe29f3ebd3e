//! Static checks of `deploy/terraform`, with no AWS account and no network.
//!
//! `config` tests run every checker of `p2pchat_deploy_checks` against the
//! real `.tf` files (or against the directory named by `P2PCHAT_TF_DIR`, which
//! is how a broken copy is checked to fail); `snippets` tests run each checker
//! against a small inline configuration that breaks its rule, and one that
//! keeps it, so that a checker that stops reporting is caught.

use std::path::PathBuf;

use p2pchat_deploy_checks::*;

fn tf_dir() -> PathBuf {
    match std::env::var_os("P2PCHAT_TF_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("terraform"),
    }
}

fn assert_clean(what: &str, violations: Vec<Violation>) {
    let lines: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(
        lines.is_empty(),
        "{what}: {} violation(s):\n{}",
        lines.len(),
        lines.join("\n")
    );
}

mod config {
    use super::*;
    use hcl::{Body, Expression};

    fn body() -> Body {
        let dir = tf_dir();
        load_dir(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    }

    fn resource<'a>(body: &'a Body, ty: &str, name: &str) -> Option<&'a Body> {
        body.blocks()
            .filter(|b| b.identifier() == "resource")
            .find(|b| {
                b.labels().first().map(|l| l.as_str()) == Some(ty)
                    && b.labels().get(1).map(|l| l.as_str()) == Some(name)
            })
            .map(|b| b.body())
    }

    fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
        body.attributes().find(|a| a.key() == key).map(|a| a.expr())
    }

    #[test]
    fn every_tf_file_parses() {
        let files = tf_files(&tf_dir()).expect("listing .tf files");
        assert!(
            files.len() >= 5,
            "expected the deployment's .tf files, found {files:?}"
        );
        let body = body();
        assert!(
            body.blocks().count() > 20,
            "suspiciously small configuration"
        );
    }

    #[test]
    fn coordinator_admits_quic_on_udp_7070_and_not_tcp() {
        assert_clean(
            "coordinator QUIC",
            check_coordinator_quic_ingress(&body(), "aws_security_group.coordinator", 7070),
        );
    }

    #[test]
    fn clients_admit_the_peer_port_from_each_other_and_a_variable() {
        assert_clean(
            "peer port",
            check_peer_port_ingress(&body(), "aws_security_group.client", 7071),
        );
    }

    #[test]
    fn ssh_to_the_coordinator_only_from_the_operator() {
        assert_clean("ssh", check_ssh_access(&body(), SSH_ACCESS));
    }

    fn files_dir() -> PathBuf {
        tf_dir().join("files")
    }

    fn read(rel: &str) -> String {
        let path = files_dir().join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// Every script, template and unit under files/, as (name, text).
    fn files(suffixes: &[&str]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(files_dir()).expect("files/") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if suffixes.iter().any(|s| name.ends_with(s)) {
                let text = std::fs::read_to_string(&path).expect("reading a file");
                out.push((name, text));
            }
        }
        out.sort();
        assert!(!out.is_empty(), "no {suffixes:?} under files/");
        out
    }

    #[test]
    fn chat_users_get_their_own_accounts_not_ec2_user() {
        assert_clean("shared login", check_no_shared_login(&body()));
        assert_clean(
            "client setup",
            check_client_accounts_script(
                "p2pchat-client-setup.sh",
                &read("p2pchat-client-setup.sh"),
            ),
        );
    }

    #[test]
    fn the_service_account_has_a_fixed_uid_and_its_volume_a_recursive_chown() {
        let scripts = files(&[".sh", ".sh.tftpl"]);
        assert!(
            scripts.iter().any(|(_, t)| t.contains("useradd --system")),
            "no script creates the service account"
        );
        for (name, text) in scripts {
            assert_clean(&name, check_stable_service_owner(&name, &text));
        }
    }

    #[test]
    fn boot_config_changes_replace_the_instance() {
        assert_clean("boot config", check_boot_config_applied(&body()));
    }

    #[test]
    fn no_rule_admits_a_changing_public_ip() {
        assert_clean("ephemeral IPs", check_no_ephemeral_ip_rules(&body()));
    }

    #[test]
    fn extra_tags_leave_room_for_the_default_tags_on_s3_objects() {
        let body = body();
        assert!(
            body.blocks().any(|b| b.identifier() == "variable"
                && b.labels().first().map(|l| l.as_str()) == Some("extra_tags")),
            "no extra_tags variable"
        );
        assert_clean("extra tags", check_extra_tags_bounded(&body));
    }

    #[test]
    fn boot_downloads_retry_and_their_units_keep_trying() {
        for (name, text) in files(&[".sh", ".sh.tftpl"]) {
            assert_clean(&name, check_fetch_retries(&name, &text));
        }
        for unit in ["p2pchat-coordinator.service", "p2pchat-data-volume.service"] {
            assert_clean(unit, check_unit_retries(unit, &read(unit)));
        }
    }

    #[test]
    fn the_data_volume_is_mounted_by_a_retrying_unit() {
        let units = files(&[".service"]);
        let units: Vec<(&str, &str)> = units
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let user_data = read("coordinator-user-data.sh.tftpl");
        assert_clean(
            "data volume",
            check_data_volume_unit(
                ("coordinator-user-data.sh.tftpl", &user_data),
                &units,
                "p2pchat-coordinator.service",
            ),
        );
    }

    #[test]
    fn coordinator_metrics_go_from_loopback_to_cloudwatch() {
        assert_clean(
            "metrics",
            check_metrics_shipped(&body(), "aws_instance.coordinator"),
        );
        assert_clean(
            "metrics files",
            check_metrics_files(
                (
                    "coordinator-user-data.sh.tftpl",
                    &read("coordinator-user-data.sh.tftpl"),
                ),
                ("prometheus.yaml.tftpl", &read("prometheus.yaml.tftpl")),
                "p2pchat-monitoring.service",
            ),
        );
        let unit = "p2pchat-monitoring.service";
        assert_clean(unit, check_unit_retries(unit, &read(unit)));
        // The agent's configuration is JSON once Terraform has filled it in.
        let agent = read("cloudwatch-agent.json.tftpl");
        let mut rendered = agent.clone();
        for name in template_placeholders(&agent) {
            rendered = rendered.replace(&format!("${{{name}}}"), "dummy");
        }
        let json: serde_json::Value =
            serde_json::from_str(&rendered).expect("cloudwatch-agent.json.tftpl is JSON");
        let prometheus = &json["logs"]["metrics_collected"]["prometheus"];
        assert_eq!(
            prometheus["prometheus_config_path"], "/etc/p2pchat/prometheus.yaml",
            "the agent reads the scrape configuration the user data writes"
        );
        assert!(read("coordinator-user-data.sh.tftpl").contains("/etc/p2pchat/prometheus.yaml"));
    }

    #[test]
    fn an_alarm_fires_when_the_coordinator_is_down_or_unready() {
        assert_clean("alarm", check_readiness_alarm(&body()));
        let script = "p2pchat-readiness.sh";
        assert_clean(script, check_readiness_reporter(script, &read(script)));
        let timer = read("p2pchat-readiness.timer");
        assert_eq!(unit_setting(&timer, "OnUnitActiveSec"), Some("1min"));
        let user_data = read("coordinator-user-data.sh.tftpl");
        assert!(
            shell_code(&user_data).contains("p2pchat-readiness.timer"),
            "the user data enables the readiness timer"
        );
    }

    #[test]
    fn the_data_volume_is_snapshotted_daily_with_a_retention_variable() {
        let body = body();
        assert_clean(
            "snapshots",
            check_data_volume_snapshots(&body, "aws_ebs_volume.coordinator_data"),
        );
        assert!(
            body.blocks().any(|b| b.identifier() == "variable"
                && b.labels().first().map(|l| l.as_str()) == Some("snapshot_retention_count")),
            "no snapshot_retention_count variable"
        );
    }

    #[test]
    fn the_provider_lock_file_is_committed() {
        let lock = std::fs::read_to_string(tf_dir().join(".terraform.lock.hcl")).ok();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let gitignore = std::fs::read_to_string(root.join(".gitignore")).unwrap_or_default();
        assert_clean(
            "lock file",
            check_provider_lock(&body(), lock.as_deref(), &gitignore),
        );
    }

    #[test]
    fn no_ingress_from_a_literal_open_cidr() {
        assert_clean("open ingress", check_no_literal_open_ingress(&body()));
    }

    #[test]
    fn imdsv2_is_required_everywhere() {
        let body = body();
        assert!(
            body.blocks().any(|b| b.identifier() == "resource"
                && b.labels().first().map(|l| l.as_str()) == Some("aws_instance")),
            "no aws_instance at all"
        );
        assert_clean("IMDSv2", check_imdsv2_required(&body));
    }

    #[test]
    fn every_volume_is_encrypted() {
        assert_clean("encryption", check_encrypted_volumes(&body()));
    }

    #[test]
    fn no_key_material_in_user_data() {
        assert_clean("user data", check_no_keys_in_user_data(&body()));
    }

    #[test]
    fn user_data_templates_hold_no_key_and_match_their_variables() {
        let body = body();
        let calls = user_data_template_calls(&body);
        assert!(
            calls.len() >= 2,
            "expected templated user data for both roles: {calls:?}"
        );
        for call in calls {
            let rel = call
                .path
                .trim_matches('"')
                .trim_start_matches("${path.module}/")
                .to_string();
            let path = tf_dir().join(&rel);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: reading {}: {e}", call.location, path.display()));
            assert_clean(&call.location, check_user_data_template(&rel, &text));
            let mut placeholders = template_placeholders(&text);
            let mut vars = call.vars.clone();
            placeholders.sort();
            vars.sort();
            assert_eq!(
                placeholders, vars,
                "{}: the template's placeholders and the variables passed differ",
                call.location
            );
        }
    }

    #[test]
    fn the_ca_key_is_never_referenced() {
        assert_clean("CA key", check_ca_key_never_referenced(&body()));
    }

    #[test]
    fn every_variable_has_a_description_and_a_type() {
        assert_clean("variables", check_variables_documented(&body()));
    }

    #[test]
    fn everything_is_tagged() {
        let body = body();
        // The deployment's choice: default_tags on the provider, Name per resource.
        assert!(
            has_default_tags(&body),
            "the aws provider sets no default_tags"
        );
        assert_clean("tags", check_tags_everywhere(&body));
        assert_clean("Name tags", check_name_tags(&body));
    }

    #[test]
    fn the_coordinator_key_goes_to_a_secure_string_parameter_only() {
        let body = body();
        let param = resource(&body, "aws_ssm_parameter", "coordinator_key")
            .expect("aws_ssm_parameter.coordinator_key");
        assert!(
            matches!(attr(param, "type"), Some(Expression::String(s)) if s == "SecureString"),
            "the key parameter must be a SecureString"
        );
        assert!(
            attr(param, "value").is_none() && attr(param, "insecure_value").is_none(),
            "the key must go through the write-only value_wo, not into the state"
        );
        assert!(attr(param, "value_wo").is_some(), "value_wo missing");
    }

    #[test]
    fn the_bucket_blocks_all_public_access() {
        let body = body();
        let block = resource(&body, "aws_s3_bucket_public_access_block", "artifacts")
            .expect("aws_s3_bucket_public_access_block.artifacts");
        for key in [
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        ] {
            assert!(
                matches!(attr(block, key), Some(Expression::Bool(true))),
                "{key} must be true"
            );
        }
        assert!(
            resource(
                &body,
                "aws_s3_bucket_server_side_encryption_configuration",
                "artifacts"
            )
            .is_some(),
            "the bucket must have server-side encryption"
        );
    }

    #[test]
    fn instance_roles_read_named_objects_and_one_parameter_only() {
        let body = body();
        let docs: Vec<String> = body
            .blocks()
            .filter(|b| {
                b.identifier() == "data"
                    && b.labels().first().map(|l| l.as_str()) == Some("aws_iam_policy_document")
                    && !matches!(
                        b.labels().get(1).map(|l| l.as_str()),
                        Some("ec2_assume" | "ssm_session" | "dlm_assume")
                    )
            })
            .map(|b| hcl::format::to_string(b).expect("formatting a policy document"))
            .collect();
        assert_eq!(
            docs.len(),
            4,
            "expected each instance role's artifact policy, the coordinator's \
             monitoring policy and the snapshot role's policy"
        );
        for doc in docs {
            assert!(
                !doc.contains("arn}/*") && !doc.contains("\"s3:*\"") && !doc.contains("\"ssm:*\""),
                "policy grants a wildcard:\n{doc}"
            );
        }
        assert!(
            !body.blocks().any(|b| b.identifier() == "resource"
                && b.labels().first().map(|l| l.as_str())
                    == Some("aws_iam_role_policy_attachment")),
            "no managed policies: the inline policies are the whole grant"
        );
    }

    #[test]
    fn one_coordinator_is_the_default_and_creates_nothing_of_the_cluster() {
        assert_clean(
            "single node",
            check_single_node_default(&body(), "aws_instance.coordinator", 6222),
        );
    }

    #[test]
    fn the_cluster_database_is_private_encrypted_and_backed_up() {
        assert_clean("database", check_database_private(&body()));
    }

    #[test]
    fn cluster_ports_are_open_only_between_the_cluster_machines() {
        let body = body();
        assert_eq!(
            variable_default(&body, "nats_cluster_port").map(|e| expr_text(&e)),
            Some("6222".to_string())
        );
        assert_clean(
            "cluster ports",
            check_cluster_ports(&body, "aws_security_group.coordinator", 6222),
        );
    }

    #[test]
    fn the_database_password_goes_to_rds_and_ssm_only() {
        let body = body();
        assert_clean("password", check_database_password(&body));
        for call in user_data_template_calls(&body) {
            let rel = call
                .path
                .trim_matches('"')
                .trim_start_matches("${path.module}/")
                .to_string();
            let text = std::fs::read_to_string(tf_dir().join(&rel)).expect("template");
            assert_clean(&rel, check_template_has_no_password(&rel, &text));
        }
        let cluster = read("coordinator-cluster.sh.tftpl");
        assert_clean(
            "cluster template",
            check_template_has_no_password("coordinator-cluster.sh.tftpl", &cluster),
        );
        // The instance builds the URL into a root-only file, not a command line.
        let fetch = read("p2pchat-cluster-fetch.sh");
        assert!(
            shell_code(&fetch).contains("install -m 0600 -o root -g root \"$work/database.env\"")
        );
        for (name, text) in files(&[".service", ".conf", ".tftpl"]) {
            assert!(
                !text.contains("postgres://"),
                "{name} spells a database URL: it is built on the instance"
            );
        }
    }

    #[test]
    fn the_database_connection_checks_the_server_against_the_rds_ca() {
        let fetch = read("p2pchat-cluster-fetch.sh");
        assert_clean(
            "database TLS",
            check_database_tls(&body(), ("p2pchat-cluster-fetch.sh", &fetch)),
        );
        // The URL the script writes, for the default settings.
        let code = shell_code(&fetch);
        assert!(code.contains(
            "options=\"?sslmode=$P2PCHAT_DATABASE_SSLMODE&sslrootcert=/etc/p2pchat/rds-ca.pem\""
        ));
        // Without the bundle and with no earlier copy, the start fails.
        assert!(code.contains("none is installed"), "{code}");
    }

    #[test]
    fn nats_runs_on_every_node_before_the_coordinator() {
        assert_clean(
            "nats",
            check_nats_files(
                (
                    "coordinator-cluster.sh.tftpl",
                    &read("coordinator-cluster.sh.tftpl"),
                ),
                ("p2pchat-nats.service", &read("p2pchat-nats.service")),
                (
                    "p2pchat-coordinator-cluster.conf",
                    &read("p2pchat-coordinator-cluster.conf"),
                ),
            ),
        );
        let unit = "p2pchat-nats.service";
        assert_clean(unit, check_unit_retries(unit, &read(unit)));
        for script in ["p2pchat-cluster-fetch.sh", "coordinator-cluster.sh.tftpl"] {
            assert_clean(script, check_fetch_retries(script, &read(script)));
        }
    }

    #[test]
    fn a_single_coordinator_renders_the_user_data_it_had_before_the_cluster() {
        // The cluster part is appended to the end of an existing line and is
        // "" for one coordinator (checked by SingleNodeDefault), so removing
        // its placeholder gives back the template as it was: an existing
        // single coordinator is not replaced by this change.
        let now = read("coordinator-user-data.sh.tftpl");
        let before = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/before-issue-12/files/coordinator-user-data.sh.tftpl"),
        )
        .expect("fixture");
        assert_eq!(now.matches("${cluster_setup}").count(), 1);
        assert!(
            now.contains(".service${cluster_setup}\n"),
            "the placeholder must end an existing line, not make a new one"
        );
        assert_eq!(now.replace("${cluster_setup}", ""), before);
    }

    #[test]
    fn the_elastic_ip_is_its_own_resource() {
        let body = body();
        assert!(resource(&body, "aws_eip", "coordinator").is_some());
        let assoc = resource(&body, "aws_eip_association", "coordinator")
            .expect("aws_eip_association.coordinator");
        let instance = attr(assoc, "instance_id")
            .map(expr_text)
            .unwrap_or_default();
        assert!(instance.contains("aws_instance.coordinator"), "{instance}");
        let eip = resource(&body, "aws_eip", "coordinator").expect("aws_eip.coordinator");
        assert!(
            attr(eip, "instance").is_none(),
            "the EIP must not point at the instance, or step 1 would create it"
        );
    }
}

mod snippets {
    use super::*;

    fn parse(text: &str) -> hcl::Body {
        hcl::parse(text).expect("snippet parses")
    }

    fn rules(v: &[Violation]) -> Vec<Rule> {
        v.iter().map(|v| v.rule).collect()
    }

    const COORDINATOR_UDP: &str = r#"
        variable "coordinator_port" {
          type    = number
          default = 7070
        }
        resource "aws_security_group" "coordinator" {}
        resource "aws_vpc_security_group_ingress_rule" "quic" {
          security_group_id = aws_security_group.coordinator.id
          ip_protocol       = "udp"
          from_port         = var.coordinator_port
          to_port           = var.coordinator_port
          cidr_ipv4         = "10.0.0.0/8"
        }
    "#;

    const MONITORING: &str = r#"
        locals {
          snapshot_tag     = { Snapshots = "p2pchat-daily" }
          readiness_metric = "CoordinatorReady"
        }
        resource "aws_cloudwatch_log_group" "metrics" {
          name              = "/p2pchat/metrics"
          retention_in_days = var.metrics_log_retention_days
        }
        resource "aws_instance" "coordinator" {
          user_data_base64 = base64gzip(templatefile("ud.sh.tftpl", {
            agent = templatefile("agent.json.tftpl", { log_group = aws_cloudwatch_log_group.metrics.name })
          }))
        }
        resource "aws_cloudwatch_metric_alarm" "unready" {
          metric_name         = local.readiness_metric
          comparison_operator = "LessThanThreshold"
          threshold           = 1
          treat_missing_data  = "breaching"
          alarm_actions       = var.alarm_actions
        }
        resource "aws_ebs_volume" "data" {
          tags = merge({ Name = "data" }, local.snapshot_tag)
        }
        resource "aws_dlm_lifecycle_policy" "data" {
          state = "ENABLED"
          policy_details {
            resource_types = ["VOLUME"]
            target_tags    = local.snapshot_tag
            schedule {
              name = "daily"
              create_rule {
                interval      = 24
                interval_unit = "HOURS"
              }
              retain_rule {
                count = var.snapshot_retention_count
              }
            }
          }
        }
    "#;

    #[test]
    fn monitoring_snippet_passes_and_each_rule_reports_its_breach() {
        let ok = parse(MONITORING);
        assert_clean(
            "metrics",
            check_metrics_shipped(&ok, "aws_instance.coordinator"),
        );
        assert_clean("alarm", check_readiness_alarm(&ok));
        assert_clean(
            "snapshots",
            check_data_volume_snapshots(&ok, "aws_ebs_volume.data"),
        );

        let forever =
            parse(&MONITORING.replace("retention_in_days = var.metrics_log_retention_days", ""));
        let v = check_metrics_shipped(&forever, "aws_instance.coordinator");
        assert_eq!(rules(&v), vec![Rule::MetricsShipped], "{v:?}");
        let unnamed = parse(&MONITORING.replace("aws_cloudwatch_log_group.metrics.name", "\"x\""));
        let v = check_metrics_shipped(&unnamed, "aws_instance.coordinator");
        assert_eq!(rules(&v), vec![Rule::MetricsShipped], "{v:?}");

        let waits = parse(&MONITORING.replace("\"breaching\"", "\"notBreaching\""));
        let v = check_readiness_alarm(&waits);
        assert_eq!(rules(&v), vec![Rule::ReadinessAlarm], "{v:?}");
        let silent = parse(&MONITORING.replace("alarm_actions       = var.alarm_actions", ""));
        let v = check_readiness_alarm(&silent);
        assert_eq!(rules(&v), vec![Rule::ReadinessAlarm], "{v:?}");
        let other = parse(&MONITORING.replace("\"CoordinatorReady\"", "\"CPUUtilization\""));
        let v = check_readiness_alarm(&other);
        assert_eq!(rules(&v), vec![Rule::ReadinessAlarm], "{v:?}");

        let untagged = parse(&MONITORING.replace(
            "merge({ Name = \"data\" }, local.snapshot_tag)",
            "{ Name = \"data\" }",
        ));
        let v = check_data_volume_snapshots(&untagged, "aws_ebs_volume.data");
        assert_eq!(rules(&v), vec![Rule::DataVolumeSnapshots], "{v:?}");
        let weekly = parse(&MONITORING.replace("interval      = 24", "interval      = 168"));
        let v = check_data_volume_snapshots(&weekly, "aws_ebs_volume.data");
        assert_eq!(rules(&v), vec![Rule::DataVolumeSnapshots], "{v:?}");
        let fixed = parse(&MONITORING.replace("var.snapshot_retention_count", "3"));
        let v = check_data_volume_snapshots(&fixed, "aws_ebs_volume.data");
        assert_eq!(rules(&v), vec![Rule::DataVolumeSnapshots], "{v:?}");
        let off = parse(&MONITORING.replace("\"ENABLED\"", "\"DISABLED\""));
        let v = check_data_volume_snapshots(&off, "aws_ebs_volume.data");
        assert_eq!(rules(&v), vec![Rule::DataVolumeSnapshots], "{v:?}");
    }

    #[test]
    fn metrics_files_and_the_readiness_reporter_are_checked() {
        let ud = "cat >/etc/p2pchat/coordinator.env <<'EOF'\nP2PCHAT_COORDINATOR_METRICS=127.0.0.1:${metrics_port}\nEOF\nsystemctl enable p2pchat-monitoring.service\n";
        let scrape = "      - targets: [\"127.0.0.1:${metrics_port}\"]\n";
        assert_clean(
            "metrics files",
            check_metrics_files(("ud", ud), ("scrape", scrape), "p2pchat-monitoring.service"),
        );
        let open = ud.replace("127.0.0.1:", "0.0.0.0:");
        let v = check_metrics_files(
            ("ud", &open),
            ("scrape", scrape),
            "p2pchat-monitoring.service",
        );
        assert_eq!(
            rules(&v),
            vec![Rule::MetricsShipped; 2],
            "open and not scraped: {v:?}"
        );
        let v = check_metrics_files(("ud", ""), ("scrape", scrape), "p2pchat-monitoring.service");
        assert_eq!(rules(&v), vec![Rule::MetricsShipped; 2], "{v:?}");

        let reporter = "curl -fsS http://127.0.0.1:9090/readyz && ready=1\naws cloudwatch put-metric-data --metric-name CoordinatorReady --value \"$ready\"\n";
        assert_clean("reporter", check_readiness_reporter("r", reporter));
        let v = check_readiness_reporter("r", &reporter.replace("/readyz", "/healthz"));
        assert_eq!(rules(&v), vec![Rule::ReadinessAlarm], "{v:?}");
    }

    #[test]
    fn coordinator_udp_rule_passes_and_its_absence_or_tcp_is_reported() {
        let ok = parse(COORDINATOR_UDP);
        assert_clean(
            "good snippet",
            check_coordinator_quic_ingress(&ok, "aws_security_group.coordinator", 7070),
        );

        let tcp = parse(&COORDINATOR_UDP.replace("\"udp\"", "\"tcp\""));
        let v = check_coordinator_quic_ingress(&tcp, "aws_security_group.coordinator", 7070);
        assert_eq!(
            rules(&v),
            vec![Rule::CoordinatorQuicIngress, Rule::CoordinatorQuicIngress],
            "{v:?}"
        );

        let wrong_port = parse(&COORDINATOR_UDP.replace("default = 7070", "default = 7000"));
        let v = check_coordinator_quic_ingress(&wrong_port, "aws_security_group.coordinator", 7070);
        assert_eq!(rules(&v), vec![Rule::CoordinatorQuicIngress], "{v:?}");

        let inline_tcp = parse(
            r#"resource "aws_security_group" "coordinator" {
                 ingress {
                   protocol    = "tcp"
                   from_port   = 7070
                   to_port     = 7070
                   cidr_blocks = ["10.0.0.0/8"]
                 }
               }"#,
        );
        let v = check_coordinator_quic_ingress(&inline_tcp, "aws_security_group.coordinator", 7070);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    const PEER: &str = r#"
        resource "aws_vpc_security_group_ingress_rule" "from_clients" {
          security_group_id            = aws_security_group.client.id
          ip_protocol                  = "udp"
          from_port                    = 7071
          to_port                      = 7071
          referenced_security_group_id = aws_security_group.client.id
        }
        resource "aws_vpc_security_group_ingress_rule" "from_cidrs" {
          for_each          = toset(var.peer_allowed_cidrs)
          security_group_id = aws_security_group.client.id
          ip_protocol       = "udp"
          from_port         = 7071
          to_port           = 7071
          cidr_ipv4         = each.value
        }
    "#;

    #[test]
    fn peer_rules_pass_and_a_missing_source_is_reported() {
        assert_clean(
            "good snippet",
            check_peer_port_ingress(&parse(PEER), "aws_security_group.client", 7071),
        );
        let no_group = parse(&PEER.replace(
            "referenced_security_group_id = aws_security_group.client.id",
            "cidr_ipv4 = \"10.0.0.0/8\"",
        ));
        let v = check_peer_port_ingress(&no_group, "aws_security_group.client", 7071);
        assert_eq!(rules(&v), vec![Rule::PeerPortIngress], "{v:?}");

        let no_var =
            parse(&PEER.replace("toset(var.peer_allowed_cidrs)", "toset([\"10.0.0.0/8\"])"));
        let v = check_peer_port_ingress(&no_var, "aws_security_group.client", 7071);
        assert_eq!(rules(&v), vec![Rule::PeerPortIngress], "{v:?}");

        let tcp = parse(&PEER.replace("\"udp\"", "\"tcp\""));
        assert_eq!(
            check_peer_port_ingress(&tcp, "aws_security_group.client", 7071).len(),
            2
        );
    }

    const SSH: &str = r#"
        resource "aws_security_group_rule" "ssh" {
          type              = "ingress"
          security_group_id = aws_security_group.client.id
          protocol          = "tcp"
          from_port         = 22
          to_port           = 22
          cidr_blocks       = var.user_ssh_cidrs
        }
        resource "aws_vpc_security_group_ingress_rule" "coordinator_ssh" {
          for_each          = toset(var.operator_ssh_cidrs)
          security_group_id = aws_security_group.coordinator.id
          ip_protocol       = "tcp"
          from_port         = 22
          to_port           = 22
          cidr_ipv4         = each.value
        }
    "#;

    #[test]
    fn ssh_from_anything_but_the_groups_own_variables_is_reported() {
        assert_clean("good snippet", check_ssh_access(&parse(SSH), SSH_ACCESS));

        // The finding: the users' CIDRs also open the coordinator's SSH.
        let shared = parse(&SSH.replace("var.operator_ssh_cidrs", "var.user_ssh_cidrs"));
        let v = check_ssh_access(&shared, SSH_ACCESS);
        assert_eq!(rules(&v), vec![Rule::SshAccessSeparated], "{v:?}");
        assert!(v[0].location.contains("coordinator_ssh"), "{v:?}");

        let other_var = parse(&SSH.replace("var.user_ssh_cidrs", "var.user_ssh_cidrs_all"));
        let v = check_ssh_access(&other_var, SSH_ACCESS);
        assert_eq!(rules(&v), vec![Rule::SshAccessSeparated], "{v:?}");

        let wide_range = parse(
            &SSH.replacen("from_port         = 22", "from_port = 0", 1)
                .replacen("to_port           = 22", "to_port = 1024", 1)
                .replace("var.user_ssh_cidrs", "var.peer_allowed_cidrs"),
        );
        let v = check_ssh_access(&wide_range, SSH_ACCESS);
        assert_eq!(rules(&v), vec![Rule::SshAccessSeparated], "{v:?}");

        let all_protocols = parse(&format!(
            r#"{SSH}
               resource "aws_vpc_security_group_ingress_rule" "all" {{
                 security_group_id = aws_security_group.client.id
                 ip_protocol       = "-1"
                 cidr_ipv4         = "10.0.0.0/8"
               }}"#
        ));
        let v = check_ssh_access(&all_protocols, SSH_ACCESS);
        assert!(rules(&v).contains(&Rule::SshAccessSeparated), "{v:?}");

        let none = parse("resource \"aws_security_group\" \"x\" {}");
        assert_eq!(check_ssh_access(&none, SSH_ACCESS).len(), 2);
    }

    #[test]
    fn a_literal_open_ingress_is_reported_but_egress_and_routes_are_not() {
        let open = parse(&SSH.replace("var.user_ssh_cidrs", "[\"0.0.0.0/0\"]"));
        let v = check_no_literal_open_ingress(&open);
        assert_eq!(rules(&v), vec![Rule::NoLiteralOpenIngress], "{v:?}");

        let open_v6 = parse(
            r#"resource "aws_vpc_security_group_ingress_rule" "x" {
                 security_group_id = aws_security_group.client.id
                 ip_protocol       = "udp"
                 from_port         = 1
                 to_port           = 1
                 cidr_ipv6         = "::/0"
               }"#,
        );
        assert_eq!(check_no_literal_open_ingress(&open_v6).len(), 1);

        let egress = parse(
            r#"resource "aws_vpc_security_group_egress_rule" "all" {
                 security_group_id = aws_security_group.client.id
                 ip_protocol       = "-1"
                 cidr_ipv4         = "0.0.0.0/0"
               }
               resource "aws_route_table" "public" {
                 route {
                   cidr_block = "0.0.0.0/0"
                   gateway_id = aws_internet_gateway.main.id
                 }
               }"#,
        );
        assert_clean("egress and routes", check_no_literal_open_ingress(&egress));
    }

    const INSTANCE: &str = r#"
        resource "aws_instance" "x" {
          ami = "ami-1"
          metadata_options {
            http_tokens = "required"
          }
          root_block_device {
            encrypted = true
          }
          user_data = templatefile("${path.module}/files/boot.sh.tftpl", {
            bucket = aws_s3_bucket.artifacts.id
          })
        }
    "#;

    #[test]
    fn imdsv1_is_reported() {
        assert_clean("good snippet", check_imdsv2_required(&parse(INSTANCE)));
        let optional = parse(&INSTANCE.replace("\"required\"", "\"optional\""));
        assert_eq!(
            rules(&check_imdsv2_required(&optional)),
            vec![Rule::Imdsv2Required]
        );
        let missing = parse(
            r#"resource "aws_launch_template" "x" {
                 image_id = "ami-1"
               }"#,
        );
        assert_eq!(
            rules(&check_imdsv2_required(&missing)),
            vec![Rule::Imdsv2Required]
        );
    }

    #[test]
    fn unencrypted_or_undeclared_volumes_are_reported() {
        assert_clean("good snippet", check_encrypted_volumes(&parse(INSTANCE)));
        let off = parse(&INSTANCE.replace("encrypted = true", "encrypted = false"));
        assert_eq!(
            rules(&check_encrypted_volumes(&off)),
            vec![Rule::EncryptedVolumes]
        );
        let no_root = parse(
            r#"resource "aws_instance" "x" {
                 ami = "ami-1"
               }"#,
        );
        assert_eq!(check_encrypted_volumes(&no_root).len(), 1);
        let volume = parse(
            r#"resource "aws_ebs_volume" "data" {
                 size = 1
               }
               resource "aws_launch_template" "t" {
                 block_device_mappings {
                   ebs {
                     encrypted = "false"
                   }
                 }
               }"#,
        );
        assert_eq!(check_encrypted_volumes(&volume).len(), 2);
    }

    #[test]
    fn key_material_in_user_data_is_reported() {
        assert_clean("good snippet", check_no_keys_in_user_data(&parse(INSTANCE)));

        let direct = parse(
            r#"resource "aws_instance" "x" {
                 user_data = file("${path.module}/certs/coordinator.key")
               }"#,
        );
        assert_eq!(
            rules(&check_no_keys_in_user_data(&direct)),
            vec![Rule::NoKeysInUserData]
        );

        let through_var = parse(&INSTANCE.replace(
            "bucket = aws_s3_bucket.artifacts.id",
            "key = file(var.coordinator_key_path)",
        ));
        assert!(!check_no_keys_in_user_data(&through_var).is_empty());

        let through_locals = parse(&format!(
            r#"variable "coordinator_key_path" {{
                 type        = string
                 description = "x"
               }}
               locals {{
                 key_pem = file(var.coordinator_key_path)
                 wrapped = "x${{local.key_pem}}"
               }}
               {}"#,
            INSTANCE.replace("bucket = aws_s3_bucket.artifacts.id", "key = local.wrapped")
        ));
        let v = check_no_keys_in_user_data(&through_locals);
        assert!(
            v.iter().any(|v| v.message.contains("local.wrapped")),
            "{v:?}"
        );

        let literal = parse(
            "resource \"aws_instance\" \"x\" {\n  user_data = \"-----BEGIN PRIVATE KEY-----\"\n}",
        );
        assert_eq!(check_no_keys_in_user_data(&literal).len(), 1);

        let param = parse(&INSTANCE.replace(
            "bucket = aws_s3_bucket.artifacts.id",
            "key = aws_ssm_parameter.coordinator_key.value",
        ));
        assert_eq!(check_no_keys_in_user_data(&param).len(), 1);

        assert_eq!(
            check_user_data_template("t", "echo '-----BEGIN PRIVATE KEY-----'").len(),
            1
        );
        assert!(check_user_data_template("t", "echo hello").is_empty());
    }

    #[test]
    fn a_ca_key_anywhere_is_reported() {
        let guarded = parse(
            r#"variable "coordinator_key_path" {
                 type        = string
                 description = "x"
                 validation {
                   condition     = basename(var.coordinator_key_path) != "ca.key"
                   error_message = "never the CA key"
                 }
               }"#,
        );
        assert_clean("a guard", check_ca_key_never_referenced(&guarded));

        let uploaded = parse(
            r#"resource "aws_s3_object" "ca_key" {
                 source = "pki/ca.key"
               }"#,
        );
        assert_eq!(
            rules(&check_ca_key_never_referenced(&uploaded)),
            vec![Rule::CaKeyNeverReferenced]
        );
        let variable = parse(
            r#"variable "ca_key_path" {
                 type        = string
                 description = "x"
               }"#,
        );
        assert_eq!(check_ca_key_never_referenced(&variable).len(), 1);
        let local = parse("locals {\n  k = file(\"/home/op/pki/ca.key\")\n}");
        assert_eq!(check_ca_key_never_referenced(&local).len(), 1);
    }

    #[test]
    fn undocumented_or_untyped_variables_are_reported() {
        let good = parse(
            r#"variable "a" {
                 description = "A."
                 type        = string
               }"#,
        );
        assert_clean("good snippet", check_variables_documented(&good));
        let bad = parse(
            r#"variable "a" {
                 type = string
               }
               variable "b" {
                 description = ""
               }"#,
        );
        assert_eq!(
            rules(&check_variables_documented(&bad)),
            vec![Rule::VariablesDocumented; 3]
        );
    }

    #[test]
    fn untagged_resources_are_reported() {
        let with_defaults = parse(
            r#"provider "aws" {
                 default_tags {
                   tags = local.common_tags
                 }
               }
               resource "aws_vpc" "main" {
                 tags = { Name = "x" }
               }"#,
        );
        assert_clean("good snippet", check_tags_everywhere(&with_defaults));
        assert_clean("good snippet", check_name_tags(&with_defaults));

        let without = parse(
            r#"provider "aws" {
                 region = "us-east-1"
               }
               resource "aws_vpc" "main" {}
               resource "aws_eip_association" "a" {}
               resource "aws_new_thing" "n" {}"#,
        );
        let v = check_tags_everywhere(&without);
        assert_eq!(rules(&v), vec![Rule::TagsEverywhere; 2], "{v:?}");
        assert_eq!(rules(&check_name_tags(&without)), vec![Rule::NameTags]);

        let unnamed = parse(
            r#"resource "aws_vpc" "main" {
                 tags = { Role = "x" }
               }"#,
        );
        assert_eq!(check_name_tags(&unnamed).len(), 1);
    }

    #[test]
    fn template_placeholders_are_found_once_and_escapes_skipped() {
        let text = "a=${one}\nb=$${not_me}\nc=$PLAIN\nd=${two} e=${one}\n";
        assert_eq!(template_placeholders(text), vec!["one", "two"]);
    }
    #[test]
    fn ec2_user_logins_and_shared_accounts_are_reported() {
        let output = parse(
            r#"output "peer_commands" {
                 value = [for c in aws_instance.client : "ssh ec2-user@${c.public_ip} peer"]
               }"#,
        );
        assert_eq!(
            rules(&check_no_shared_login(&output)),
            vec![Rule::PerUserAccounts]
        );
        let good =
            "useradd --create-home \"$name\"\ninstall -d -m 0700 \"$home/.local/share/p2pchat\"\n";
        assert_clean("good script", check_client_accounts_script("s", good));
        assert_eq!(
            check_client_accounts_script("s", "# useradd in a comment\n").len(),
            2
        );
        let sudo = format!("{good}usermod -aG wheel \"$name\"\n");
        assert_eq!(check_client_accounts_script("s", &sudo).len(), 1);
    }

    #[test]
    fn a_floating_uid_or_a_shallow_chown_is_reported() {
        let good = "useradd --system --uid 3470 --gid p2pchat \\\n  --shell /sbin/nologin p2pchat\nchown -R p2pchat:p2pchat \"$DATA_DIR\"\n";
        assert_clean("good script", check_stable_service_owner("s", good));
        let floating = good.replace("--uid 3470 ", "");
        assert_eq!(
            rules(&check_stable_service_owner("s", &floating)),
            vec![Rule::StableServiceOwner]
        );
        let shallow = good.replace("chown -R", "chown");
        assert_eq!(check_stable_service_owner("s", &shallow).len(), 1);
        // A chown of anything else, or a normal user, is not the concern.
        assert_clean(
            "other",
            check_stable_service_owner("s", "useradd -m alice\nchown root /etc/x\n"),
        );
    }

    #[test]
    fn user_data_that_would_not_rerun_is_reported() {
        let keep = parse(
            r#"resource "aws_instance" "c" {
                 user_data                   = "x"
                 user_data_replace_on_change = false
               }"#,
        );
        assert_eq!(
            rules(&check_boot_config_applied(&keep)),
            vec![Rule::BootConfigApplied]
        );
        let replace = parse(
            r#"resource "aws_instance" "c" {
                 user_data                   = "x"
                 user_data_replace_on_change = true
               }"#,
        );
        assert_clean("replace", check_boot_config_applied(&replace));
    }

    #[test]
    fn rules_on_changing_public_ips_are_reported_even_through_locals() {
        let bad = parse(
            r#"locals {
                 ips   = { for i, c in aws_instance.client : tostring(i) => "${c.public_ip}/32" }
                 again = local.ips
               }
               resource "aws_vpc_security_group_ingress_rule" "r" {
                 for_each          = local.again
                 security_group_id = aws_security_group.client.id
                 ip_protocol       = "udp"
                 from_port         = 1
                 to_port           = 1
                 cidr_ipv4         = each.value
               }"#,
        );
        let v = check_no_ephemeral_ip_rules(&bad);
        assert_eq!(rules(&v), vec![Rule::NoEphemeralIpRules], "{v:?}");
        let eip = parse(
            r#"locals {
                 ips = { for i, e in aws_eip.client : tostring(i) => "${e.public_ip}/32" }
               }
               resource "aws_vpc_security_group_ingress_rule" "r" {
                 for_each  = local.ips
                 cidr_ipv4 = each.value
               }"#,
        );
        assert_clean("EIPs", check_no_ephemeral_ip_rules(&eip));
    }

    const TAGS: &str = r#"
        provider "aws" {
          default_tags {
            tags = local.common_tags
          }
        }
        locals {
          common_tags = merge({ A = "a", B = "b", C = "c", D = "d" }, var.extra_tags)
        }
        variable "extra_tags" {
          type        = map(string)
          description = "x"
          validation {
            condition     = length(var.extra_tags) <= 5
            error_message = "x"
          }
        }
    "#;

    #[test]
    fn unbounded_extra_tags_are_reported() {
        assert_clean("good snippet", check_extra_tags_bounded(&parse(TAGS)));
        let six = parse(&TAGS.replace("<= 5", "<= 6"));
        assert_eq!(
            rules(&check_extra_tags_bounded(&six)),
            vec![Rule::ExtraTagsBounded]
        );
        let strict = parse(&TAGS.replace("<= 5", "< 6"));
        assert_clean("< 6", check_extra_tags_bounded(&strict));
        let none = parse(&TAGS.replace("length(var.extra_tags) <= 5", "true"));
        assert_eq!(check_extra_tags_bounded(&none).len(), 1);
        // A fifth default tag leaves room for four.
        let more = parse(&TAGS.replace("D = \"d\"", "D = \"d\", E = \"e\""));
        assert_eq!(check_extra_tags_bounded(&more).len(), 1);
    }

    #[test]
    fn unretried_downloads_and_units_that_give_up_are_reported() {
        let good = "retry aws s3 cp \"s3://b/o\" x\nif ! retry aws ssm get-parameter \\\n  --name p >k; then exit 1; fi\n";
        assert_clean("good script", check_fetch_retries("s", good));
        let bare = "aws s3 cp \"s3://b/o\" x\nif ! aws ssm get-parameter --name p >k; then exit 1; fi\n# aws s3 cp in a comment\n";
        assert_eq!(
            rules(&check_fetch_retries("s", bare)),
            vec![Rule::FetchRetries; 2]
        );
        let unit = "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\n";
        assert_clean("good unit", check_unit_retries("u", unit));
        assert_eq!(
            check_unit_retries("u", "[Service]\nRestart=on-failure\n").len(),
            1
        );
        assert_eq!(check_unit_retries("u", "[Service]\n").len(), 2);
    }

    #[test]
    fn a_volume_set_up_only_by_user_data_is_reported() {
        let volume = "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/usr/local/sbin/p2pchat-data-volume\nRestart=on-failure\n";
        let service = "[Unit]\nWants=p2pchat-data-volume.service\nAfter=p2pchat-data-volume.service\n[Service]\nExecStartPre=/usr/bin/mountpoint -q /var/lib/p2pchat\n";
        let units = [
            ("v.service", volume),
            ("p2pchat-data-volume.service", volume),
        ];
        let units_ok = [("p2pchat-data-volume.service", volume), ("svc", service)];
        assert_clean(
            "good",
            check_data_volume_unit(("ud", "install -d /etc/p2pchat\n"), &units_ok, "svc"),
        );
        let v = check_data_volume_unit(("ud", "mkfs.xfs \"$device\"\n"), &units_ok, "svc");
        assert_eq!(rules(&v), vec![Rule::DataVolumeUnit], "{v:?}");
        let v = check_data_volume_unit(("ud", ""), &units, "svc");
        assert!(!v.is_empty(), "no service unit: {v:?}");
        let requires = format!("{service}RequiresMountsFor=/var/lib/p2pchat\n");
        let v = check_data_volume_unit(
            ("ud", ""),
            &[("p2pchat-data-volume.service", volume), ("svc", &requires)],
            "svc",
        );
        assert_eq!(v.len(), 1, "{v:?}");
    }

    const REQUIRED: &str = r#"
        terraform {
          required_providers {
            aws = {
              source  = "hashicorp/aws"
              version = ">= 6.8, < 7.0"
            }
          }
        }
    "#;

    #[test]
    fn a_missing_ignored_or_stale_lock_file_is_reported() {
        let body = parse(REQUIRED);
        let lock = "provider \"registry.terraform.io/hashicorp/aws\" {\n  version     = \"6.11.0\"\n  constraints = \">= 6.8.0, < 7.0.0\"\n}\n";
        assert_clean("good", check_provider_lock(&body, Some(lock), "/target\n"));
        assert_eq!(
            rules(&check_provider_lock(&body, None, "")),
            vec![Rule::ProviderLockCommitted]
        );
        assert_eq!(
            check_provider_lock(&body, Some(lock), ".terraform/\n.terraform.lock.hcl\n").len(),
            1
        );
        let stale = lock.replace(">= 6.8.0, < 7.0.0", ">= 5.0.0");
        assert_eq!(check_provider_lock(&body, Some(&stale), "").len(), 1);
        assert_eq!(normalize_constraints(">= 6.8, < 7.0"), ">= 6.8.0, < 7.0.0");
    }
}

/// The deployment as it was before issue 10 (tests/fixtures/before-issue-10):
/// every rule added for the issue's deployment findings fails on it, so each
/// rule is shown to catch the real defect, not only a made-up snippet.
mod before_issue_10 {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-issue-10")
    }

    fn read(rel: &str) -> String {
        std::fs::read_to_string(dir().join(rel)).expect("fixture file")
    }

    fn body() -> hcl::Body {
        load_dir(&dir()).expect("the fixture parses")
    }

    fn has(v: &[Violation], rule: Rule) -> bool {
        v.iter().any(|v| v.rule == rule)
    }

    #[test]
    fn chat_users_could_reach_the_coordinator_by_ssh() {
        let v = check_ssh_access(&body(), SSH_ACCESS);
        assert!(has(&v, Rule::SshAccessSeparated), "{v:?}");
    }

    #[test]
    fn chat_users_shared_ec2_user() {
        let v = check_no_shared_login(&body());
        assert!(has(&v, Rule::PerUserAccounts), "{v:?}");
        let v = check_client_accounts_script("setup", &read("files/p2pchat-client-setup.sh"));
        assert!(has(&v, Rule::PerUserAccounts), "{v:?}");
    }

    #[test]
    fn the_service_uid_floated_and_the_chown_was_shallow() {
        let v = check_stable_service_owner("ud", &read("files/coordinator-user-data.sh.tftpl"));
        assert_eq!(rules(&v), vec![Rule::StableServiceOwner; 2], "{v:?}");
    }

    #[test]
    fn client_boot_config_drifted() {
        let v = check_boot_config_applied(&body());
        assert_eq!(rules(&v), vec![Rule::BootConfigApplied], "{v:?}");
        let v = check_no_ephemeral_ip_rules(&body());
        assert_eq!(rules(&v), vec![Rule::NoEphemeralIpRules; 2], "{v:?}");
    }

    #[test]
    fn extra_tags_were_unbounded() {
        let v = check_extra_tags_bounded(&body());
        assert_eq!(rules(&v), vec![Rule::ExtraTagsBounded], "{v:?}");
    }

    #[test]
    fn the_coordinator_fetch_did_not_retry_and_the_volume_had_no_unit() {
        let v = check_fetch_retries("fetch", &read("files/p2pchat-coordinator-fetch.sh"));
        assert_eq!(rules(&v), vec![Rule::FetchRetries; 3], "{v:?}");
        let unit = read("files/p2pchat-coordinator.service");
        assert!(has(&check_unit_retries("svc", &unit), Rule::FetchRetries));
        let ud = read("files/coordinator-user-data.sh.tftpl");
        let v = check_data_volume_unit(
            ("ud", &ud),
            &[("p2pchat-coordinator.service", &unit)],
            "p2pchat-coordinator.service",
        );
        assert!(has(&v, Rule::DataVolumeUnit), "{v:?}");
    }

    #[test]
    fn the_lock_file_was_ignored() {
        let v = check_provider_lock(&body(), None, &read("gitignore"));
        assert_eq!(rules(&v), vec![Rule::ProviderLockCommitted; 2], "{v:?}");
    }

    fn rules(v: &[Violation]) -> Vec<Rule> {
        v.iter().map(|v| v.rule).collect()
    }
}

/// The coordinator's deployment as it was before issue 13
/// (tests/fixtures/before-issue-13): it shipped no metrics, had no alarm and
/// took no snapshots, and each issue-13 rule says so.
mod before_issue_13 {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-issue-13")
    }

    fn body() -> hcl::Body {
        load_dir(&dir()).expect("the fixture parses")
    }

    fn rules(v: &[Violation]) -> Vec<Rule> {
        v.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn no_metrics_left_the_instance() {
        let v = check_metrics_shipped(&body(), "aws_instance.coordinator");
        assert_eq!(rules(&v), vec![Rule::MetricsShipped], "{v:?}");
        let ud = std::fs::read_to_string(dir().join("files/coordinator-user-data.sh.tftpl"))
            .expect("fixture file");
        let v = check_metrics_files(("ud", &ud), ("scrape", ""), "p2pchat-monitoring.service");
        assert_eq!(rules(&v), vec![Rule::MetricsShipped; 2], "{v:?}");
    }

    #[test]
    fn nobody_heard_that_the_coordinator_was_down() {
        let v = check_readiness_alarm(&body());
        assert_eq!(rules(&v), vec![Rule::ReadinessAlarm], "{v:?}");
    }

    #[test]
    fn the_data_volume_had_no_snapshots() {
        let v = check_data_volume_snapshots(&body(), "aws_ebs_volume.coordinator_data");
        assert_eq!(rules(&v), vec![Rule::DataVolumeSnapshots], "{v:?}");
    }
}

/// The deployment as it was before issue 12 (tests/fixtures/before-issue-12):
/// one coordinator only, so every cluster rule fails on it.
mod before_issue_12 {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-issue-12")
    }

    fn body() -> hcl::Body {
        load_dir(&dir()).expect("the fixture parses")
    }

    fn rules(v: &[Violation]) -> Vec<Rule> {
        v.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn there_was_no_way_to_run_more_than_one_coordinator() {
        let v = check_single_node_default(&body(), "aws_instance.coordinator", 6222);
        assert_eq!(rules(&v), vec![Rule::SingleNodeDefault; 3], "{v:?}");
    }

    #[test]
    fn there_was_no_shared_database_nor_its_password() {
        let v = check_database_private(&body());
        assert_eq!(rules(&v), vec![Rule::DatabasePrivate], "{v:?}");
        let v = check_database_password(&body());
        assert_eq!(rules(&v), vec![Rule::DatabasePasswordInSsmOnly], "{v:?}");
    }

    #[test]
    fn there_was_no_cluster_port() {
        let v = check_cluster_ports(&body(), "aws_security_group.coordinator", 6222);
        assert_eq!(rules(&v), vec![Rule::ClusterPortsInternal; 2], "{v:?}");
    }

    #[test]
    fn no_node_ran_nats() {
        let ud = std::fs::read_to_string(dir().join("files/coordinator-user-data.sh.tftpl"))
            .expect("fixture file");
        let v = check_nats_files(("ud", &ud), ("unit", ""), ("dropin", ""));
        assert!(v.len() >= 8, "{v:?}");
        assert!(v.iter().all(|v| v.rule == Rule::NatsOnTheNodes), "{v:?}");
    }
}

/// The cluster's database settings before the coordinator spoke TLS to
/// PostgreSQL (tests/fixtures/before-pg-tls): `sslmode=require`, no CA.
mod before_pg_tls {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-pg-tls")
    }

    #[test]
    fn the_database_was_encrypted_but_nobody_checked_who_answered() {
        let body = load_dir(&dir()).expect("the fixture parses");
        let fetch =
            std::fs::read_to_string(dir().join("p2pchat-cluster-fetch.sh")).expect("fixture file");
        let v = check_database_tls(&body, ("fetch", &fetch));
        let rules: Vec<Rule> = v.iter().map(|v| v.rule).collect();
        // verify-full missing, sslmode=require present, no sslrootcert, no
        // download, no PEM check; rds.force_ssl and the default were right.
        assert_eq!(rules, vec![Rule::DatabaseTlsVerified; 5], "{v:?}");
    }

    #[test]
    fn a_curl_download_without_retry_is_reported() {
        let bare = "curl -fsS -o \"$work/ca.pem\" \"$URL\"\n";
        assert_eq!(
            check_fetch_retries("s", bare)
                .iter()
                .map(|v| v.rule)
                .collect::<Vec<_>>(),
            vec![Rule::FetchRetries]
        );
        let probe = "curl -fsS -o /dev/null http://127.0.0.1:9090/readyz\n";
        assert!(check_fetch_retries("s", probe).is_empty());
        assert!(check_fetch_retries("s", "retry curl -fsS -o \"$w/x\" \"$U\"\n").is_empty());
    }
}

/// Cluster rules against small inline configurations: each breach is
/// reported, and the fixed version passes.
mod cluster_snippets {
    use super::*;

    fn parse(text: &str) -> hcl::Body {
        hcl::parse(text).expect("snippet parses")
    }

    fn rules(v: &[Violation]) -> Vec<Rule> {
        v.iter().map(|v| v.rule).collect()
    }

    const GOOD: &str = r#"
        variable "coordinator_count" {
          type    = number
          default = 1
        }
        variable "nats_cluster_port" {
          type    = number
          default = 6222
        }
        locals {
          cluster            = var.coordinator_count > 1
          private_subnet_ids = aws_subnet.private[*].id
        }
        resource "aws_security_group" "coordinator" {}
        resource "aws_security_group" "database" {
          count = local.cluster ? 1 : 0
        }
        resource "aws_vpc_security_group_ingress_rule" "coordinator_nats_cluster" {
          count                        = local.cluster ? 1 : 0
          security_group_id            = aws_security_group.coordinator.id
          ip_protocol                  = "tcp"
          from_port                    = var.nats_cluster_port
          to_port                      = var.nats_cluster_port
          referenced_security_group_id = aws_security_group.coordinator.id
        }
        resource "aws_vpc_security_group_ingress_rule" "database_from_coordinators" {
          count                        = local.cluster ? 1 : 0
          security_group_id            = aws_security_group.database[0].id
          ip_protocol                  = "tcp"
          from_port                    = 5432
          to_port                      = 5432
          referenced_security_group_id = aws_security_group.coordinator.id
        }
        resource "random_password" "database" {
          count   = local.cluster ? 1 : 0
          length  = 40
          special = false
        }
        resource "aws_ssm_parameter" "database_password" {
          count    = local.cluster ? 1 : 0
          type     = "SecureString"
          value_wo = random_password.database[0].result
        }
        resource "aws_db_subnet_group" "accounts" {
          count      = local.cluster ? 1 : 0
          subnet_ids = local.private_subnet_ids
        }
        resource "aws_db_instance" "accounts" {
          count                   = local.cluster ? 1 : 0
          storage_encrypted       = true
          publicly_accessible     = false
          db_subnet_group_name    = aws_db_subnet_group.accounts[0].name
          vpc_security_group_ids  = [aws_security_group.database[0].id]
          backup_retention_period = var.database_backup_retention_days
          deletion_protection     = var.database_deletion_protection
          password_wo             = random_password.database[0].result
        }
        resource "aws_instance" "coordinator" {
          count = var.coordinator_count
          user_data_base64 = base64gzip(templatefile("ud.sh.tftpl", {
            cluster_setup = local.cluster ? format("\n%s", templatefile("c.sh.tftpl", {
              database_password_parameter = try(aws_ssm_parameter.database_password[0].name, "")
            })) : ""
          }))
        }
        output "database_password_parameter" {
          value = local.cluster ? aws_ssm_parameter.database_password[0].name : null
        }
    "#;

    fn good() -> hcl::Body {
        parse(GOOD)
    }

    fn all(body: &hcl::Body) -> Vec<Violation> {
        let mut v = check_single_node_default(body, "aws_instance.coordinator", 6222);
        v.extend(check_database_private(body));
        v.extend(check_cluster_ports(
            body,
            "aws_security_group.coordinator",
            6222,
        ));
        v.extend(check_database_password(body));
        v
    }

    fn broken(from: &str, to: &str) -> Vec<Violation> {
        assert!(GOOD.contains(from), "snippet lacks {from}");
        all(&parse(&GOOD.replacen(from, to, 1)))
    }

    #[test]
    fn the_good_snippet_passes() {
        assert_clean("good", all(&good()));
    }

    #[test]
    fn a_cluster_by_default_or_uncounted_cluster_resources_are_reported() {
        let v = broken("default = 1", "default = 3");
        assert_eq!(rules(&v), vec![Rule::SingleNodeDefault], "{v:?}");
        let v = broken(
            "count                   = local.cluster ? 1 : 0\n          storage_encrypted",
            "storage_encrypted",
        );
        assert_eq!(rules(&v), vec![Rule::SingleNodeDefault], "{v:?}");
        let v = broken(
            "count   = local.cluster ? 1 : 0\n          length",
            "count   = local.cluster ? 0 : 1\n          length",
        );
        assert_eq!(rules(&v), vec![Rule::SingleNodeDefault], "{v:?}");
        let v = broken(") : \"\"", ") : \"\\n\"");
        assert_eq!(rules(&v), vec![Rule::SingleNodeDefault], "{v:?}");
    }

    #[test]
    fn a_public_unencrypted_or_unprotected_database_is_reported() {
        let v = broken(
            "storage_encrypted       = true",
            "storage_encrypted       = false",
        );
        assert_eq!(rules(&v), vec![Rule::DatabasePrivate], "{v:?}");
        let v = broken(
            "publicly_accessible     = false",
            "publicly_accessible     = true",
        );
        assert_eq!(rules(&v), vec![Rule::DatabasePrivate], "{v:?}");
        let v = broken("aws_subnet.private[*].id", "[aws_subnet.public[0].id]");
        assert_eq!(rules(&v), vec![Rule::DatabasePrivate], "{v:?}");
        let v = broken(
            "backup_retention_period = var.database_backup_retention_days",
            "backup_retention_period = 0",
        );
        assert_eq!(rules(&v), vec![Rule::DatabasePrivate], "{v:?}");
        let v = broken(
            "deletion_protection     = var.database_deletion_protection",
            "",
        );
        assert_eq!(rules(&v), vec![Rule::DatabasePrivate], "{v:?}");
    }

    #[test]
    fn cluster_ports_open_to_anything_but_the_coordinators_are_reported() {
        let v = broken(
            "referenced_security_group_id = aws_security_group.coordinator.id\n        }\n        resource \"aws_vpc_security_group_ingress_rule\" \"database_from_coordinators\"",
            "cidr_ipv4 = var.nats_cidr\n        }\n        resource \"aws_vpc_security_group_ingress_rule\" \"database_from_coordinators\"",
        );
        // The world-reachable route port, and no rule left from the group itself.
        assert_eq!(rules(&v), vec![Rule::ClusterPortsInternal; 2], "{v:?}");
        let v = broken("to_port                      = 5432\n          referenced_security_group_id = aws_security_group.coordinator.id",
            "to_port                      = 5432\n          cidr_ipv4                    = \"10.0.0.0/8\"");
        assert_eq!(rules(&v), vec![Rule::ClusterPortsInternal; 2], "{v:?}");
        let open_client_port = format!(
            "{GOOD}\nresource \"aws_vpc_security_group_ingress_rule\" \"nats_clients\" {{\n count = local.cluster ? 1 : 0\n security_group_id = aws_security_group.coordinator.id\n ip_protocol = \"tcp\"\n from_port = 4222\n to_port = 4222\n referenced_security_group_id = aws_security_group.coordinator.id\n}}\n"
        );
        let v = check_cluster_ports(
            &parse(&open_client_port),
            "aws_security_group.coordinator",
            6222,
        );
        assert_eq!(rules(&v), vec![Rule::ClusterPortsInternal], "{v:?}");
    }

    #[test]
    fn a_password_anywhere_but_rds_and_ssm_is_reported() {
        let v = broken(
            "value = local.cluster ? aws_ssm_parameter.database_password[0].name : null",
            "value = random_password.database[0].result",
        );
        assert_eq!(rules(&v), vec![Rule::DatabasePasswordInSsmOnly], "{v:?}");
        let v = broken("value_wo = random_password", "value = random_password");
        assert_eq!(rules(&v), vec![Rule::DatabasePasswordInSsmOnly], "{v:?}");
        let v = broken("type     = \"SecureString\"", "type     = \"String\"");
        assert_eq!(rules(&v), vec![Rule::DatabasePasswordInSsmOnly], "{v:?}");
        let v = broken(
            "password_wo             = random_password.database[0].result",
            "password                = random_password.database[0].result",
        );
        assert_eq!(
            rules(&v),
            vec![Rule::DatabasePrivate, Rule::DatabasePasswordInSsmOnly],
            "{v:?}"
        );
        let v = broken(
            "database_password_parameter = try(aws_ssm_parameter.database_password[0].name, \"\")",
            "database_password = try(random_password.database[0].result, \"\")",
        );
        assert_eq!(rules(&v), vec![Rule::DatabasePasswordInSsmOnly], "{v:?}");
        let v = check_template_has_no_password("t", "URL=postgres://u:${database_password}@h/db");
        assert_eq!(rules(&v), vec![Rule::DatabasePasswordInSsmOnly], "{v:?}");
        assert!(check_template_has_no_password("t", "P=${database_password_parameter}").is_empty());
    }
}
