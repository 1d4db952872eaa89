#!/usr/bin/env bash
# Resolves the runtime dependencies of a test pom (tests/kafka, tests/debezium, tests/flink)
# into the local Maven repository and writes their Java classpath to a file.
#
#   scripts/fetch-classpath.sh POM OUT ARTIFACT
#
# POM       the pom.xml whose dependencies to resolve (nothing is built)
# OUT       the classpath file to write (directories are created; written atomically)
# ARTIFACT  the artifactId whose jar must be on the classpath (a check that the right pom was
#           resolved); its version is printed, e.g. kafka_2.13 or debezium-connector-postgres
#
# The first run downloads; later runs resolve offline from the local repository and fall back
# to the network only when something is missing.
# Env: MAVEN_REPO_LOCAL picks another local repository than Maven's default (~/.m2/repository);
#      FETCH_NAME names the caller in messages (default: the pom's directory name).
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 POM OUT ARTIFACT" >&2; exit 2; }
pom="$1"
out="$2"
artifact="$3"
name="fetch-${FETCH_NAME:-$(basename "$(dirname "$pom")")}"

die() { echo "$name: $*" >&2; exit 1; }
command -v mvn >/dev/null 2>&1 || die "mvn not found (scripts/install-deps.sh installs maven)"
command -v java >/dev/null 2>&1 || die "java not found (scripts/install-deps.sh installs a JDK)"
[ -f "$pom" ] || die "missing $pom"
pom="$(cd "$(dirname "$pom")" && pwd)/$(basename "$pom")"

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
    die "Maven could not resolve the jars of $pom (full log: $log)"
  }
fi
[ -s "$tmp" ] || die "Maven wrote no classpath (log: $log)"
# The artifact's jar, as a regular expression: dots and other specials escaped.
re="$(printf '%s' "$artifact" | sed 's/[][\.*^$+?(){}|]/\\&/g')"
tr ':' '\n' <"$tmp" | grep -q "/$re-[^/]*\.jar\$" || {
  rm -f "$log"
  die "classpath lacks the $artifact jar (is $pom the right pom?)"
}
mv -f "$tmp" "$out"
rm -f "$log"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
secs="$((ms / 1000)).$(printf %03d $((ms % 1000)))"
version=$(tr ':' '\n' <"$out" | sed -n "s|.*/$re-\\([^/]*\\)\\.jar\$|\\1|p" | head -n1)
echo "$name: $artifact $version, $(tr ':' '\n' <"$out" | wc -l) jars ($mode, ${secs}s) -> $out" >&2
