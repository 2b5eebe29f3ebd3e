#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each.
#
#   fuzz/run.sh SECONDS [TARGET...]     (default: every target)
#
# Installs cargo-fuzz (crates.io, --locked) when it is missing. cargo-fuzz
# needs nightly compiler flags; on a stable toolchain the build runs with
# RUSTC_BOOTSTRAP=1, which unlocks them for this build only. Each target
# starts from its committed seeds (corpus/TARGET/seed-*) plus whatever
# earlier runs kept there (ignored by git). A crash, a leak or a timeout
# stops that target, leaves the input under fuzz/artifacts/TARGET/ and makes
# the script exit 1 after the other targets ran; it prints the executions of
# each target. FUZZ_SANITIZER=address turns AddressSanitizer on (slower;
# default none, since the code under test is safe Rust).
set -euo pipefail

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install --locked)"
  cargo install --locked cargo-fuzz
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

sanitizer=${FUZZ_SANITIZER:-none}
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# One build for every target (release, debug assertions on).
cargo fuzz build --sanitizer "$sanitizer"

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "==> $t (${seconds}s)"
  if cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log/$t" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    tail -n 40 "$log/$t"
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log/$t" | grep -oE '[0-9]+$' | tail -n 1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log/$t" | tail -n 1 || true)
  summary+=("$(printf '%-18s %-6s %12s executions  %s' "$t" "$status" "${runs:-?}" "$cov")")
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: ${#failed[@]} target(s) failed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets ran ${seconds}s each without a crash"
