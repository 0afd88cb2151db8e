#!/usr/bin/env bash
# s3s-fs 0.14.1: a real S3-protocol server over a local folder, for the tiering tests.
# 0.15+ needs a newer rustc than this machine's; --locked keeps its dependency versions.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.test-deps/bin/s3s-fs
if [ ! -x "$BIN" ]; then
  CARGO_TARGET_DIR="${S3S_BUILD_DIR:-$PWD/.test-deps/build-s3s}" \
    cargo install s3s-fs@0.14.1 --locked --features binary --root .test-deps --quiet
  rm -rf "${S3S_BUILD_DIR:-$PWD/.test-deps/build-s3s}"
fi
echo "s3s-fs: $PWD/$BIN"
