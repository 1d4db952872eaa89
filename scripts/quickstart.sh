#!/usr/bin/env bash
# Installs what is missing, builds pgfanout, and shows changes streaming from a throwaway
# PostgreSQL as JSON lines; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target pgfanout
exec /usr/bin/python3 scripts/quickstart.py build/pgfanout
