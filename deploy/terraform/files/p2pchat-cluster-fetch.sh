#!/bin/bash
# p2pchat-cluster-fetch: the cluster mode's part of a coordinator node's
# start (coordinator_count > 1 only; a single coordinator never has it).
#
#   p2pchat-cluster-fetch nats       installs nats-server from the private S3
#                                    bucket (ExecStartPre=+ of p2pchat-nats)
#   p2pchat-cluster-fetch database   reads the database password from its
#                                    SSM SecureString parameter and writes
#                                    /etc/p2pchat/database.env (root, 0600):
#                                    P2PCHAT_COORDINATOR_DATABASE=postgres://...
#                                    (ExecStartPre=+ of p2pchat-coordinator,
#                                    through its cluster.conf drop-in; systemd
#                                    reads the file for ExecStart=); with TLS
#                                    (P2PCHAT_DATABASE_SSLMODE) it first
#                                    downloads the RDS CA bundle to
#                                    /etc/p2pchat/rds-ca.pem, which the URL
#                                    names as sslrootcert
#
# Run as root on every (re)start, so a new binary or a rotated password is
# picked up by `systemctl restart`. The password is never in user data, a
# unit, a command line or the journal. Each download is tried for about a
# minute; if it still fails, an earlier copy is kept (with a warning), and
# with none the start fails and systemd retries (no start limit).
# Settings: /etc/p2pchat/deploy.env and /etc/p2pchat/cluster-deploy.env
# (written at first boot, public values only).
set -euo pipefail
umask 077

log() { echo "p2pchat-cluster-fetch: $*" >&2; }

# shellcheck source=/dev/null
. /etc/p2pchat/deploy.env
# shellcheck source=/dev/null
. /etc/p2pchat/cluster-deploy.env
: "${P2PCHAT_AWS_REGION:?}" "${P2PCHAT_BUCKET:?}"

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

work=$(mktemp -d /run/p2pchat-cluster-fetch.XXXXXX)
trap 'rm -rf "$work"' EXIT

fetch_nats() {
  : "${P2PCHAT_NATS_BINARY_OBJECT:?}"
  local bin=/usr/local/bin/nats-server
  if ! retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
    "s3://$P2PCHAT_BUCKET/$P2PCHAT_NATS_BINARY_OBJECT" "$work/nats-server"; then
    if [ -x "$bin" ]; then
      log "warning: download failed; starting the nats-server installed earlier"
      return 0
    fi
    log "nats-server download failed and none is installed yet"
    return 1
  fi
  install -m 0755 -o root -g root "$work/nats-server" "$bin.new"
  mv -f "$bin.new" "$bin"
  log "installed $bin"
}

# The CAs that sign RDS certificates, for sslmode=verify-full. Public data,
# 0644. Without it the coordinator could not check the database: no earlier
# copy and no download means the start fails (and systemd retries).
fetch_database_ca() {
  : "${P2PCHAT_DATABASE_CA_URL:?}"
  local ca=/etc/p2pchat/rds-ca.pem
  if retry curl -fsS --proto =https --max-time 30 -o "$work/rds-ca.pem" "$P2PCHAT_DATABASE_CA_URL" &&
    grep -q -- '-----BEGIN CERTIFICATE-----' "$work/rds-ca.pem"; then
    install -m 0644 -o root -g root "$work/rds-ca.pem" "$ca.new"
    mv -f "$ca.new" "$ca"
    log "installed $ca from $P2PCHAT_DATABASE_CA_URL"
    return 0
  fi
  if [ -s "$ca" ]; then
    log "warning: the RDS CA bundle download failed; keeping the $ca installed earlier"
    return 0
  fi
  log "cannot download the RDS CA bundle from $P2PCHAT_DATABASE_CA_URL and none is installed:" \
    "the coordinator cannot check the database's certificate (sslmode=$P2PCHAT_DATABASE_SSLMODE) without it"
  return 1
}

fetch_database() {
  : "${P2PCHAT_DATABASE_HOST:?}" "${P2PCHAT_DATABASE_PORT:?}" "${P2PCHAT_DATABASE_NAME:?}"
  : "${P2PCHAT_DATABASE_USER:?}" "${P2PCHAT_DATABASE_PASSWORD_PARAMETER:?}"
  local env=/etc/p2pchat/database.env password options=""
  if [ -n "${P2PCHAT_DATABASE_SSLMODE:-}" ]; then
    fetch_database_ca
    options="?sslmode=$P2PCHAT_DATABASE_SSLMODE&sslrootcert=/etc/p2pchat/rds-ca.pem"
  fi
  # (The redirection is opened once: a failed attempt writes nothing to stdout.)
  if ! retry aws ssm get-parameter --region "$P2PCHAT_AWS_REGION" --with-decryption \
    --name "$P2PCHAT_DATABASE_PASSWORD_PARAMETER" --query Parameter.Value --output text \
    >"$work/password"; then
    if [ -s "$env" ]; then
      log "warning: password download failed; starting with the database settings written earlier"
      return 0
    fi
    log "password download failed and no database settings are written yet"
    return 1
  fi
  password=$(cat "$work/password")
  # Terraform generates it from letters and digits only, so it goes into the
  # URL as it is; anything else means the parameter was changed by hand.
  if ! [[ "$password" =~ ^[A-Za-z0-9]{16,}$ ]]; then
    log "the password in $P2PCHAT_DATABASE_PASSWORD_PARAMETER is not 16+ letters and digits; refusing it"
    return 1
  fi
  printf 'P2PCHAT_COORDINATOR_DATABASE=postgres://%s:%s@%s:%s/%s%s\n' \
    "$P2PCHAT_DATABASE_USER" "$password" "$P2PCHAT_DATABASE_HOST" "$P2PCHAT_DATABASE_PORT" \
    "$P2PCHAT_DATABASE_NAME" "$options" >"$work/database.env"
  install -m 0600 -o root -g root "$work/database.env" "$env.new"
  mv -f "$env.new" "$env"
  log "wrote $env (database $P2PCHAT_DATABASE_HOST:$P2PCHAT_DATABASE_PORT/$P2PCHAT_DATABASE_NAME)"
}

case "${1:-}" in
  nats) fetch_nats ;;
  database) fetch_database ;;
  *)
    log "usage: p2pchat-cluster-fetch nats|database"
    exit 2
    ;;
esac
