#!/usr/bin/env bash
# Prometheus 2.42 and promtool from Debian (reference for PromQL and side-by-side benches).
set -euo pipefail
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a service on some systems; tests start their own instances.
  $SUDO systemctl stop prometheus 2>/dev/null || true
fi
prometheus --version 2>&1 | head -1
