"""Runs tests/flink's FlinkDebeziumApply: Apache Flink's `debezium-json` format decoding
Debezium JSON record values and applying them to in-memory tables.  Reusable by any test that
has Debezium-format values (the captured fixtures, or pgfanout's topic):

    jobs = [job("default/dbz_types", columns, ["id"], fixture="...jsonl", topic="..."),
            job("pgfanout/dbz_types", columns, ["id"], values=[b'{...}', None, ...])]
    results = run_jobs(jobs)     # {name: Result(rows=[dict], changes={...}, error=None)}

columns are (name, Flink SQL type) pairs; flink_columns(table, options) gives them for the
workload tables of tests/debezium/workload.py under a connector's handling modes.

The classpath comes from PGFANOUT_FLINK_CLASSPATH (default build/flink.classpath) and is
fetched with scripts/fetch-flink.sh when missing; the one Java source is compiled with javac
beside it (again only when the source or the classpath changed).
"""
import collections
import decimal
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from kafkabroker import fetched_classpath  # noqa: E402  (the shared Maven-classpath fetch)
FETCH_SCRIPT = os.path.join(REPO, "scripts", "fetch-flink.sh")
SOURCE = os.path.join(HERE, "src", "main", "java", "pgfanout", "tests", "flink",
                      "FlinkDebeziumApply.java")
MAIN = "pgfanout.tests.flink.FlinkDebeziumApply"

Result = collections.namedtuple("Result", "rows changes tombstones error")
Result.__doc__ = """One job's outcome: rows (final rows, dicts as Flink's JSON serializer
writes them, sorted, JSON floats as decimal.Decimal), changes ({"+I": n, "-U": n, "+U": n,
"-D": n}), tombstones (count of null values, which Flink skips), error (None, or the message of what Flink or the apply step
rejected; rows is then [])."""


def _java(name):
    home = os.environ.get("JAVA_HOME")
    return os.path.join(home, "bin", name) if home else name


def classpath_file():
    return os.path.abspath(os.environ.get("PGFANOUT_FLINK_CLASSPATH")
                           or os.path.join(REPO, "build", "flink.classpath"))


def load_classpath():
    """Flink's jars as a classpath, running scripts/fetch-flink.sh when the file (or a jar it
    names) is missing."""
    return fetched_classpath(classpath_file(), FETCH_SCRIPT)


def compiled_classpath():
    """The classpath with FlinkDebeziumApply's classes on it, compiling them first when the
    source or the classpath changed."""
    cp = load_classpath()
    with open(SOURCE, "rb") as f:
        stamp = hashlib.sha1(f.read() + cp.encode()).hexdigest()[:16]
    out = f"{classpath_file()}.classes-{stamp}"
    if not os.path.isfile(os.path.join(out, *MAIN.split(".")) + ".class"):
        with open(classpath_file() + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.isdir(out):
                tmp = tempfile.mkdtemp(prefix="classes-", dir=os.path.dirname(out))
                r = subprocess.run([_java("javac"), "-encoding", "UTF-8", "--release", "17",
                                    "-d", tmp, "-cp", cp, SOURCE],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if r.returncode != 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise RuntimeError(f"javac FlinkDebeziumApply failed:\n{r.stdout}")
                os.replace(tmp, out)
    return out + os.pathsep + cp


def job(name, columns, key, fixture=None, topic=None, values=None, check_before=True):
    """One table to apply: from a fixture file (records of one topic), or from values (a
    list of record values: bytes/str JSON text, or None for a tombstone)."""
    if (fixture is None) == (values is None):
        raise ValueError("give fixture or values")
    spec = {"name": name, "columns": [list(c) for c in columns], "key": list(key),
            "check_before": check_before}
    if fixture is not None:
        spec.update(input=os.path.abspath(fixture), format="fixture")
        if topic is not None:
            spec["topic"] = topic
    else:
        spec.update(format="values", values=values)
    return spec


def run_jobs(jobs, timeout=120):
    """Runs every job in one JVM; returns {name: Result}."""
    with tempfile.TemporaryDirectory(prefix="pgfanout-flink-") as tmp:
        spec_jobs = []
        for i, j in enumerate(jobs):
            j = dict(j)
            values = j.pop("values", None)
            if values is not None:
                path = os.path.join(tmp, f"values-{i}.txt")
                with open(path, "wb") as f:
                    for v in values:
                        if v is None:
                            f.write(b"null\n")
                        else:
                            v = v.encode() if isinstance(v, str) else v
                            if b"\n" in v:
                                raise ValueError("a value spans lines")
                            f.write(v + b"\n")
                j["input"] = path
            spec_jobs.append(j)
        spec = os.path.join(tmp, "spec.json")
        with open(spec, "w") as f:
            json.dump({"jobs": spec_jobs}, f)
        r = subprocess.run([_java("java"), "-Xmx512m", "-XX:+UseSerialGC",
                            "-XX:TieredStopAtLevel=1", "-cp", compiled_classpath(), MAIN, spec],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"FlinkDebeziumApply exited with {r.returncode}:\n"
                           f"{r.stderr.decode(errors='replace')[-4000:]}")
    results = {}
    acc = {}
    for line in r.stdout.decode("utf-8").splitlines():
        obj = json.loads(line, parse_float=decimal.Decimal)  # DECIMAL exactly
        name = obj["job"]
        if "error" in obj:
            results[name] = Result([], {}, 0, obj["error"])
        elif "changes" in obj:
            acc[name] = ([], obj["changes"], obj["tombstones"])
        else:
            acc[name][0].append(obj["row"])
    for name, (rows, changes, tombstones) in acc.items():
        results[name] = Result(rows, changes, tombstones, None)
    missing = [j["name"] for j in jobs if j["name"] not in results]
    if missing:
        raise RuntimeError(f"FlinkDebeziumApply printed nothing for {missing}:\n"
                           f"{r.stderr.decode(errors='replace')[-4000:]}")
    return results


def flink_type(pg_type, options=None):
    """The Flink SQL type that reads what Debezium writes for a column of pg_type (see
    tests/debezium/dbzvalues.py) under the connector options."""
    o = options or {}
    dec = o.get("decimal.handling.mode", "precise")
    time_mode = o.get("time.precision.mode", "adaptive")
    binary = o.get("binary.handling.mode", "bytes")
    t = pg_type
    simple = {"smallint": "SMALLINT", "integer": "INT", "bigint": "BIGINT",
              "boolean": "BOOLEAN", "real": "FLOAT", "double precision": "DOUBLE",
              "date": "INT", "interval": "BIGINT", "integer[]": "ARRAY<INT>",
              "text[]": "ARRAY<STRING>"}
    if t in simple:
        return simple[t]
    if t.startswith("numeric"):
        if dec == "double":
            return "DOUBLE"
        if "(" in t:  # Debezium's Decimal: base64 of the unscaled value, or its text
            return "BYTES" if dec == "precise" else "DECIMAL" + t[len("numeric"):]
        # VariableScaleDecimal {scale, value}, or text of any scale
        return "ROW<`scale` INT, `value` BYTES>" if dec == "precise" else "STRING"
    if t.startswith("timestamp") and "without" in t:
        return "BIGINT"  # micros or millis since the epoch
    if t.startswith("time") and "without" in t:
        return "BIGINT"  # micros, or millis (INT in JSON, read as BIGINT all the same)
    if t == "bytea":
        return "STRING" if binary == "hex" else "BYTES"
    # timestamptz and timetz are ISO strings; text, char, json, uuid, enums are strings
    return "STRING"


def flink_columns(table_columns, key, options=None):
    """[(name, Flink SQL type)] for a table's [(name, pg_type)]; key columns NOT NULL."""
    return [(c, flink_type(t, options) + (" NOT NULL" if c in key else ""))
            for c, t in table_columns]
