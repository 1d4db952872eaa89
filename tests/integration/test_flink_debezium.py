"""A real Debezium consumer over the captured Debezium fixtures: Apache Flink's own
`debezium-json` format (tests/flink, FlinkDebeziumApply) decodes every record value of
tests/fixtures/debezium/<variant>.jsonl and applies it to an in-memory table keyed by the
primary key; the result must equal the table's final contents in PostgreSQL, turned into what
Debezium writes for each value (tests/debezium/dbzvalues.py: arithmetic on PostgreSQL's text,
not a copy of Debezium's output).

Also pinned down: Flink rejects updates without a before image (REPLICA IDENTITY DEFAULT),
Flink rejects truncate events, Debezium's default skips truncates (the consumer keeps the
truncated rows), and a single corrupted record makes the comparison fail.

The reusable parts, for pointing the same check at pgfanout's topic later:
flinkapply.run_jobs / flinkapply.job(values=...), workload.read_table, expected_rows(),
compare_rows().
"""
import copy
import decimal
import json
import math
import os
import struct
import sys

import psycopg
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
for d in ("harness", "debezium", "flink"):
    sys.path.insert(0, os.path.join(TESTS, d))

import dbzvalues  # noqa: E402
import flinkapply  # noqa: E402
import workload  # noqa: E402
from pgcluster import PgCluster  # noqa: E402

FIXTURES = os.path.join(TESTS, "fixtures", "debezium")
VARIANTS = workload.VARIANTS  # the captured variants and their connector options
# Tables whose every change Flink can apply (REPLICA IDENTITY FULL: updates carry `before`).
FULL_TABLES = [workload.TYPES, workload.NOPK]


def fixture(variant):
    return os.path.join(FIXTURES, f"{variant}.jsonl")


def topic(variant, table):
    return f"{variant}.{workload.SCHEMA}.{table}"


def columns(table, options):
    return flinkapply.flink_columns(workload.COLUMNS[table], workload.KEYS[table], options)


def expected_rows(table, pg_rows, options):
    """The rows a consumer should hold: each PostgreSQL row (workload.read_table's text) as
    Debezium writes it."""
    types = dict(workload.COLUMNS[table])
    return [{c: dbzvalues.expected(types[c], v, options) for c, v in row.items()}
            for row in pg_rows]


def _float(v, single):
    f = float(v)  # Decimal, int, or "NaN"/"Infinity"/"-Infinity"
    return struct.unpack("f", struct.pack("f", f))[0] if single and math.isfinite(f) else f


def value_matches(flink_type, got, want):
    """Whether Flink's output for a column of flink_type equals Debezium's value want."""
    if isinstance(want, dbzvalues.Alternatives):
        return any(value_matches(flink_type, got, w) for w in want)
    if got is None or want is None:
        return got is None and want is None
    base = flink_type.replace(" NOT NULL", "")
    if base in ("FLOAT", "DOUBLE"):
        a, b = _float(got, base == "FLOAT"), _float(want, base == "FLOAT")
        return (math.isnan(a) and math.isnan(b)) or a == b
    if base.startswith("DECIMAL"):
        return decimal.Decimal(got) == decimal.Decimal(want)
    return got == want


def compare_rows(cols, got, want):
    """Matches Flink's rows to the expected ones (as multisets); returns a list of problems
    (empty when they agree), naming the differing columns against the closest expected row."""
    types = dict(cols)

    def same(g, w, c):
        return value_matches(types[c], g.get(c), w.get(c))

    left = list(want)
    extra = []
    for g in got:
        for i, w in enumerate(left):
            if g.keys() == w.keys() and all(same(g, w, c) for c in g):
                del left[i]
                break
        else:
            extra.append(g)
    problems = []
    for g in extra:
        near = max(left, key=lambda w: sum(same(g, w, c) for c in types), default=None)
        diff = [] if near is None else [
            f"{c}: Flink {json.dumps(g.get(c), default=str)[:80]},"
            f" expected {json.dumps(near.get(c), default=str)[:80]}"
            for c in types if not same(g, near, c)]
        problems.append(f"unexpected row in Flink's table: {json.dumps(g, default=str)[:300]}"
                        + "".join(f"\n    {d}" for d in diff))
    problems += [f"row missing from Flink's table: {json.dumps(w, default=str)[:300]}"
                 for w in left]
    return problems


@pytest.fixture(scope="module")
def final_tables():
    with open(os.path.join(FIXTURES, "final_tables.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def flink_results():
    """Every variant's tables through Flink, in one JVM."""
    jobs = []
    for variant, options in VARIANTS.items():
        for table in workload.TABLES:
            jobs.append(flinkapply.job(f"{variant}/{table}", columns(table, options),
                                       workload.KEYS[table], fixture=fixture(variant),
                                       topic=topic(variant, table)))
    return flinkapply.run_jobs(jobs)


def test_final_tables_are_the_workloads():
    """The stored final contents are what the workload leaves in a fresh PostgreSQL today
    (the workload is deterministic, and the fixtures were captured from this workload)."""
    with open(os.path.join(FIXTURES, "final_tables.json"), encoding="utf-8") as f:
        stored = json.load(f)
    pg = PgCluster().start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            workload.create_schema(conn)
            workload.load_initial(conn)
            workload.run_stream(conn)
            live = {t: workload.read_table(conn, t) for t in workload.TABLES}
    finally:
        pg.stop()
    assert live == stored


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("table", FULL_TABLES)
def test_flink_applies_to_postgres_contents(flink_results, final_tables, variant, table):
    res = flink_results[f"{variant}/{table}"]
    assert res.error is None, res.error
    options = VARIANTS[variant]
    problems = compare_rows(columns(table, options), res.rows,
                            expected_rows(table, final_tables[table], options))
    assert not problems, "\n".join(problems)
    # every change reached Flink as a changelog row: updates as -U/+U, deletes as -D
    assert res.changes["-U"] == res.changes["+U"] > 0
    assert res.changes["-D"] > 0 and res.tombstones == res.changes["-D"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_flink_rejects_updates_without_before(flink_results, variant):
    """REPLICA IDENTITY DEFAULT: Debezium's update has "before": null, which Flink's format
    refuses (it needs REPLICA IDENTITY FULL to emit -U)."""
    res = flink_results[f"{variant}/{workload.TOAST}"]
    assert res.error is not None
    assert 'The "before" field of UPDATE message is null' in res.error
    assert "REPLICA IDENTITY to FULL" in res.error


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_truncates(flink_results, final_tables, variant):
    """skipped.operations=t (Debezium's default) leaves the TRUNCATE out, so a consumer keeps
    the truncated rows; with truncates let through, Flink's format rejects op "t"."""
    res = flink_results[f"{variant}/{workload.TRUNC}"]
    if VARIANTS[variant].get("skipped.operations") == "none":
        assert res.error is not None and 'Unknown "op" value "t"' in res.error
        return
    assert res.error is None, res.error
    truncated = [{"id": "1", "v": "before truncate"}, {"id": "2", "v": "also truncated"}]
    want = expected_rows(workload.TRUNC, final_tables[workload.TRUNC] + truncated, {})
    cols = columns(workload.TRUNC, {})
    assert not compare_rows(cols, res.rows, want)


def test_flink_reads_values_as_well(final_tables):
    """The values form (what a test of pgfanout's topic hands over): the default fixture's
    dbz_types values, tombstones included, give the same table."""
    values = []
    with open(fixture("default"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["topic"] == topic("default", workload.TYPES):
                values.append(None if rec["value"] is None
                              else json.dumps(rec["value"], ensure_ascii=False))
    cols = columns(workload.TYPES, {})
    res = flinkapply.run_jobs([flinkapply.job("values", cols, ["id"], values=values)])["values"]
    assert res.error is None, res.error
    assert not compare_rows(cols, res.rows,
                            expected_rows(workload.TYPES, final_tables[workload.TYPES], {}))


def corrupt(out, variant, edit):
    """Writes to out a copy of a variant's fixture with edit(record) applied to the first
    record it changes (edit returns True when it changed one); returns out as a str."""
    done = False
    with open(fixture(variant), encoding="utf-8") as src, open(out, "w") as dst:
        for line in src:
            rec = json.loads(line)
            if not done and edit(rec):
                done = True
                line = json.dumps(rec, ensure_ascii=False) + "\n"
            dst.write(line)
    assert done, "nothing to corrupt"
    return str(out)


def _types_update(rec, id_):
    v = rec["value"]
    return (rec["topic"] == topic("default", workload.TYPES) and v is not None
            and v["op"] == "u" and v["after"]["id"] == id_)


def test_a_corrupted_record_is_caught(tmp_path, final_tables):
    """The check can fail: one changed value in one record's after (a wrong value), one
    changed value in a before image (a before that does not match the stored row), and one
    record dropped (a delete lost) are each reported."""
    def wrong_after(rec):
        if _types_update(rec, 2):
            rec["value"]["after"]["c_text"] = "not what PostgreSQL has"
            return True
        return False

    def wrong_before(rec):
        if _types_update(rec, 3):
            rec["value"]["before"]["c_integer"] = 1
            return True
        return False

    def lost_delete(rec):
        v = rec["value"]
        if rec["topic"] == topic("default", workload.TYPES) and v and v["op"] == "d":
            # the delete of id 5 turned into a no-op: an update of id 5 to itself
            v["op"], v["after"] = "u", v["before"]
            return True
        return False

    cols = columns(workload.TYPES, {})
    want = expected_rows(workload.TYPES, final_tables[workload.TYPES], {})
    jobs = [flinkapply.job(name, cols, ["id"],
                           fixture=corrupt(tmp_path / f"{name}.jsonl", "default", e),
                           topic=topic("default", workload.TYPES))
            for name, e in (("wrong_after", wrong_after), ("wrong_before", wrong_before),
                            ("lost_delete", lost_delete))]
    res = flinkapply.run_jobs(jobs)
    problems = compare_rows(cols, res["wrong_after"].rows, want)
    assert res["wrong_after"].error is None and any("not what PostgreSQL has" in p
                                                    for p in problems), problems
    assert res["wrong_before"].error is not None
    assert "retracted row differs from the stored one" in res["wrong_before"].error
    assert res["lost_delete"].error is None
    problems = compare_rows(cols, res["lost_delete"].rows, want)
    assert any('"id": 5' in p for p in problems), problems
