#!/usr/bin/env bash
# The one command that runs every test on a fresh Debian machine: installs what the tests
# need (only what is missing), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-deps
for dep in scripts/deps/*.sh; do
  echo "== installing test dependency: $dep"
  bash "$dep"
done
export TALLY_TEST_DEPS="$PWD/.test-deps"
# A clean clone gains nothing from incremental state, which costs gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | tail -1 | awk '{print "== disk before build: " $4 " free"}'
status=0
cargo test --all-targets --no-fail-fast || status=$?
echo "== target/ after tests: $(du -sh target 2>/dev/null | cut -f1); disk: $(df -h . | tail -1 | awk '{print $4}') free"
exit "$status"
