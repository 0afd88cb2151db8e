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
cargo test --all-targets --no-fail-fast
