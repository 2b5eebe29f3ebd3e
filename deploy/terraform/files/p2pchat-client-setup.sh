#!/bin/bash
# p2pchat-client-setup: installs /usr/local/bin/peer and /etc/p2pchat/ca.pem
# from the private S3 bucket, sets up the chat users of this instance (each
# their own Unix account, no sudo, and a private data folder), and writes the
# environment of login shells (/etc/profile.d/p2pchat.sh) with the
# coordinator's address, the CA file, the fixed peer port and this instance's
# Elastic IP. Run as root by p2pchat-client-setup.service at every boot; run
# `sudo systemctl restart p2pchat-client-setup` to pick up a new peer binary
# or a changed user list. Settings come from /etc/p2pchat/deploy.env
# (written at first boot).
set -euo pipefail
umask 022

log() { echo "p2pchat-client-setup: $*" >&2; }

# shellcheck source=/dev/null
. /etc/p2pchat/deploy.env
: "${P2PCHAT_AWS_REGION:?}" "${P2PCHAT_BUCKET:?}" "${P2PCHAT_PEER_BINARY_OBJECT:?}"
: "${P2PCHAT_CA_CERT_OBJECT:?}" "${P2PCHAT_CHAT_USERS_OBJECT:?}" "${P2PCHAT_CLIENT_INDEX:?}"
: "${P2PCHAT_COORDINATOR_ADDRESS:?}" "${P2PCHAT_PEER_PORT:?}" "${P2PCHAT_ADVERTISE_IP:?}"

# Retries a command with a pause: at first boot the instance role's policy
# may not have propagated yet, and the Elastic IP replaces the first public
# address (for a moment the instance has none).
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

work=$(mktemp -d /run/p2pchat-setup.XXXXXX)
trap 'rm -rf "$work"' EXIT

retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_PEER_BINARY_OBJECT" "$work/peer"
retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_CA_CERT_OBJECT" "$work/ca.pem"
retry aws s3 cp --only-show-errors --region "$P2PCHAT_AWS_REGION" \
  "s3://$P2PCHAT_BUCKET/$P2PCHAT_CHAT_USERS_OBJECT" "$work/chat-users"
if ! grep -q -- '-----BEGIN CERTIFICATE-----' "$work/ca.pem"; then
  log "downloaded CA certificate is not PEM"
  exit 1
fi

# Rename into place: a user running the old binary keeps running it.
install -d -m 0755 /etc/p2pchat
install -m 0755 "$work/peer" /usr/local/bin/.peer.new
mv -f /usr/local/bin/.peer.new /usr/local/bin/peer
install -m 0644 "$work/ca.pem" /etc/p2pchat/ca.pem.new
mv -f /etc/p2pchat/ca.pem.new /etc/p2pchat/ca.pem

# --- chat users: `user NAME CLIENT_INDEX` and `key NAME PUBLIC_KEY` lines.
# Each user of this instance gets an account in the group p2pchat-users
# (never wheel: no sudo), a home of their own (0700), the data folder the
# peer uses by default (~/.local/share/p2pchat, 0700) and their keys in a
# root-owned authorized_keys. A user no longer listed is expired (no login),
# not deleted:
# their history stays until the operator removes it.
getent group p2pchat-users >/dev/null || groupadd --system p2pchat-users
valid_name='^[a-z][a-z0-9_-]{0,30}$'
mine=()
while read -r kind name index _; do
  if [ "$kind" = user ] && [ "$index" = "$P2PCHAT_CLIENT_INDEX" ] && [[ $name =~ $valid_name ]]; then
    mine+=("$name")
  fi
done <"$work/chat-users"

for name in "${mine[@]}"; do
  if ! id -u "$name" >/dev/null 2>&1; then
    useradd --create-home --user-group --groups p2pchat-users --shell /bin/bash \
      --comment "p2pchat user" "$name"
    log "created account $name"
  fi
  usermod --expiredate '' "$name"
  home=$(getent passwd "$name" | cut -d: -f6)
  chmod 0700 "$home"
  install -d -m 0700 -o "$name" -g "$name" "$home/.local" "$home/.local/share" \
    "$home/.local/share/p2pchat"
  # Keys belong to root, so a user cannot add someone else's key.
  install -d -m 0755 -o root -g root /etc/ssh/p2pchat-keys
  awk -v n="$name" '$1 == "key" && $2 == n { $1 = ""; $2 = ""; sub(/^  /, ""); print }' \
    "$work/chat-users" >"$work/keys"
  install -m 0644 -o root -g root "$work/keys" "/etc/ssh/p2pchat-keys/$name"
done

# sshd reads the users' keys from the root-owned folder (ec2-user keeps its
# own ~/.ssh/authorized_keys, the operator's key pair).
sshd_conf=/etc/ssh/sshd_config.d/50-p2pchat-users.conf
if [ ! -f "$sshd_conf" ]; then
  cat >"$sshd_conf" <<'SSHD_EOF'
Match Group p2pchat-users
    AuthorizedKeysFile /etc/ssh/p2pchat-keys/%u
    AllowTcpForwarding no
    X11Forwarding no
SSHD_EOF
  chmod 0644 "$sshd_conf"
  systemctl reload sshd 2>/dev/null || systemctl reload ssh 2>/dev/null || true
fi

# Lock accounts of users who are no longer listed for this instance.
while IFS=: read -r name _; do
  [ -n "$name" ] || continue
  if ! printf '%s\n' "${mine[@]}" | grep -qx -- "$name"; then
    usermod --expiredate 1 "$name"
    rm -f "/etc/ssh/p2pchat-keys/$name"
    log "locked account $name (no longer a chat user of this instance)"
  fi
done < <(getent group p2pchat-users | cut -d: -f4 | tr ',' '\n' | sed 's/$/:/')

profile="$work/p2pchat.sh"
{
  echo "# Written by p2pchat-client-setup at boot; do not edit."
  echo "export P2PCHAT_COORDINATOR=$P2PCHAT_COORDINATOR_ADDRESS"
  echo "export P2PCHAT_CA_CERT=/etc/p2pchat/ca.pem"
  echo "export P2PCHAT_PEER_LISTEN=0.0.0.0:$P2PCHAT_PEER_PORT"
  echo "export P2PCHAT_PEER_ADVERTISE=$P2PCHAT_ADVERTISE_IP:$P2PCHAT_PEER_PORT"
} >"$profile"
install -m 0644 "$profile" /etc/profile.d/p2pchat.sh.new
mv -f /etc/profile.d/p2pchat.sh.new /etc/profile.d/p2pchat.sh
log "installed /usr/local/bin/peer; ${#mine[@]} chat user(s); coordinator $P2PCHAT_COORDINATOR_ADDRESS, advertising $P2PCHAT_ADVERTISE_IP:$P2PCHAT_PEER_PORT"
