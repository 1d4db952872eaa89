#!/usr/bin/env bash
# Resolves the jars of tests/flink/pom.xml (Apache Flink's flink-json with its debezium-json
# format, and what it needs to run outside a Flink cluster) into the local Maven repository and
# writes their Java classpath to a file: $1, or build/flink.classpath.
# tests/flink/flinkapply.py compiles and runs FlinkDebeziumApply against it.
# First run downloads; later runs resolve offline (scripts/fetch-classpath.sh).
# Env: MAVEN_REPO_LOCAL picks another local repository than Maven's default (~/.m2/repository).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
FETCH_NAME=flink exec bash "$root/scripts/fetch-classpath.sh" "$root/tests/flink/pom.xml" \
  "${1:-$root/build/flink.classpath}" flink-json
