#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz, -DPGFANOUT_FUZZ=ON) and runs each for
# SECONDS (default 60) from its seed corpus; exits 1 if any run finds a crash, leak or
# sanitizer report (the input is left in build-fuzz/artifacts).  See fuzz/README.md.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   TARGET: pgoutput, settings (default both)
# Env: FUZZ_BUILD (build directory, default build-fuzz), FUZZ_JOBS (make -j, default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(pgoutput settings)
build="${FUZZ_BUILD:-$root/build-fuzz}"
command -v clang >/dev/null 2>&1 || { echo "fuzz.sh: clang is missing (apt-get install clang)" >&2; exit 2; }
CC=clang cmake -S "$root" -B "$build" -DPGFANOUT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "${FUZZ_JOBS:-2}" --target "${targets[@]/#/fuzz_}" >/dev/null
mkdir -p "$build/artifacts"
status=0
for t in "${targets[@]}"; do
  # The corpus grows in the build directory; the seeds stay read-only in the tree.
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  case "$t" in
    pgoutput) seeds=("$root"/tests/fixtures/*.bin "$root"/fuzz/regressions/pgoutput-*) ;;
    settings) seeds=("$root"/pgfanout.example.yaml "$root"/scripts/compose-pgfanout.yaml
                     "$root"/fuzz/seeds/settings-*)
              for f in "$root"/fuzz/regressions/settings-*; do [ -e "$f" ] && seeds+=("$f"); done ;;
    *) echo "fuzz.sh: unknown target $t" >&2; exit 2 ;;
  esac
  cp -f "${seeds[@]}" "$corpus/"
  log="$build/fuzz-$t.log"
  echo "fuzz.sh: $t for $secs s (log: $log)"
  # -close_fd_mask=3: the settings loader prints its errors; libFuzzer keeps its own report.
  if "$build/fuzz/fuzz_$t" -max_total_time="$secs" -close_fd_mask=3 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t-" "$corpus" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" | sed "s/^/fuzz.sh: $t /"
  else
    echo "fuzz.sh: $t FAILED; the report:" >&2
    grep -A40 -E '^==[0-9]+==|runtime error' "$log" | head -60 >&2
    status=1
  fi
done
exit $status
