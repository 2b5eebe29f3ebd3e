#!/bin/bash
# p2pchat-client-setup: installs /usr/local/bin/peer and /etc/p2pchat/ca.pem
# from the private S3 bucket and writes the environment of login shells
# (/etc/profile.d/p2pchat.sh) with the coordinator's address, the CA file,
# the fixed peer port and this instance's public address (from IMDSv2).
# Run as root by p2pchat-client-setup.service at every boot; run
# `sudo systemctl restart p2pchat-client-setup` to pick up a new peer binary.
# Settings come from /etc/p2pchat/deploy.env (written at first boot).
set -euo pipefail
umask 022

log() { echo "p2pchat-client-setup: $*" >&2; }

# shellcheck source=/dev/null
. /etc/p2pchat/deploy.env
: "${P2PCHAT_AWS_REGION:?}" "${P2PCHAT_BUCKET:?}" "${P2PCHAT_PEER_BINARY_OBJECT:?}"
: "${P2PCHAT_CA_CERT_OBJECT:?}" "${P2PCHAT_COORDINATOR_ADDRESS:?}" "${P2PCHAT_PEER_PORT:?}"

IMDS=http://169.254.169.254/latest

# Retries a command with a pause: at first boot the instance role's policy
# may not have propagated yet.
retry() {
  local attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if "$@"; then
      return 0
    fi
    log "attempt $attempt of: $* failed; retrying in 10s"
    sleep 10
  done
  return 1
}

imds() {
  local token
  token=$(curl -fsS -X PUT --max-time 5 "$IMDS/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"
}

work=$(mktemp -d /run/p2pchat-setup.XXXXXX)
trap 'rm -rf "$work"' EXIT

retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_PEER_BINARY_OBJECT" "$work/peer"
retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_CA_CERT_OBJECT" "$work/ca.pem"
if ! grep -q -- '-----BEGIN CERTIFICATE-----' "$work/ca.pem"; then
  log "downloaded CA certificate is not PEM"
  exit 1
fi

public_ip=""
if ! public_ip=$(retry imds public-ipv4); then
  log "warning: no public IPv4 address in the instance metadata; not advertising one"
  public_ip=""
fi

# Rename into place: a user running the old binary keeps running it.
install -d -m 0755 /etc/p2pchat
install -m 0755 "$work/peer" /usr/local/bin/.peer.new
mv -f /usr/local/bin/.peer.new /usr/local/bin/peer
install -m 0644 "$work/ca.pem" /etc/p2pchat/ca.pem.new
mv -f /etc/p2pchat/ca.pem.new /etc/p2pchat/ca.pem

profile="$work/p2pchat.sh"
{
  echo "# Written by p2pchat-client-setup at boot; do not edit."
  echo "export P2PCHAT_COORDINATOR=$P2PCHAT_COORDINATOR_ADDRESS"
  echo "export P2PCHAT_CA_CERT=/etc/p2pchat/ca.pem"
  echo "export P2PCHAT_PEER_LISTEN=0.0.0.0:$P2PCHAT_PEER_PORT"
  if [ -n "$public_ip" ]; then
    echo "export P2PCHAT_PEER_ADVERTISE=$public_ip:$P2PCHAT_PEER_PORT"
  fi
} >"$profile"
install -m 0644 "$profile" /etc/profile.d/p2pchat.sh.new
mv -f /etc/profile.d/p2pchat.sh.new /etc/profile.d/p2pchat.sh
log "installed /usr/local/bin/peer; coordinator $P2PCHAT_COORDINATOR_ADDRESS, advertising ${public_ip:-nothing}:$P2PCHAT_PEER_PORT"
