#!/bin/bash
# p2pchat-coordinator-fetch: installs the coordinator binary and certificate
# from the private S3 bucket and the TLS key from SSM Parameter Store. Run as
# root by the unit's ExecStartPre=+ on every (re)start, so
# `systemctl restart p2pchat-coordinator` picks up a new binary, certificate
# or key. Settings come from /etc/p2pchat/deploy.env (written at first boot).
#
# Each download is tried for about a minute (at first boot the instance role
# may not have propagated yet, and the Elastic IP replaces the first public
# address). If one still fails but an earlier copy is installed, the earlier
# copy is kept and the service starts with it (logged as a warning); with no
# earlier copy the start fails and systemd retries (Restart=on-failure, with
# no start limit).
set -euo pipefail
umask 077

log() { echo "p2pchat-coordinator-fetch: $*" >&2; }

# shellcheck source=/dev/null
. /etc/p2pchat/deploy.env
: "${P2PCHAT_AWS_REGION:?}" "${P2PCHAT_BUCKET:?}" "${P2PCHAT_COORDINATOR_BINARY_OBJECT:?}"
: "${P2PCHAT_COORDINATOR_CERT_OBJECT:?}" "${P2PCHAT_COORDINATOR_KEY_PARAMETER:?}"

BIN=/usr/local/bin/coordinator
CERT=/etc/p2pchat/coordinator.pem
KEY=/etc/p2pchat/coordinator.key

# Runs a command up to 6 times, 10 s apart.
retry() {
  local attempt
  for attempt in 1 2 3 4 5 6; do
    if "$@"; then
      return 0
    fi
    log "attempt $attempt of $1 $2 $3 failed; retrying in 10s"
    sleep 10
  done
  return 1
}

work=$(mktemp -d /run/p2pchat-fetch.XXXXXX)
trap 'rm -rf "$work"' EXIT

fetched=1
if ! retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_COORDINATOR_BINARY_OBJECT" "$work/coordinator"; then
  fetched=0
fi
if ! retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_COORDINATOR_CERT_OBJECT" "$work/coordinator.pem"; then
  fetched=0
fi
# (The redirection is opened once: a failed attempt writes nothing to stdout.)
if ! retry aws ssm get-parameter --region "$P2PCHAT_AWS_REGION" --with-decryption \
  --name "$P2PCHAT_COORDINATOR_KEY_PARAMETER" --query Parameter.Value --output text \
  >"$work/coordinator.key"; then
  fetched=0
fi
if [ "$fetched" = 1 ] && ! grep -q -- '-----BEGIN CERTIFICATE-----' "$work/coordinator.pem"; then
  log "downloaded certificate is not PEM"
  fetched=0
fi
if [ "$fetched" = 1 ] && ! grep -q -- '-----BEGIN' "$work/coordinator.key"; then
  log "downloaded key is not PEM"
  fetched=0
fi

if [ "$fetched" = 0 ]; then
  if [ -x "$BIN" ] && [ -s "$CERT" ] && [ -s "$KEY" ]; then
    log "warning: download failed; starting with the files installed earlier"
    exit 0
  fi
  log "download failed and nothing is installed yet"
  exit 1
fi

# Install each file with a rename so that a running process never sees a
# half-written file.
install -d -m 0755 /etc/p2pchat
install -m 0755 -o root -g root "$work/coordinator" "$BIN.new"
mv -f "$BIN.new" "$BIN"
install -m 0644 -o root -g root "$work/coordinator.pem" "$CERT.new"
mv -f "$CERT.new" "$CERT"
install -m 0640 -o root -g p2pchat "$work/coordinator.key" "$KEY.new"
mv -f "$KEY.new" "$KEY"
log "installed $BIN, $CERT and $KEY"
