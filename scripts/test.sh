#!/usr/bin/env bash
# Installs what is missing, builds pgfanout twice (plain, and with ASan+UBSan), and runs every
# test of both builds through one ctest run, whose last lines count passes and failures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPGFANOUT_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
# PGFANOUT_FUZZ_TESTS: ctest also runs each libFuzzer target for 60 s (scripts/fuzz.sh, clang).
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGFANOUT_ASAN_BUILD="$PWD/build-asan" \
  -DPGFANOUT_FUZZ_TESTS=ON >/dev/null
cmake --build build -j "$jobs"
bash scripts/fetch-kafka.sh build/kafka.classpath
bash scripts/fetch-flink.sh build/flink.classpath
bash scripts/fetch-pyenv.sh build/venv
cd build
ctest --output-on-failure --timeout 1200 "$@"
