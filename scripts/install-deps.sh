#!/usr/bin/env bash
# Installs the Debian packages pgfanout builds, tests and runs with; skips apt when all are present.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      libpq-dev postgresql-15 postgresql-client-15
      libevent-dev libjansson-dev libcmocka-dev libssl-dev
      librdkafka-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler kcat libjemalloc-dev
      libhiredis-dev libcyaml-dev libyaml-dev redis-server redis-tools
      python3 python3-pytest python3-psycopg python3-protobuf python3-confluent-kafka python3-redis
      python3-django python3-django-redis python3-django-cachalot python3-psycopg2
      # clang and its runtimes (libFuzzer, sanitizers): the 60-second fuzz runs of the test command
      clang libclang-rt-14-dev)
# Java and Maven fetch and run the Kafka broker and Flink for tests; the image may already
# carry its own JDK, so only ask apt when the commands are missing.
command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
# javac as well: tests/flink/flinkapply.py compiles the Flink consumer on the spot.
command -v javac >/dev/null 2>&1 || pkgs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
