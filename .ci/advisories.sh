#!/usr/bin/env bash
# Checks the lock files against the RustSec advisory database, offline.
#
#   .ci/advisories.sh [LOCKFILE...]      (default: Cargo.lock fuzz/Cargo.lock)
#
# The database is a snapshot of the advisory-db repository's crates/ folder:
# by default ../shared/advisory-db (beside the repository), or the folder
# named by P2PCHAT_ADVISORY_DB. To use a newer one, point P2PCHAT_ADVISORY_DB
# at a checkout of github.com/rustsec/advisory-db (or replace the snapshot's
# crates/ with a newer checkout's); nothing is fetched.
#
# Fails (exit 1) on any vulnerability or unsoundness advisory for a locked
# version; "unmaintained" and yanked notices are printed as warnings. Before
# the real check it audits a lock file with a known-vulnerable crate
# (smallvec 1.6.0, RUSTSEC-2021-0003) and fails unless that is reported, so an
# empty or unreadable database cannot pass silently. Installs cargo-audit
# (crates.io, --locked) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

db=${P2PCHAT_ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$db/crates" ]; then
  echo "advisories: no advisory database at $db (expected its crates/ folder); set P2PCHAT_ADVISORY_DB" >&2
  exit 1
fi
db=$(cd "$db" && pwd)

if ! cargo audit --version >/dev/null 2>&1; then
  echo "advisories: installing cargo-audit (cargo install --locked)"
  cargo install --locked cargo-audit
fi

audit() {
  # --no-fetch: read the folder as it is (no git repository needed);
  # --stale: a snapshot is old by nature.
  cargo audit --db "$db" --no-fetch --stale --deny unsound --file "$1"
}

# The canary: a lock file with a crate version that has an advisory.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/Cargo.lock" <<'LOCK_EOF'
version = 3

[[package]]
name = "canary"
version = "0.1.0"
dependencies = ["smallvec"]

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
LOCK_EOF
if audit "$work/Cargo.lock" >"$work/canary.out" 2>&1; then
  cat "$work/canary.out"
  echo "advisories: the database at $db does not report RUSTSEC-2021-0003 for smallvec 1.6.0; it is empty or unreadable" >&2
  exit 1
fi
if ! grep -q RUSTSEC-2021-0003 "$work/canary.out"; then
  cat "$work/canary.out"
  echo "advisories: cargo audit failed on the canary for another reason" >&2
  exit 1
fi
echo "advisories: canary reported (RUSTSEC-2021-0003); database $db"

if [ $# -gt 0 ]; then
  locks=("$@")
else
  locks=(Cargo.lock)
  [ -f fuzz/Cargo.lock ] && locks+=(fuzz/Cargo.lock)
fi
failed=0
for lock in "${locks[@]}"; do
  echo "==> $lock"
  if ! audit "$lock"; then
    failed=1
  fi
done
if [ "$failed" = 1 ]; then
  echo "advisories: a locked crate has a known advisory (see above): update it, or record why it does not apply" >&2
  exit 1
fi
echo "advisories: no known vulnerability in ${locks[*]}"
