#!/bin/bash
# Offline checks of deploy/terraform (no AWS account, no network needed):
#   1. terraform fmt -check -recursive        (when terraform is installed)
#   2. bash -n and shellcheck on every script under files/; *.tftpl templates
#      are rendered first (placeholders ${name} -> dummy values), and a
#      template may hold no other "${" (Terraform would try to interpolate it)
#   3. systemd-analyze verify on every unit (.service, .timer) under files/,
#      on a copy whose Exec*= commands point at /bin/true (the real binaries
#      exist only on the instances); the User= account is not checked.
#   4. the coordinator's user data, gzipped as Terraform sends it, fits EC2's
#      16 KiB limit: bounded above by the template and every file under
#      files/ together, and rendered as one node of a 3-node cluster (the
#      largest user data: the cluster part, two NATS routes) with every
#      file the .tf passes and 63-character dummy values.
#   5. terraform test (tests/*.tftest.hcl: the single-node default and the
#      cluster, applied against mocked providers) on a copy of the directory,
#      when `terraform init` can install the providers there (network, or a
#      mirror named by a CLI configuration in P2PCHAT_TF_CLI_CONFIG);
#      skipped, with the reason, when it cannot.
# Exits non-zero if any check fails. Run from anywhere; CI runs it as root and
# it installs shellcheck with apt-get when missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
files="$here/files"
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pass() { echo "ok:   $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
skip() { echo "skip: $*"; }

# --- 1. terraform fmt
if command -v terraform >/dev/null 2>&1; then
  # TF_CLI_CONFIG_FILE: no warning about a missing ~/.terraformrc.
  if TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff "$here" >"$work/fmt.out" 2>&1; then
    pass "terraform fmt -check -recursive"
  else
    cat "$work/fmt.out"
    fail "terraform fmt -check -recursive (run: terraform fmt -recursive deploy/terraform)"
  fi
else
  skip "terraform is not installed: terraform fmt not checked"
fi

# --- 2. shell scripts
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing shellcheck with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; } >/dev/null 2>&1 || true
  fi
fi
have_shellcheck=0
if command -v shellcheck >/dev/null 2>&1; then
  have_shellcheck=1
else
  fail "shellcheck is not installed and could not be installed"
fi

check_script() {
  local name=$1 path=$2
  if bash -n "$path"; then
    pass "bash -n $name"
  else
    fail "bash -n $name"
  fi
  if [ "$have_shellcheck" = 1 ]; then
    if shellcheck --shell=bash --severity=style "$path"; then
      pass "shellcheck $name"
    else
      fail "shellcheck $name"
    fi
  fi
}

check_script "check.sh" "$here/check.sh"

shopt -s nullglob
scripts=("$files"/*.sh "$files"/*.sh.tftpl)
if [ "${#scripts[@]}" = 0 ]; then
  fail "no scripts found under $files"
fi
for f in "$files"/*.sh; do
  check_script "files/$(basename "$f")" "$f"
done
for f in "$files"/*.sh.tftpl; do
  name="files/$(basename "$f")"
  rendered="$work/$(basename "$f" .tftpl)"
  # ${name} placeholders become a dummy word; %{ directives are not used.
  sed -E 's/\$\{[a-z_][a-z0-9_]*\}/dummy-value/g' "$f" >"$rendered"
  # shellcheck disable=SC2016 # literal "${" is what is searched for
  if grep -n -e '\${' -e '%{' "$rendered"; then
    fail "$name: '\${' or '%{' left after rendering (write bash variables as \$NAME in templates)"
  else
    pass "$name renders (no stray \${ or %{)"
  fi
  check_script "$name (rendered)" "$rendered"
done

# --- 3. systemd units
units=("$files"/*.service "$files"/*.timer)
if [ "${#units[@]}" = 0 ]; then
  fail "no systemd units found under $files"
elif command -v systemd-analyze >/dev/null 2>&1; then
  for u in "${units[@]}"; do
    name="files/$(basename "$u")"
    copy="$work/units/$(basename "$u")"
    mkdir -p "$work/units"
    # Keep any prefix (+, -, !) and point the command at /bin/true.
    sed -E 's#^(Exec[A-Za-z]*=[-+!@:]*)/[^ ]+#\1/bin/true#' "$u" >"$copy"
    if out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$copy" 2>&1) && [ -z "$out" ]; then
      pass "systemd-analyze verify $name"
    else
      echo "$out"
      fail "systemd-analyze verify $name"
    fi
  done
else
  skip "systemd-analyze is not installed: units not verified"
fi

# --- 4. user data size
limit=16384
size=$(cat "$files"/* | gzip -9 | wc -c)
if [ "$size" -lt "$limit" ]; then
  pass "coordinator user data, gzipped, at most $size of $limit bytes"
else
  fail "coordinator user data may exceed EC2's $limit bytes even gzipped ($size)"
fi

# One node of a 3-node cluster, rendered the way coordinator.tf does: each
# `NAME = file(".../files/F")` or `templatefile(".../files/F", …)` in the
# .tf files gives ${NAME} the content of F (nested templates rendered with
# dummies), ${cluster_setup} is a newline and the rendered cluster part,
# ${nats_routes} the routes to the two other nodes, anything else a
# 63-character dummy (longer than the bucket, endpoint and parameter names).
render() {
  perl -e '
    use strict; use warnings;
    my ($files, $tf, $main, $cluster) = @ARGV;
    my %src;
    for my $line (split /\n/, $tf) {
      $src{$1} = $2 if $line =~ /^\s*([a-z_]+)\s*=\s*(?:file|templatefile)\("\$\{path\.module\}\/files\/([^"]+)"/;
    }
    sub slurp { local $/; open my $f, "<", $_[0] or die "$_[0]: $!"; my $t = <$f>; return $t }
    my $dummy = "x" x 63;
    my %value;
    sub fill {
      my ($text) = @_;
      $text =~ s/\$\{([a-z_]+)\}/exists $value{$1} ? $value{$1} : (exists $src{$1} ? fill(slurp("$files\/$src{$1}")) : $dummy)/ge;
      return $text;
    }
    $value{nats_routes} = join "\n", map { "    nats-route://10.42.1.1$_:6222" } (1, 2);
    $value{cluster_setup} = "\n" . fill(slurp("$files/$cluster"));
    print fill(slurp("$files/$main"));
  ' "$files" "$(cat "$here"/*.tf)" coordinator-user-data.sh.tftpl coordinator-cluster.sh.tftpl
}
if rendered=$(render) && [ -n "$rendered" ]; then
  printf '%s\n' "$rendered" >"$work/cluster-user-data.sh"
  # A template placeholder (lower case; the embedded scripts' own variables
  # are upper case, as the templates require).
  # shellcheck disable=SC2016 # literal "${" is what is searched for
  if grep -n -E '\$\{[a-z_][a-z0-9_]*\}' "$work/cluster-user-data.sh"; then
    fail "3-node cluster user data: a placeholder was left unrendered"
  fi
  check_script "3-node cluster user data (rendered)" "$work/cluster-user-data.sh"
  size=$(gzip -9 <"$work/cluster-user-data.sh" | wc -c)
  raw=$(wc -c <"$work/cluster-user-data.sh")
  if [ "$size" -lt "$limit" ]; then
    pass "3-node cluster node's user data: $raw bytes, $size gzipped, of $limit"
  else
    fail "3-node cluster node's user data is $size bytes gzipped: over EC2's $limit"
  fi
else
  fail "could not render the 3-node cluster user data"
fi

# --- 5. terraform test against mocked providers
if command -v terraform >/dev/null 2>&1; then
  copy="$work/tf"
  mkdir -p "$copy"
  # A copy: init writes .terraform/ and may add checksums to the lock file.
  (cd "$here" && tar --exclude=.terraform -cf - .) | (cd "$copy" && tar -xf -)
  export TF_CLI_CONFIG_FILE="${P2PCHAT_TF_CLI_CONFIG:-/dev/null}"
  if (cd "$copy" && terraform init -backend=false -input=false -no-color >"$work/init.out" 2>&1); then
    if (cd "$copy" && terraform test -no-color >"$work/test.out" 2>&1); then
      pass "terraform test ($(grep -o '[0-9]* passed' "$work/test.out" | tail -1))"
    else
      cat "$work/test.out"
      fail "terraform test"
    fi
  else
    skip "terraform test: terraform init cannot install the providers here ($(grep -m1 -o 'Error: .*' "$work/init.out" || echo 'see terraform init'))"
  fi
else
  skip "terraform is not installed: terraform test not run"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "deploy/terraform/check.sh: $failures check(s) failed"
  exit 1
fi
echo "deploy/terraform/check.sh: all checks passed"
