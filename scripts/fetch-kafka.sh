#!/usr/bin/env bash
# Resolves the Kafka broker jars of tests/kafka/pom.xml into the local Maven repository and
# writes the broker's Java classpath to a file: $1, or build/kafka.classpath.
# The first run downloads (about 40 jars); later runs resolve offline from the local repository
# and fall back to the network only when something is missing.
# Env: MAVEN_REPO_LOCAL picks another local repository than Maven's default (~/.m2/repository).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build/kafka.classpath}"
pom="$root/tests/kafka/pom.xml"

die() { echo "fetch-kafka: $*" >&2; exit 1; }
command -v mvn >/dev/null 2>&1 || die "mvn not found (scripts/install-deps.sh installs maven)"
command -v java >/dev/null 2>&1 || die "java not found (scripts/install-deps.sh installs a JDK)"
[ -f "$pom" ] || die "missing $pom"

mkdir -p "$(dirname "$out")" || die "cannot create the directory of $out"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
tmp="$out.tmp.$$"
log="$out.mvn.log"
trap 'rm -f "$tmp"' EXIT

args=(-B -q -Dstyle.color=never -f "$pom" dependency:build-classpath
      -Dmdep.outputFile="$tmp" -Dmdep.includeScope=runtime)
[ -n "${MAVEN_REPO_LOCAL:-}" ] && args+=(-Dmaven.repo.local="$MAVEN_REPO_LOCAL")

start=$(date +%s%N)
mode=cached
if ! mvn -o "${args[@]}" >"$log" 2>&1; then
  mode=downloaded
  mvn "${args[@]}" >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    die "Maven could not resolve the Kafka jars (full log: $log)"
  }
fi
[ -s "$tmp" ] || die "Maven wrote no classpath (log: $log)"
tr ':' '\n' <"$tmp" | grep -q '/kafka_2\.13-[^/]*\.jar$' || die "classpath lacks the kafka_2.13 jar"
mv -f "$tmp" "$out"
rm -f "$log"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
secs="$((ms / 1000)).$(printf %03d $((ms % 1000)))"
version=$(tr ':' '\n' <"$out" | sed -n 's|.*/kafka_2\.13-\(.*\)\.jar$|\1|p' | head -n1)
echo "fetch-kafka: Kafka $version, $(tr ':' '\n' <"$out" | wc -l) jars ($mode, ${secs}s) -> $out" >&2
