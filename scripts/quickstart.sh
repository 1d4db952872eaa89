#!/usr/bin/env bash
# Installs what is missing, builds pgfanout, starts a throwaway PostgreSQL, Redis and Kafka on
# 127.0.0.1, and shows pgfanout at work: the Kafka events of a few changes, decoded, and the
# Redis cache keys they invalidate (scripts/quickstart.py).  Stops everything it started, by
# pid, also on Ctrl-C or an error.
set -euo pipefail
cd "$(dirname "$0")/.."
export QUICKSTART_T0_NS
QUICKSTART_T0_NS=$(date +%s%N)
say() {
  local ds=$(( ($(date +%s%N) - QUICKSTART_T0_NS) / 100000000 ))
  printf '[%5ss] %s\n' "$((ds / 10)).$((ds % 10))" "$*"
}

echo "pgfanout quickstart: PostgreSQL -> pgfanout -> Kafka (protobuf events) + Redis (cache invalidation)"
bash scripts/install-deps.sh
say "dependencies present (scripts/install-deps.sh)"

mkdir -p build
log=build/quickstart-build.log
say "building build/pgfanout (CMake, RelWithDebInfo; log: $log)"
if ! { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
       cmake --build build -j "$(nproc)" --target pgfanout pyproto; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "quickstart: the build failed (full log: $log)" >&2
  exit 1
fi

# The Kafka broker's jars, resolved through Maven once (about 40 jars) and cached.
classpath_ok() {
  [ -s build/kafka.classpath ] || return 1
  local jar jars=()
  IFS=: read -r -a jars <build/kafka.classpath || true
  ((${#jars[@]})) || return 1
  for jar in "${jars[@]}"; do
    [ -f "$jar" ] || return 1
  done
}
if ! classpath_ok; then
  say "fetching the Kafka jars with Maven (first run only)"
  bash scripts/fetch-kafka.sh build/kafka.classpath
fi

export PGFANOUT_KAFKA_CLASSPATH="$PWD/build/kafka.classpath"
exec /usr/bin/python3 scripts/quickstart.py --bin build/pgfanout
