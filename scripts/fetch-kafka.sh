#!/usr/bin/env bash
# Resolves the Kafka broker jars of tests/kafka/pom.xml into the local Maven repository and
# writes the broker's Java classpath to a file: $1, or build/kafka.classpath.
# The first run downloads (about 40 jars); later runs resolve offline from the local repository
# and fall back to the network only when something is missing (scripts/fetch-classpath.sh).
# Env: MAVEN_REPO_LOCAL picks another local repository than Maven's default (~/.m2/repository).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
FETCH_NAME=kafka exec bash "$root/scripts/fetch-classpath.sh" "$root/tests/kafka/pom.xml" \
  "${1:-$root/build/kafka.classpath}" kafka_2.13
