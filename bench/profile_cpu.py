#!/usr/bin/python3
"""Counts pgfanout's instructions per row change with valgrind's callgrind, over a fixed WAL.

Instruction counts are repeatable on a shared, noisy machine where CPU seconds are not, so this
is how a change to the hot path is judged.  One run:

 1. starts a throwaway PostgreSQL 15 (tests/harness), creates bench_insert and a publication,
    and a pgoutput slot per profiled sink;
 2. loads --rows rows in --txn-rows-row transactions, notes pg_current_wal_lsn();
 3. runs `valgrind --tool=callgrind pgfanout --sink SINK --endpos LSN` for each sink (null,
    and kafka when --kafka: then it also starts a broker), all threads counted;
 4. prints instructions per change (total, and of the main thread), and the top functions
    (inclusive and self) with callgrind_annotate; the callgrind.out files are kept in --out.

    /usr/bin/python3 bench/profile_cpu.py                   # null sink, 100,000 rows
    /usr/bin/python3 bench/profile_cpu.py --kafka --rows 50000

Not part of ctest.  It stops everything it starts by its own handle.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, HERE)

from pgcluster import PgCluster  # noqa: E402
from benchlib import connect, create_slots, insert_rows, insert_table_ddl, scalar  # noqa: E402


def totals(path):
    """Instructions (Ir) summed over the callgrind.out files of one run (one per thread)."""
    total = main = 0
    for f in sorted(glob.glob(path + "*")):
        with open(f) as fh:
            for line in fh:
                if line.startswith("summary:") or line.startswith("totals:"):
                    ir = int(line.split()[1])
                    total += ir
                    if f.endswith("-01") or f == path:
                        main += ir
                    break
    return total, main


def annotate(path, inclusive):
    """callgrind_annotate's top lines for the main thread's file."""
    f = path + "-01" if os.path.exists(path + "-01") else path
    argv = ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", f]
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    lines = [ln for ln in out.splitlines() if "*" in ln and ("." in ln or ":" in ln)]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--txn-rows", type=int, default=1000)
    ap.add_argument("--kafka", action="store_true", help="also profile the Kafka sink")
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "pgfanout"))
    ap.add_argument("--out", default=None, help="directory for the callgrind.out files")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--pgfanout-args", default="", help="extra pgfanout arguments")
    ap.add_argument("--wrap", default=None,
                    help="instead of callgrind, run pgfanout under this command (e.g. 'perf stat -e "
                         "task-clock,context-switches' or '/usr/bin/time -v') and show its output")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="pgfanout-prof-")
    os.makedirs(out, exist_ok=True)
    sinks = ["null"] + (["kafka"] if args.kafka else [])
    pg = PgCluster().start()
    broker = None
    try:
        if args.kafka:
            from kafkabroker import KafkaBroker
            broker = KafkaBroker().start()
        conn = connect(pg.dsn())
        with conn.cursor() as cur:
            cur.execute(insert_table_ddl("bench_insert"))
            cur.execute("CREATE PUBLICATION prof FOR ALL TABLES")
        create_slots(conn, *[f"prof_{s}" for s in sinks])
        insert_rows(conn, "bench_insert", args.rows, args.txn_rows)
        end = scalar(conn, "SELECT pg_current_wal_lsn()::text")
        conn.close()
        for s in sinks:
            path = os.path.join(out, f"callgrind.out.{s}")
            tool = args.wrap.split() if args.wrap else [
                "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={path}"]
            argv = tool + [args.bin, "--dsn", pg.dsn(),
                    "--slot", f"prof_{s}", "--publication", "prof", "--sink", s,
                    "--endpos", end, "--status-interval", "1"]
            if s == "kafka":
                argv += ["--kafka-brokers", broker.bootstrap, "--topic-prefix", "prof"]
            argv += args.pgfanout_args.split()
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                print(r.stdout[-3000:], file=sys.stderr)
                sys.exit(f"profile_cpu: pgfanout --sink {s} exited {r.returncode}")
            if args.wrap:
                print(f"== sink {s}: {args.rows} changes under {args.wrap}:")
                print("\n".join(r.stdout.splitlines()[-25:]))
                continue
            total, main_ir = totals(path)
            print(f"== sink {s}: {args.rows} changes, {total / args.rows:,.0f} instructions per change "
                  f"(all threads), {main_ir / args.rows:,.0f} on the main thread; files {path}*")
            for inclusive in (True, False):
                print(f"-- main thread, top {args.top} by {'inclusive' if inclusive else 'self'} cost:")
                for ln in annotate(path, inclusive)[:args.top]:
                    print("  " + ln)
    finally:
        if broker is not None:
            broker.stop()
        pg.stop()


if __name__ == "__main__":
    main()
