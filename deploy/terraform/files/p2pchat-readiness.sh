#!/bin/bash
# p2pchat-readiness: asks the coordinator's /readyz (on loopback) once and
# puts the answer in CloudWatch: CoordinatorReady = 1 when it is ready, 0
# when it answers anything else or nothing. Run every minute by
# p2pchat-readiness.timer. The alarm treats missing data as not ready, so an
# instance that is down (and reports nothing) alarms too.
# Settings come from /etc/p2pchat/monitoring.env (written at first boot).
set -euo pipefail

# shellcheck source=/dev/null
. /etc/p2pchat/monitoring.env
: "${P2PCHAT_AWS_REGION:?}" "${P2PCHAT_METRICS_PORT:?}" "${P2PCHAT_METRICS_NAMESPACE:?}" "${P2PCHAT_DEPLOYMENT:?}"

ready=0
if curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$P2PCHAT_METRICS_PORT/readyz"; then
  ready=1
fi
aws cloudwatch put-metric-data \
  --region "$P2PCHAT_AWS_REGION" \
  --namespace "$P2PCHAT_METRICS_NAMESPACE" \
  --metric-name CoordinatorReady \
  --dimensions "Deployment=$P2PCHAT_DEPLOYMENT" \
  --unit Count \
  --value "$ready"
