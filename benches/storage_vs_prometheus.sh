#!/usr/bin/env bash
# Bytes per sample: tally vs Prometheus 2.42's TSDB on identical data, in the same run.
#
#   benches/storage_vs_prometheus.sh            # 100 series-groups: TENANTS=10 → 1,000 series × 24 h
#   TENANTS=100 benches/storage_vs_prometheus.sh  # the full 10k-series workload (slow: a multi-GB text file)
#
# The workload is written once as OpenMetrics by `benches/storage.rs`, loaded into Prometheus
# with `promtool tsdb create-blocks-from openmetrics`, and (separately) appended into tally,
# flushed and compacted. Prometheus's blocks are then compacted by a real Prometheus server
# (started on 127.0.0.1, stopped by PID) so both sides are measured after compaction.
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS="${TENANTS:-10}"
bash scripts/deps/prometheus.sh >/dev/null
work="$(mktemp -d)"
trap 'kill "${prom_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo bench --bench storage -- --tenants "$TENANTS" --openmetrics "$work/data.om" | tee "$work/tally.txt"
samples=$(grep -o '= [0-9]* samples' "$work/tally.txt" | head -1 | tr -dc 0-9)
tally_bps=$(grep -o 'on disk after compaction: [0-9.]*' "$work/tally.txt" | awk '{print $NF}')

echo "loading into Prometheus (promtool) ..."
t0=$(date +%s)
promtool tsdb create-blocks-from openmetrics -q "$work/data.om" "$work/prom-data"
echo "promtool took $(( $(date +%s) - t0 )) s"
rm -f "$work/data.om"
printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' > "$work/prometheus.yml"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom-data" \
  --web.listen-address="127.0.0.1:$port" --storage.tsdb.retention.time=3650d \
  --storage.tsdb.min-block-duration=2h --storage.tsdb.max-block-duration=24h \
  --log.level=warn >"$work/prom.log" 2>&1 &
prom_pid=$!
# Let Prometheus compact the imported 2 h blocks (it does so shortly after start).
for _ in $(seq 1 120); do
  blocks=$(find "$work/prom-data" -maxdepth 2 -name meta.json | wc -l)
  [ "$blocks" -le 2 ] && break
  sleep 1
done
kill "$prom_pid"; wait "$prom_pid" 2>/dev/null || true; prom_pid=""
prom_bytes=$(find "$work/prom-data" -path '*/chunks/*' -o -name index -type f | xargs du -cb | tail -1 | awk '{print $1}')
prom_bps=$(python3 -c "print(f'{$prom_bytes/$samples:.3f}')")
echo "prometheus 2.42 after compaction: $prom_bps bytes/sample ($prom_bytes bytes of chunks+index, $(find "$work/prom-data" -maxdepth 2 -name meta.json | wc -l) blocks)"
echo "tally:                            $tally_bps bytes/sample"
python3 -c "print(f'ratio tally/prometheus: {$tally_bps/$prom_bps:.2f}x')"
