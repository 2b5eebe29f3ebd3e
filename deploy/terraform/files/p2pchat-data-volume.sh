#!/bin/bash
# p2pchat-data-volume: finds the coordinator's data volume (a separate EBS
# volume), formats it the first time only, mounts it at /var/lib/p2pchat and
# gives it to the service account, recursively (a replaced instance may
# come with files owned by another UID). Run as root by
# p2pchat-data-volume.service at every boot; it waits up to 2 minutes for the
# attachment and then fails, and the unit tries again (Restart=on-failure,
# with no start limit), so a volume that appears late is still mounted.
# Settings come from /etc/p2pchat/deploy.env (written at first boot).
set -euo pipefail
umask 022

log() { echo "p2pchat-data-volume: $*" >&2; }

# shellcheck source=/dev/null
. /etc/p2pchat/deploy.env
: "${P2PCHAT_DATA_VOLUME_ID:?}"

DATA_DIR=/var/lib/p2pchat

# On Nitro instances an EBS volume shows up as an NVMe device whose serial is
# the volume id without the dash; on Xen instances as /dev/xvdf.
serial=$(echo "$P2PCHAT_DATA_VOLUME_ID" | tr -d '-')
device=""
for _ in $(seq 1 24); do
  for candidate in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$serial" /dev/xvdf /dev/sdf; do
    if [ -b "$candidate" ]; then
      device=$(readlink -f "$candidate")
      break 2
    fi
  done
  sleep 5
done
if [ -z "$device" ]; then
  log "data volume $P2PCHAT_DATA_VOLUME_ID has not appeared yet; the unit retries"
  exit 1
fi
log "data volume $P2PCHAT_DATA_VOLUME_ID is $device"

if ! blkid "$device" >/dev/null 2>&1; then
  log "formatting $device (new volume)"
  mkfs.xfs -L p2pchat-data "$device"
fi
uuid=$(blkid -s UUID -o value "$device")
install -d -m 0700 "$DATA_DIR"
if ! grep -q "UUID=$uuid" /etc/fstab; then
  echo "UUID=$uuid $DATA_DIR xfs defaults,nofail,noatime 0 2" >>/etc/fstab
  systemctl daemon-reload
fi
mountpoint -q "$DATA_DIR" || mount "$DATA_DIR"
# Recursive: the database and its WAL files must belong to this instance's
# p2pchat account, whatever UID wrote them before.
chown -R p2pchat:p2pchat "$DATA_DIR"
chmod 0700 "$DATA_DIR"
log "mounted $device at $DATA_DIR"
