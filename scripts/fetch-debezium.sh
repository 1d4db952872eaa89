#!/usr/bin/env bash
# Resolves the jars of tests/debezium/pom.xml (Kafka Connect standalone with Debezium's
# PostgreSQL connector) into the local Maven repository and writes their Java classpath to a
# file: $1, or build/debezium.classpath.  tests/debezium/capture.py runs Connect from it.
# First run downloads; later runs resolve offline (scripts/fetch-classpath.sh).
# Env: MAVEN_REPO_LOCAL picks another local repository than Maven's default (~/.m2/repository).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
FETCH_NAME=debezium exec bash "$root/scripts/fetch-classpath.sh" "$root/tests/debezium/pom.xml" \
  "${1:-$root/build/debezium.classpath}" debezium-connector-postgres
