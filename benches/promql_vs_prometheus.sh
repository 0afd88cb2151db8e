#!/usr/bin/env bash
# tally vs Prometheus 2.42 on identical data (see benches/promql_vs_prometheus.rs).
# Env: BENCH_SERIES (10000), BENCH_HOURS (24), BENCH_RUNS (3), BENCH_LIVE_RUNS (100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps/prometheus.sh
cargo bench --bench promql_vs_prometheus "$@"
