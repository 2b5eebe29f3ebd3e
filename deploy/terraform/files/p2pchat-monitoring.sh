#!/bin/bash
# p2pchat-monitoring: installs the CloudWatch agent (the first time) and
# (re)starts it with p2pchat's configuration, written at first boot:
# /etc/p2pchat/cloudwatch-agent.json (the log group and namespace) and
# /etc/p2pchat/prometheus.yaml (scrape the coordinator's /metrics on
# loopback). Run as root by p2pchat-monitoring.service at every boot; when the
# package mirror cannot be reached, it fails and the unit tries again
# (Restart=on-failure, no start limit).
set -euo pipefail

log() { echo "p2pchat-monitoring: $*" >&2; }

CTL=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl

if [ ! -x "$CTL" ]; then
  log "installing amazon-cloudwatch-agent"
  dnf install -y amazon-cloudwatch-agent
fi
"$CTL" -a fetch-config -m ec2 -s -c file:/etc/p2pchat/cloudwatch-agent.json
log "CloudWatch agent running with /etc/p2pchat/cloudwatch-agent.json"
