"""pgfanout's service features against a real PostgreSQL 15 (one cluster for the module) and
real redis-servers (tests/harness):

  1. HTTP (--http-listen): /healthz, /readyz (200 streaming with every sink connected; 503 and
     the reason while Redis is killed or frozen past command_timeout_ms, or while PostgreSQL is
     being reconnected), /metrics parsed as Prometheus text 0.0.4 (every sample line
     `name{labels} value`, every family with # HELP and # TYPE, families contiguous) and checked
     against facts this file produces itself: events per table and op (counted from the rows
     each statement changed), confirmed LSN against the slot's confirmed_flush_lsn, slot lag,
     in-flight, errors, retries, connected, the Redis commit-to-ack histogram (cumulative
     buckets, _count = the transactions Redis acknowledged), replication lag 0 when caught up,
     reconnects.  No listener without the flag; a bare port binds 127.0.0.1 only; a port in use
     is exit 1 before anything touches the server.  --probe: 0 against a live /healthz, 1 when
     nothing listens, on a 404, or when /readyz is 503.
  2. Logs: every stderr line of --log-format logfmt / json parses (keys ts, level, msg), also
     for messages with quotes, backslashes, newlines and tabs; a bad format is exit 2.  A DSN
     password (scram-sha-256 enforced for the test roles in pg_hba.conf, so the password is
     really used) never reaches stderr, stdout, /metrics or --check-config, in any format.
  3. Heartbeat: another database writes steadily (with periodic checkpoints) while the
     captured tables are idle; the slot's confirmed_flush_lsn and restart_lsn stay within a few
     seconds of WAL while many MB are written.  Heartbeats are counted and never reach the
     stdout sink.  A role without EXECUTE on pg_logical_emit_message gets one warning naming
     the GRANT, and streaming goes on.
  4. Slots: --temporary-slot (temporary while running, gone after), conflicting name (exit 1),
     --drop-slot-on-exit (dropped after SIGTERM, kept after a failure); a publication created
     after the slot stops pgfanout with the fix instead of reconnecting, and the
     pg_replication_slot_advance fix it names works.
  5. Least privilege: a role with only LOGIN REPLICATION and SELECT on the published tables
     (password auth) creates its slot, streams to stdout and Redis, runs the startup catalog
     check of the Redis rules, writes heartbeats and drops its slot.
  6. Partitioned tables with publish_via_partition_root: events (stdout JSON, /metrics) carry
     the root's name and its Redis rule invalidates the keys, also for partitions created,
     attached and sub-partitioned while pgfanout runs; without the option pgfanout warns.

Also: /healthz keeps answering while a PostgreSQL connection attempt hangs; the replication
lag is 0 once caught up even after WAL that is not for the slot; a malformed --http-listen
is exit 2; server notices and libevent's warnings keep --log-format; a message that is not
UTF-8 keeps its line under --log-format json.

Not covered: the Kafka sink's latency histogram and connected/errors series (the Kafka
broker costs ~15 s to start; test_kafka.py owns the sink)."""
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import runner
from pgcluster import PgCluster
from ports import free_port
from redis_util import existing, fill, wait_confirmed, write_config
from runner import lsn_to_int, wait_for

SECRET_ROLE, SECRET_PW = "svc_secret", "Pw-7Kq9Zx-Secret"
CDC_ROLE, CDC_PW = "cdc", "Cdc-Pw-4Rt8"
NOREPL_ROLE, NOREPL_PW = "svc_norepl", "NoRepl-Pw-2Mv6"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"debug", "info", "warn", "error"}


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    # Room for the slots of a failed test that could not clean up.
    c = PgCluster(extra_conf={"max_replication_slots": "30", "max_wal_senders": "30"}).start()
    # The harness trusts every local connection; these roles must give their password
    # (scram-sha-256), so a password in a DSN is really used.  A logical replication
    # connection (replication=database) matches the database entries, like any other.
    hba = os.path.join(c.datadir, "pg_hba.conf")
    with open(hba) as f:
        text = f.read()
    roles = ",".join([SECRET_ROLE, CDC_ROLE, NOREPL_ROLE])
    with open(hba, "w") as f:
        f.write(f"host all {roles} 127.0.0.1/32 scram-sha-256\n" + text)
    conn = runner.connect(c.dsn())
    conn.execute("SELECT pg_reload_conf()")
    conn.close()
    yield c
    c.stop()


# --- HTTP and the Prometheus text format ---------------------------------------------------

def http_get(port, path, timeout=5.0, method="GET"):
    """(status, body text, content type) of one request, or (None, error, None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), resp.getheader("Content-Type")
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e), None
    finally:
        conn.close()


def wait_http(port, path, status, timeout=20, worker=None, contains=None):
    """Polls until path answers with status (and its body contains `contains`); returns the body."""
    last = [None]

    def ok():
        if worker is not None and not worker.running():
            raise AssertionError(f"pgfanout exited ({worker.proc.returncode}) while we waited for"
                                 f" {path} {status}:\n{worker.stderr_text()[-3000:]}")
        last[0] = http_get(port, path, timeout=3)
        return last[0][0] == status and (contains is None or contains in last[0][1])
    if not wait_for(ok, timeout, interval=0.05):
        tail = worker.stderr_text()[-3000:] if worker is not None else ""
        raise AssertionError(f"{path} did not answer {status} within {timeout}s; last: {last[0]}\n{tail}")
    return last[0][1]


METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(rf"^({METRIC_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_value(text):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.match(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$", text):
        raise ValueError(text)
    return float(text)


def parse_labels(text, where):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"{where}: bad label syntax at {text[pos:]!r}"
        name, raw = m.group(1), m.group(2)
        assert name not in labels, f"{where}: label {name} twice"
        labels[name] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), raw)
        pos = m.end()
    return labels


def family_of(sample, families):
    """The family a sample name belongs to (histogram/summary suffixes included)."""
    if sample in families:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[:-len(suffix)] in families:
            return sample[:-len(suffix)]
    return None


def parse_exposition(text):
    """Parses Prometheus text format 0.0.4 strictly; returns
    {family: {"type", "help", "samples": [(name, labels, value)]}}.  Fails on: a line that is
    neither a comment nor `name{labels} value`, a sample before its family's # TYPE, a family
    without # HELP or # TYPE, a repeated HELP/TYPE, a family's samples not contiguous, a
    duplicate series, histogram samples that are not _bucket (with le) / _sum / _count."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families = {}
    order = []
    seen_series = set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n} {line!r}"
        assert line.strip() == line and line, f"{where}: empty or padded line"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert re.fullmatch(METRIC_NAME, name), where
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                key = parts[1].lower()
                assert fam[key] is None, f"{where}: second # {parts[1]} for {name}"
                assert not fam["samples"], f"{where}: # {parts[1]} after samples of {name}"
                assert len(parts) == 4 and parts[3], f"{where}: # {parts[1]} without text"
                if key == "type":
                    assert parts[3] in TYPES, where
                fam[key] = parts[3]
                if name not in order:
                    order.append(name)
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"{where}: not `name{{labels}} value`"
        name, labels = m.group(1), parse_labels(m.group(2) or "", where)
        try:
            value = parse_value(m.group(3))
        except ValueError:
            raise AssertionError(f"{where}: bad value")
        fam_name = family_of(name, families)
        assert fam_name is not None, f"{where}: sample without # HELP/# TYPE"
        fam = families[fam_name]
        assert fam["type"] is not None, f"{where}: sample before # TYPE"
        assert order[-1] == fam_name, f"{where}: samples of {fam_name} are not contiguous"
        if fam["type"] == "histogram":
            assert name != fam_name, f"{where}: bare sample of a histogram"
            assert (name.endswith("_bucket")) == ("le" in labels), f"{where}: le only on _bucket"
        else:
            assert name == fam_name, f"{where}: suffixed sample of a {fam['type']}"
        series = (name, tuple(sorted(labels.items())))
        assert series not in seen_series, f"{where}: duplicate series"
        seen_series.add(series)
        fam["samples"].append((name, labels, value))
    for name, fam in families.items():
        assert fam["help"] is not None and fam["type"] is not None, f"{name}: needs # HELP and # TYPE"
        if fam["type"] == "counter":
            for s in fam["samples"]:
                assert s[2] >= 0 and s[2] == int(s[2]), f"counter {s} not a non-negative integer"
    return families


class Metrics:
    """One parsed scrape."""

    def __init__(self, text):
        self.text = text
        self.families = parse_exposition(text)

    def get(self, name, **labels):
        """The value of the one series name{labels}; fails when absent."""
        fam = self.families[family_of(name, self.families)]
        for n, lab, v in fam["samples"]:
            if n == name and lab == labels:
                return v
        raise AssertionError(f"no series {name}{labels} in\n{self.text}")

    def series(self, name):
        fam = self.families.get(family_of(name, self.families) or name)
        return [] if fam is None else [(lab, v) for n, lab, v in fam["samples"] if n == name]

    def events(self):
        """{(table, op): value} of pgfanout_events_total."""
        return {(lab["table"], lab["op"]): v for lab, v in self.series("pgfanout_events_total")}

    def histogram(self, name, **labels):
        """([(le, cumulative count)] in exposition order, sum, count) of one histogram."""
        buckets = [(parse_value(lab["le"]), v) for lab, v in self.series(name + "_bucket")
                   if {k: x for k, x in lab.items() if k != "le"} == labels]
        return buckets, self.get(name + "_sum", **labels), self.get(name + "_count", **labels)


def scrape(port):
    status, body, ctype = http_get(port, "/metrics")
    assert status == 200, (status, body)
    assert ctype and ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return Metrics(body)


def check_histogram(m, name, count, **labels):
    """Cumulative, monotone buckets with ascending le ending at +Inf = _count = count."""
    buckets, total, n = m.histogram(name, **labels)
    assert buckets, f"no buckets for {name}{labels}"
    les = [le for le, _ in buckets]
    assert les == sorted(les) and len(set(les)) == len(les), les
    assert les[-1] == math.inf, les
    counts = [c for _, c in buckets]
    assert all(a <= b for a, b in zip(counts, counts[1:])), f"buckets not cumulative: {buckets}"
    assert counts[-1] == n == count, f"{name}{labels}: +Inf {counts[-1]}, _count {n}, expected {count}"
    assert total >= 0 and (count == 0 or total > 0), total
    return buckets, total


def wait_metric(port, pred, timeout=20, what="condition"):
    """Scrapes until pred(metrics) is true; returns the metrics."""
    last = [None]

    def ok():
        last[0] = scrape(port)
        return pred(last[0])
    if not wait_for(ok, timeout, interval=0.1):
        raise AssertionError(f"metrics: {what} not reached within {timeout}s:\n{last[0].text}")
    return last[0]


def probe(url):
    return subprocess.run([runner.pgfanout_bin(), "--probe", url], capture_output=True, text=True,
                          timeout=20)


def listening_sockets(pid):
    """(ip, port) of the TCP sockets the process listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state != "0A" or inode not in inodes:
                continue
            addr, port = local.split(":")
            if v6:  # four 32-bit words, each in host (little-endian) order
                raw = bytes.fromhex(addr)
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            else:
                ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
            found.add((ip, int(port, 16)))
    return found


# --- small helpers -------------------------------------------------------------------------

def tail(text, n=3000):
    return text[-n:]


def wait_streaming(worker, timeout=30):
    ok = wait_for(lambda: not worker.running() or "streaming slot" in worker.stderr_text(), timeout)
    if not ok or not worker.running():
        raise AssertionError("pgfanout did not start streaming:\n" + tail(worker.stderr_text()))


def slot_row(conn, slot):
    """pg_replication_slots row (with temporary) as a dict, or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT slot_name, temporary, active, active_pid, confirmed_flush_lsn::text,"
                    " restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d.name for d in cur.description], row))


def drop_slot_if_exists(conn, slot):
    if runner.slot_info(conn, slot) is not None:
        runner.wait_slot_inactive(conn, slot, timeout=30)
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def read_json_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def count_output(events):
    """{(schema.table, op): n} of the stdout sink's JSON lines (truncate counted per table)."""
    out = {}
    for e in events:
        if e["op"] == "truncate":
            for t in e["tables"]:
                key = (f"{t['schema']}.{t['table']}", "truncate")
                out[key] = out.get(key, 0) + 1
        elif e["op"] != "message":
            key = (f"{e['schema']}.{e['table']}", e["op"])
            out[key] = out.get(key, 0) + 1
    return out


class Counter:
    """Row changes made here, counted from each statement's own rowcount, and the committed
    transactions that give Redis something to do."""

    def __init__(self, conn):
        self.conn = conn
        self.events = {}
        self.redis_txns = 0

    def txn(self, statements, redis=True, rollback=False):
        """Runs statements [(sql, params, table, op)] in one transaction."""
        pending = {}
        self.conn.execute("BEGIN")
        with self.conn.cursor() as cur:
            for sql, params, table, op in statements:
                cur.execute(sql, params)
                if table is not None:
                    n = 1 if op == "truncate" else cur.rowcount
                    for t in (table if isinstance(table, tuple) else (table,)):
                        pending[(t, op)] = pending.get((t, op), 0) + n
        self.conn.execute("ROLLBACK" if rollback else "COMMIT")
        if not rollback:
            for k, v in pending.items():
                self.events[k] = self.events.get(k, 0) + v
            self.redis_txns += 1 if redis else 0

    def nonzero(self):
        return {k: v for k, v in self.events.items() if v}

    def expected(self):
        """{(table, op): n} with every op of every touched table (zeros included)."""
        out = {}
        for table in {t for t, _ in self.events}:
            for op in ("insert", "update", "delete", "truncate"):
                out[(table, op)] = self.events.get((table, op), 0)
        return out


# === 1. HTTP ================================================================================

def test_http_listener_off_by_default_bare_port_and_port_in_use(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE h_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION h_pub FOR TABLE h_t")
    base = ["--dsn", cluster.dsn(), "--publication", "h_pub", "--temporary-slot", "-o",
            str(tmp_path / "h.out"), "--status-interval", "0.2"]

    # No flag: the process listens on nothing.
    with runner.Worker(base + ["--slot", "h_none"], stderr_path=str(tmp_path / "none.err")) as w:
        wait_streaming(w)
        assert listening_sockets(w.proc.pid) == set()
        assert "http" not in w.stderr_text().lower(), w.stderr_text()
        assert w.terminate() == 0

    # A bare port: 127.0.0.1 only, and it answers.
    port = free_port()
    with runner.Worker(base + ["--slot", "h_bare", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "bare.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        assert listening_sockets(w.proc.pid) == {("127.0.0.1", port)}
        status, body, ctype = http_get(port, "/healthz")
        assert (status, body) == (200, "ok\n") and ctype.startswith("text/plain")
        assert http_get(port, "/readyz")[:2] == (200, "ready\n")
        assert http_get(port, "/healthz", method="HEAD")[0] == 200
        assert http_get(port, "/nope")[0] == 404
        # Only GET and HEAD (evhttp itself answers other methods with 501).
        assert http_get(port, "/metrics", method="POST")[0] in (405, 501)
        m = scrape(port)
        assert m.get("pgfanout_streaming") == 1
        assert m.get("pgfanout_sink_connected", sink="stdout") == 1
        # --probe: 0 on 200; 1 on a 404, and when nothing listens.
        r = probe(f"127.0.0.1:{port}/healthz")
        assert r.returncode == 0, r.stderr
        assert probe(f"127.0.0.1:{port}/readyz").returncode == 0
        assert probe(f"127.0.0.1:{port}").returncode == 0  # /healthz by default
        r = probe(f"127.0.0.1:{port}/nope")
        assert r.returncode == 1 and "probe" in r.stderr, r.stderr
        assert w.terminate() == 0
    r = probe(f"127.0.0.1:{free_port()}/healthz")
    assert r.returncode == 1 and "no answer" in r.stderr, r.stderr

    # A port in use: exit 1 with a clear message, before anything touches the server.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        r = runner.run_pgfanout(["--dsn", cluster.dsn(), "--publication", "h_pub", "--slot", "h_busy",
                                 "--create-slot", "--snapshot", "never", "--http-listen", f"127.0.0.1:{taken}"], timeout=30)
    assert r.returncode == 1, r.describe()
    assert f"cannot listen for HTTP on 127.0.0.1:{taken}" in r.stderr and "--http-listen" in r.stderr, r.describe()
    assert runner.slot_info(admin, "h_busy") is None


def test_metrics_label_values_are_escaped(pgfanout, cluster, admin, tmp_path):
    """A table name with a quote, a backslash, a newline and non-ASCII text is one label value."""
    name = 'we"ird\\tab\nx é'
    ident = '"' + name.replace('"', '""') + '"'
    admin.execute(f"CREATE TABLE {ident} (id int PRIMARY KEY)")
    admin.execute(f"CREATE PUBLICATION esc_pub FOR TABLE {ident}")
    port = free_port()
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "esc_slot", "--temporary-slot", "--publication", "esc_pub",
                        "-o", str(tmp_path / "esc.out"), "--status-interval", "0.2", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "esc.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        admin.execute(f"INSERT INTO {ident} VALUES (1), (2)")
        admin.execute(f"DELETE FROM {ident} WHERE id = 1")
        m = wait_metric(port, lambda m: m.events().get((f"public.{name}", "delete")) == 1)
        assert m.events() == {(f"public.{name}", "insert"): 2, (f"public.{name}", "update"): 0,
                              (f"public.{name}", "delete"): 1, (f"public.{name}", "truncate"): 0}
        assert w.terminate() == 0


@pytest.mark.parametrize("addr", ["abc", "127.0.0.1:0", "127.0.0.1:99999"])
def test_malformed_http_listen_is_a_command_line_error(pgfanout, addr):
    r = runner.run_pgfanout(["--dsn", "host=127.0.0.1 port=1", "--http-listen", addr], timeout=30)
    assert "http.listen" in r.stderr and "--http-listen" in r.stderr, r.describe()
    assert r.returncode == 2, r.describe()


def test_libevent_warnings_keep_the_log_format(pgfanout):
    r = runner.run_pgfanout(["--dsn", "host=127.0.0.1 port=1", "--http-listen", f"[::1]:{free_port()}",
                             "--log-format", "json"], timeout=30)
    assert r.returncode == 1, r.describe()
    parse_log(r.stderr, "json")


def test_metrics_count_changes_and_follow_a_redis_outage(pgfanout, cluster, admin, rs, tmp_path):
    for t in ("m_a", "m_b", "m_c"):
        admin.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text)")
    admin.execute("CREATE PUBLICATION m_pub FOR TABLE m_a, m_b, m_c")
    admin.execute("SELECT pg_create_logical_replication_slot('m_slot', 'pgoutput')")
    cfg = write_config(tmp_path / "m.yaml", {
        "command_timeout_ms": 2000,
        "rules": [{"table": "m_a", "keys": ["m_a:{id}"], "table_keys": ["m_a:list"]},
                  {"table": "m_b", "keys": ["m_b:{id}"], "table_keys": ["m_b:list"]}]})
    out = str(tmp_path / "m.out")
    port = free_port()
    args = ["--dsn", cluster.dsn(), "--slot", "m_slot", "--publication", "m_pub",
            "--sink", "stdout,redis", "-o", out, "--config", cfg, "--redis", rs.addr,
            "--status-interval", "0.2", "--http-listen", f"127.0.0.1:{port}"]
    client = rs.client()
    fill(client, ["m_a:list", "m_b:list", "m_a:1", "m_a:3", "m_a:19", "m_b:5", "m_keep"])
    c = Counter(runner.connect(cluster.dsn()))
    A, B, C = "public.m_a", "public.m_b", "public.m_c"
    with runner.Worker(args, stderr_path=str(tmp_path / "m.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        assert http_get(port, "/healthz")[0] == 200
        # Phase 1: a known mix; every committed transaction gives Redis keys to delete.
        c.txn([("INSERT INTO m_a SELECT g, 'a' FROM generate_series(1, 20) g", None, A, "insert"),
               ("INSERT INTO m_c SELECT g, 'c' FROM generate_series(1, 5) g", None, C, "insert")])
        c.txn([("INSERT INTO m_b SELECT g, 'b' FROM generate_series(1, 10) g", None, B, "insert")])
        c.txn([("UPDATE m_a SET v = 'u' WHERE id % 3 = 0", None, A, "update")])
        c.txn([("DELETE FROM m_b WHERE id > 7", None, B, "delete")])
        c.txn([("INSERT INTO m_a VALUES (100, 'rolled back')", None, A, "insert")], rollback=True)
        c.txn([("UPDATE m_b SET v = 'x' WHERE id = 1", None, B, "update"),
               ("UPDATE m_c SET v = 'y' WHERE id <= 2", None, C, "update"),
               ("DELETE FROM m_c WHERE id = 5", None, C, "delete")])
        c.txn([("TRUNCATE m_b", None, B, "truncate")])
        c.txn([("TRUNCATE m_a, m_c", None, (A, C), "truncate")])
        c.txn([("INSERT INTO m_a SELECT g, 'n' FROM generate_series(200, 204) g", None, A, "insert")])
        c.txn([("INSERT INTO m_a VALUES (300, 'm')", None, A, "insert"),
               ("SELECT pg_logical_emit_message(true, 'app.note', 'hello')", None, None, None)])
        phase1_txns = c.redis_txns
        assert phase1_txns == 9
        wait_confirmed(admin, "m_slot", runner.current_lsn(admin), worker=w)

        def caught_up(m):
            slot = lsn_to_int(runner.slot_info(admin, "m_slot")["confirmed_flush_lsn"])
            return m.get("pgfanout_confirmed_lsn") == slot and m.get("pgfanout_slot_lag_bytes") == 0
        m = wait_metric(port, caught_up, what="confirmed_lsn = slot's confirmed_flush_lsn, slot lag 0")
        assert m.events() == c.expected(), (m.events(), c.expected())
        assert count_output(read_json_lines(out)) == c.nonzero()  # the facts match the stdout sink too
        assert m.get("pgfanout_messages_total") == 1
        assert m.get("pgfanout_slot_lag_bytes") == m.get("pgfanout_server_lsn") - m.get("pgfanout_confirmed_lsn")
        assert m.get("pgfanout_received_bytes_total") > 0
        assert m.get("pgfanout_streaming") == 1 and m.get("pgfanout_reconnects_total") == 0
        for sink in ("stdout", "redis"):
            assert m.get("pgfanout_sink_connected", sink=sink) == 1
            assert m.get("pgfanout_sink_inflight_messages", sink=sink) == 0
            assert m.get("pgfanout_sink_inflight_bytes", sink=sink) == 0
            assert m.get("pgfanout_sink_errors_total", sink=sink) == 0
            assert m.get("pgfanout_sink_retries_total", sink=sink) == 0
        check_histogram(m, "pgfanout_sink_ack_latency_seconds", phase1_txns, sink="redis")
        assert m.series("pgfanout_sink_ack_latency_seconds_count") == [({"sink": "redis"}, phase1_txns)]
        assert existing(client, ["m_a:list", "m_b:list", "m_a:1", "m_a:3", "m_a:19", "m_b:5",
                                 "m_keep"]) == {"m_keep"}

        # Phase 2: Redis killed; transactions committed meanwhile stay in flight and in the slot.
        rs.kill()
        body = wait_http(port, "/readyz", 503, worker=w)
        assert "redis" in body and "not connected" in body, body
        assert http_get(port, "/healthz")[0] == 200
        r = probe(f"127.0.0.1:{port}/readyz")
        assert r.returncode == 1 and "503" in r.stderr, r.stderr
        assert probe(f"127.0.0.1:{port}/healthz").returncode == 0
        before = runner.current_lsn(admin)
        for i in range(4):
            c.txn([(f"INSERT INTO m_a VALUES ({400 + i}, 'down')", None, A, "insert"),
                   (f"INSERT INTO m_b VALUES ({500 + i}, 'down')", None, B, "insert")])
            if i == 0:
                # Past the first unacknowledged commit: neither pgfanout nor the slot may confirm it.
                first_commit_end = lsn_to_int(runner.current_lsn(admin))
        m = wait_metric(port, lambda m: m.get("pgfanout_sink_inflight_messages", sink="redis") == 4,
                        what="4 Redis transactions in flight")
        err0 = m.get("pgfanout_sink_errors_total", sink="redis")
        retry0 = m.get("pgfanout_sink_retries_total", sink="redis")
        assert err0 >= 1
        assert m.get("pgfanout_sink_inflight_bytes", sink="redis") > 0
        assert m.get("pgfanout_sink_connected", sink="redis") == 0
        assert m.get("pgfanout_sink_connected", sink="stdout") == 1
        assert m.get("pgfanout_sink_inflight_messages", sink="stdout") == 0
        assert m.get("pgfanout_server_lsn") > lsn_to_int(before)
        assert m.get("pgfanout_confirmed_lsn") < first_commit_end
        assert m.get("pgfanout_slot_lag_bytes") > 0
        assert m.get("pgfanout_slot_lag_bytes") == m.get("pgfanout_server_lsn") - m.get("pgfanout_confirmed_lsn")
        assert m.events() == c.expected()  # handed to the sinks (stdout has them) though unacked
        check_histogram(m, "pgfanout_sink_ack_latency_seconds", phase1_txns, sink="redis")
        m = wait_metric(port, lambda m: m.get("pgfanout_sink_retries_total", sink="redis") >= retry0 + 2
                        and m.get("pgfanout_sink_errors_total", sink="redis") >= err0 + 2,
                        what="Redis retries and errors growing")
        slot = runner.slot_info(admin, "m_slot")
        assert lsn_to_int(slot["confirmed_flush_lsn"]) < first_commit_end, slot

        # Back: everything acked once, lag back to 0.
        rs.start()
        wait_http(port, "/readyz", 200, worker=w, timeout=30)
        wait_confirmed(admin, "m_slot", runner.current_lsn(admin), worker=w)
        m = wait_metric(port, caught_up, what="caught up after the outage")
        assert m.get("pgfanout_sink_inflight_messages", sink="redis") == 0
        assert m.get("pgfanout_sink_inflight_bytes", sink="redis") == 0
        assert m.get("pgfanout_sink_connected", sink="redis") == 1
        assert m.get("pgfanout_sink_errors_total", sink="redis") >= err0 + 2
        assert m.get("pgfanout_sink_retries_total", sink="redis") >= retry0 + 2
        assert m.get("pgfanout_sink_errors_total", sink="stdout") == 0
        assert m.events() == c.expected()
        assert count_output(read_json_lines(out)) == c.nonzero()
        check_histogram(m, "pgfanout_sink_ack_latency_seconds", c.redis_txns, sink="redis")
        assert w.terminate() == 0, tail(w.stderr_text())
    c.conn.close()
    drop_slot_if_exists(admin, "m_slot")


def test_readyz_follows_a_redis_frozen_past_command_timeout(pgfanout, cluster, admin, rs, tmp_path):
    admin.execute("CREATE TABLE fz_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION fz_pub FOR TABLE fz_t")
    cfg = write_config(tmp_path / "fz.yaml", {"command_timeout_ms": 700,
                                              "rules": [{"table": "fz_t", "keys": ["fz:{id}"]}]})
    port = free_port()
    args = ["--dsn", cluster.dsn(), "--slot", "fz_slot", "--create-slot", "--snapshot", "never", "--publication", "fz_pub",
            "--sink", "redis", "--config", cfg, "--redis", rs.addr, "--status-interval", "0.2",
            "--http-listen", str(port)]
    with runner.Worker(args, stderr_path=str(tmp_path / "fz.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        os.kill(rs.proc.pid, signal.SIGSTOP)
        try:
            admin.execute("INSERT INTO fz_t VALUES (1)")
            t0 = time.monotonic()
            body = wait_http(port, "/readyz", 503, worker=w, timeout=15)
            assert "redis sink not connected" in body, body
            assert time.monotonic() - t0 >= 0.5  # not before the command timeout
            assert http_get(port, "/healthz")[0] == 200
            assert probe(f"127.0.0.1:{port}/readyz").returncode == 1
            m = scrape(port)
            assert m.get("pgfanout_sink_errors_total", sink="redis") >= 1
            assert m.get("pgfanout_sink_inflight_messages", sink="redis") == 1
            time.sleep(1.5)
        finally:
            os.kill(rs.proc.pid, signal.SIGCONT)
        wait_http(port, "/readyz", 200, worker=w, timeout=20)
        assert probe(f"127.0.0.1:{port}/readyz").returncode == 0
        wait_confirmed(admin, "fz_slot", runner.current_lsn(admin), worker=w)
        m = scrape(port)
        check_histogram(m, "pgfanout_sink_ack_latency_seconds", 1, sink="redis")
        assert m.get("pgfanout_sink_retries_total", sink="redis") >= 1
        assert w.terminate() == 0
    drop_slot_if_exists(admin, "fz_slot")


def test_readyz_while_postgres_is_reconnected(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE rc_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION rc_pub FOR TABLE rc_t")
    port = free_port()
    out = str(tmp_path / "rc.out")
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "rc_slot", "--create-slot", "--snapshot", "never",
                        "--publication", "rc_pub", "-o", out, "--status-interval", "0.2",
                        "--http-listen", str(port)], stderr_path=str(tmp_path / "rc.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        pid = runner.slot_info(admin, "rc_slot")["active_pid"]
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        body = wait_http(port, "/readyz", 503, worker=w, timeout=10)
        assert "not streaming" in body, body
        assert http_get(port, "/healthz")[0] == 200
        assert scrape(port).get("pgfanout_streaming") == 0
        wait_http(port, "/readyz", 200, worker=w, timeout=20)
        m = scrape(port)
        assert m.get("pgfanout_reconnects_total") == 1 and m.get("pgfanout_streaming") == 1
        admin.execute("INSERT INTO rc_t VALUES (1)")
        wait_confirmed(admin, "rc_slot", runner.current_lsn(admin), worker=w)
        assert wait_metric(port, lambda m: m.events().get(("public.rc_t", "insert")) == 1)
        assert w.terminate() == 0
    drop_slot_if_exists(admin, "rc_slot")


def test_replication_lag_is_zero_when_caught_up(pgfanout, cluster, admin, tmp_path):
    """Caught up on the published tables: 0 s of replication lag."""
    admin.execute("CREATE TABLE rl_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION rl_pub FOR TABLE rl_t")
    port = free_port()
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "rl_slot", "--temporary-slot", "--publication", "rl_pub",
                        "-o", str(tmp_path / "rl.out"), "--status-interval", "0.2", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "rl.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        admin.execute("INSERT INTO rl_t VALUES (1)")
        wait_confirmed(admin, "rl_slot", runner.current_lsn(admin), worker=w)
        m = wait_metric(port, lambda m: m.events().get(("public.rl_t", "insert")) == 1
                        and m.get("pgfanout_slot_lag_bytes") == 0)
        assert m.get("pgfanout_replication_lag_seconds") == 0
        assert w.terminate() == 0


def test_replication_lag_stays_zero_past_unpublished_wal(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE rl2_t (id int PRIMARY KEY)")
    admin.execute("CREATE TABLE rl2_other (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION rl2_pub FOR TABLE rl2_t")
    port = free_port()
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "rl2_slot", "--temporary-slot", "--publication",
                        "rl2_pub", "-o", str(tmp_path / "rl2.out"), "--status-interval", "0.2",
                        "--http-listen", str(port)], stderr_path=str(tmp_path / "rl2.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        admin.execute("INSERT INTO rl2_t VALUES (1)")
        wait_confirmed(admin, "rl2_slot", runner.current_lsn(admin), worker=w)
        admin.execute("INSERT INTO rl2_other VALUES (1)")   # WAL, but nothing for the slot
        wait_confirmed(admin, "rl2_slot", runner.current_lsn(admin), worker=w)
        time.sleep(1.5)
        m = wait_metric(port, lambda m: m.get("pgfanout_slot_lag_bytes") == 0, what="slot lag 0")
        lag = m.get("pgfanout_replication_lag_seconds")
        assert w.terminate() == 0
    assert lag == 0, f"caught up (slot lag 0) but pgfanout_replication_lag_seconds = {lag}"


def test_healthz_answers_while_a_postgres_connect_hangs(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE hz_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION hz_pub FOR TABLE hz_t")
    port = free_port()
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "hz_slot", "--temporary-slot",
                        "--publication", "hz_pub", "-o", str(tmp_path / "hz.out"),
                        "--http-listen", str(port)], stderr_path=str(tmp_path / "hz.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        pid = runner.slot_info(admin, "hz_slot")["active_pid"]
        answers = []
        os.kill(cluster.proc.pid, signal.SIGSTOP)  # new connections hang; sessions keep working
        try:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert wait_for(lambda: "reconnecting to PostgreSQL" in w.stderr_text(), 10)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                answers.append(http_get(port, "/healthz", timeout=1.0)[0])
                time.sleep(0.2)
        finally:
            os.kill(cluster.proc.pid, signal.SIGCONT)
        wait_http(port, "/readyz", 200, worker=w, timeout=30)
        w.terminate()
    assert all(a == 200 for a in answers), f"/healthz answers while reconnecting: {answers}"


# === 2. Logs ================================================================================

LOGFMT_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"=]+)')


def parse_logfmt(line):
    """Parses one logfmt line strictly (pairs separated by single spaces; quoted values
    with \\" \\\\ \\n \\t escapes); returns {key: value}."""
    out = {}
    pos = 0
    while True:
        m = LOGFMT_PAIR.match(line, pos)
        assert m, f"not logfmt at {line[pos:]!r}: {line!r}"
        key, raw = m.group(1), m.group(2)
        assert key not in out, f"key {key} twice: {line!r}"
        if raw.startswith('"'):
            body = raw[1:-1]
            assert re.fullmatch(r'(?:[^"\\\x00-\x1f]|\\["\\nt])*', body), f"bad escape in {raw!r}"
            raw = re.sub(r'\\(.)', lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)), body)
        out[key] = raw
        pos = m.end()
        if pos == len(line):
            return out
        assert line[pos] == " " and pos + 1 < len(line), f"bad separator in {line!r}"
        pos += 1


def parse_log(text, fmt):
    """Every stderr line as a dict with ts, level and msg; fails on any other line."""
    assert text.endswith("\n"), repr(text[-200:])
    records = []
    for line in text.split("\n")[:-1]:
        rec = parse_logfmt(line) if fmt == "logfmt" else json.loads(line)
        assert isinstance(rec, dict), line
        for k in ("ts", "level", "msg"):
            assert isinstance(rec.get(k), str), f"{k} missing in {line!r}"
        assert TS_RE.match(rec["ts"]), line
        assert rec["level"] in LEVELS, line
        records.append(rec)
    return records


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_formats_parse_line_by_line(pgfanout, cluster, admin, tmp_path, fmt):
    if runner.scalar(admin, "SELECT count(*) FROM pg_publication WHERE pubname = 'lg_pub'") == 0:
        admin.execute("CREATE TABLE lg_t (id int PRIMARY KEY)")
        admin.execute("CREATE PUBLICATION lg_pub FOR TABLE lg_t")
    port = free_port()
    err = tmp_path / "run.err"
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", f"lg_{fmt}", "--temporary-slot",
                        "--publication", "lg_pub", "-o", str(tmp_path / "lg.out"), "--log-format", fmt,
                        "--log-level", "debug", "--http-listen", str(port), "--status-interval", "0.2"],
                       stderr_path=str(err)) as w:
        wait_http(port, "/readyz", 200, worker=w)
        admin.execute("INSERT INTO lg_t VALUES (%s)", (1 if fmt == "json" else 2,))
        wait_for(lambda: "status update" in w.stderr_text() and os.path.getsize(tmp_path / "lg.out") > 0, 10)
        assert w.terminate() == 0
    recs = parse_log(w.stderr_text(), fmt)
    msgs = [r["msg"] for r in recs]
    assert any(r["level"] == "debug" for r in recs)
    assert any(m.startswith("streaming slot \"lg_" + fmt) for m in msgs), msgs
    assert any(m.startswith("received SIGTERM") for m in msgs), msgs

    # An error with quotes, a backslash and a newline (the CREATE PUBLICATION to run) ...
    pub = 'we"ird\\pub'
    r = runner.run_pgfanout(["--dsn", cluster.dsn(), "--slot", "lg_missing", "--temporary-slot",
                             "--publication", pub, "--log-format", fmt], timeout=30)
    assert r.returncode == 1, r.describe()
    recs = parse_log(r.stderr, fmt)
    errors = [x["msg"] for x in recs if x["level"] == "error"]
    assert len(errors) == 1, r.stderr
    assert f'publication "{pub}" does not exist' in errors[0], errors
    assert '\n    CREATE PUBLICATION "we""ird\\pub" FOR ALL TABLES;' in errors[0], errors

    # ... and libpq's own, with a newline and a tab.
    r = runner.run_pgfanout(["--dsn", f"host=127.0.0.1 port={free_port()} dbname=x", "--log-format", fmt],
                            timeout=30)
    assert r.returncode == 1, r.describe()
    recs = parse_log(r.stderr, fmt)
    assert len(recs) == 1 and recs[0]["level"] == "error", r.stderr
    assert "Connection refused\n\tIs the server running" in recs[0]["msg"], recs


def test_log_format_text_default_env_and_bad_value(pgfanout, cluster):
    dead = f"host=127.0.0.1 port={free_port()} dbname=x"
    r = runner.run_pgfanout(["--dsn", dead], timeout=30)
    assert r.returncode == 1
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z pgfanout error: cannot connect", r.stderr), r.stderr
    # log.format from the environment (README: PGFANOUT_<SECTION>_<KEY>); the flag wins.
    r = runner.run_pgfanout(["--dsn", dead], timeout=30, env={"PGFANOUT_LOG_FORMAT": "logfmt"})
    assert r.returncode == 1 and parse_log(r.stderr, "logfmt")[0]["level"] == "error", r.stderr
    r = runner.run_pgfanout(["--dsn", dead, "--log-format", "json"], timeout=30,
                            env={"PGFANOUT_LOG_FORMAT": "logfmt"})
    assert r.returncode == 1 and parse_log(r.stderr, "json")[0]["level"] == "error", r.stderr
    r = runner.run_pgfanout(["--dsn", cluster.dsn(), "--log-format", "xml"], timeout=30)
    assert r.returncode == 2, r.describe()
    assert "--log-format" in r.stderr and "xml" in r.stderr and "logfmt" in r.stderr, r.stderr


def test_server_notices_keep_the_log_format(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE nt_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION nt_pub FOR TABLE nt_t")
    admin.execute("CREATE ROLE svc_chatty LOGIN REPLICATION")
    admin.execute("ALTER ROLE svc_chatty SET client_min_messages = 'log'")
    r = runner.run_pgfanout(["--dsn", cluster.dsn(user="svc_chatty"), "--slot", "nt_slot",
                             "--temporary-slot", "--publication", "nt_pub", "--log-format", "json",
                             "--endpos", "0/1"], timeout=30)
    assert r.returncode == 0, r.describe()
    parse_log(r.stderr, "json")


def test_json_log_keeps_a_message_that_is_not_utf8(pgfanout, cluster, admin):
    if runner.scalar(admin, "SELECT count(*) FROM pg_publication WHERE pubname = 'lg_pub'") == 0:
        admin.execute("CREATE TABLE lg_t (id int PRIMARY KEY)")
        admin.execute("CREATE PUBLICATION lg_pub FOR TABLE lg_t")
    r = subprocess.run([runner.pgfanout_bin(), "--dsn", cluster.dsn(), "--slot", "lg_utf8", "--temporary-slot",
                        "--publication", "lg_pub", "--log-format", "json", "-o", b"/nonexistent/\xff/out"],
                       capture_output=True, timeout=30)
    assert r.returncode == 1, r
    recs = parse_log(r.stderr.decode("utf-8"), "json")
    assert any("/nonexistent/" in x["msg"] for x in recs if x["level"] == "error"), recs


def make_role(admin, name, password, replication=True):
    admin.execute(f"CREATE ROLE {name} LOGIN {'REPLICATION' if replication else ''} PASSWORD '{password}'")


def test_dsn_password_never_logged(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE sec_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION sec_pub FOR TABLE sec_t")
    make_role(admin, SECRET_ROLE, SECRET_PW)
    make_role(admin, NOREPL_ROLE, NOREPL_PW, replication=False)
    dsn = cluster.dsn(user=SECRET_ROLE, password=SECRET_PW)
    secrets = [SECRET_PW, NOREPL_PW, "Wrong-" + SECRET_PW]

    def clean(*texts):
        for t in texts:
            for s in secrets:
                assert s not in t, f"password {s!r} leaked:\n{t[-3000:]}"

    # pg_hba.conf really asks these roles for their password.
    r = runner.run_pgfanout(["--dsn", cluster.dsn(user=SECRET_ROLE), "--publication", "sec_pub",
                             "--temporary-slot", "--slot", "sec_nopw"], timeout=30)
    assert r.returncode == 1 and "password" in r.stderr, r.describe()

    for i, fmt in enumerate(["text", "logfmt", "json"]):
        port = free_port()
        out = tmp_path / f"sec_{fmt}.out"
        with runner.Worker(["--dsn", dsn, "--slot", f"sec_{fmt}", "--temporary-slot", "--publication", "sec_pub",
                            "-o", str(out), "--log-format", fmt, "--log-level", "debug",
                            "--heartbeat-interval", "0.2", "--http-listen", str(port), "--status-interval", "0.2"],
                           stderr_path=str(tmp_path / f"sec_{fmt}.err")) as w:
            wait_http(port, "/readyz", 200, worker=w)
            admin.execute("INSERT INTO sec_t VALUES (%s)", (i,))
            assert wait_for(lambda: out.stat().st_size > 0, 10), tail(w.stderr_text())
            m = wait_metric(port, lambda m: m.get("pgfanout_heartbeats_total") >= 2)
            assert w.terminate() == 0
        clean(w.stderr_text(), out.read_text(), m.text)
        assert [e["after"] for e in read_json_lines(out)] == [{"id": i}]

    # A URI with the password; a wrong password; a role without REPLICATION; --check-config.
    uri = f"postgresql://{SECRET_ROLE}:{SECRET_PW}@127.0.0.1:{cluster.port}/postgres"
    for fmt in ("text", "json"):
        r = runner.run_pgfanout(["--dsn", uri, "--slot", "sec_uri", "--temporary-slot", "--publication",
                                 "sec_pub", "--endpos", "0/1", "--log-format", fmt], timeout=30)
        assert r.returncode == 0, r.describe()
        clean(r.stderr, r.stdout)
        r = runner.run_pgfanout(["--dsn", cluster.dsn(user=SECRET_ROLE, password="Wrong-" + SECRET_PW),
                                 "--slot", "sec_wrong", "--temporary-slot", "--publication", "sec_pub",
                                 "--log-format", fmt], timeout=30)
        assert r.returncode == 1 and "password authentication failed" in r.stderr, r.describe()
        clean(r.stderr, r.stdout)
        r = runner.run_pgfanout(["--dsn", cluster.dsn(user=NOREPL_ROLE, password=NOREPL_PW),
                                 "--slot", "sec_norepl", "--temporary-slot", "--publication", "sec_pub",
                                 "--log-format", fmt], timeout=30)
        assert r.returncode == 1 and "lacks the REPLICATION attribute" in r.stderr, r.describe()
        clean(r.stderr, r.stdout)
    for d in (dsn, uri):
        r = runner.run_pgfanout(["--dsn", d, "--check-config"], timeout=30)
        assert r.returncode == 0, r.describe()
        clean(r.stderr, r.stdout)


@pytest.mark.parametrize("dsn,secret", [
    ("host=127.0.0.1 port=1 user=u password=correct horse", "horse"),
    ("postgresql://u:abc%zzsecret@127.0.0.1:1/db", "zzsecret"),
])
def test_malformed_dsn_does_not_echo_the_password(pgfanout, dsn, secret):
    """libpq's own parse errors quote the offending token ('missing "=" after "horse"',
    'invalid percent-encoded token: "abc%zzsecret"'); pgfanout must not pass them on."""
    for fmt in ("text", "json"):
        r = runner.run_pgfanout(["--dsn", dsn, "--log-format", fmt], timeout=30)
        assert r.returncode in (1, 2), r.describe()
        assert "not valid" in r.stderr, r.stderr
        assert secret not in r.stderr and secret not in r.stdout, r.stderr
    r = runner.run_pgfanout(["--dsn", dsn, "--check-config"], timeout=30)
    assert secret not in r.stderr and secret not in r.stdout, r.stdout + r.stderr


# === 3. Heartbeat ===========================================================================

def test_heartbeat_bounds_retained_wal_while_another_database_writes(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE DATABASE hb_other")
    admin.execute("CREATE TABLE hb_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION hb_pub FOR TABLE hb_t")
    other = runner.connect(cluster.dsn("hb_other"))
    other.execute("CREATE TABLE w (id bigserial PRIMARY KEY, pad text)")
    out = tmp_path / "hb.out"
    port = free_port()
    interval = 0.5
    stop = threading.Event()
    failure = []

    def writer():
        """Steady inserts in the other database, with a CHECKPOINT every 3 s: checkpoints log
        the running-transactions records restart_lsn advances to (otherwise the background
        writer logs one every 15 s)."""
        try:
            last_cp = time.monotonic()
            while not stop.is_set():
                other.execute("INSERT INTO w (pad) SELECT repeat(md5(g::text), 6)"
                              " FROM generate_series(1, 150) g")
                if time.monotonic() - last_cp > 3:
                    other.execute("CHECKPOINT")
                    last_cp = time.monotonic()
                time.sleep(0.02)
        except Exception as e:  # pragma: no cover - shown by the assertion below
            failure.append(e)

    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "hb_slot", "--create-slot", "--snapshot", "never", "--publication", "hb_pub",
                        "-o", str(out), "--heartbeat-interval", str(interval), "--status-interval", "1",
                        "--http-listen", str(port)], stderr_path=str(tmp_path / "hb.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        start = lsn_to_int(runner.current_lsn(admin))
        samples = []  # (seconds, server LSN, confirmed_flush_lsn, restart_lsn)
        thread = threading.Thread(target=writer)
        t0 = time.monotonic()
        thread.start()
        try:
            while time.monotonic() - t0 < 14:
                cur = lsn_to_int(runner.current_lsn(admin))
                s = slot_row(admin, "hb_slot")
                samples.append((time.monotonic() - t0, cur, lsn_to_int(s["confirmed_flush_lsn"]),
                                lsn_to_int(s["restart_lsn"])))
                assert w.running(), tail(w.stderr_text())
                time.sleep(0.25)
        finally:
            stop.set()
            thread.join()
        elapsed = time.monotonic() - t0
        assert not failure, failure
        m = scrape(port)
        # The captured tables were idle: one change now must come out alone.
        admin.execute("INSERT INTO hb_t VALUES (1)")
        wait_confirmed(admin, "hb_slot", runner.current_lsn(admin), worker=w)
        m2 = wait_metric(port, lambda m: m.events().get(("public.hb_t", "insert")) == 1)
        assert w.terminate() == 0
    other.close()

    total = samples[-1][1] - start
    assert total >= 10 << 20, f"the other database wrote only {total} bytes of WAL"

    def lsn_at(t):
        """The server LSN we saw last at or before t seconds (0 before the first sample)."""
        best = 0
        for ts, cur, _, _ in samples:
            if ts <= t:
                best = cur
        return best
    conf_lag = max(cur - conf for _, cur, conf, _ in samples)
    restart_lag_end = samples[-1][1] - samples[-1][3]
    print(f"\nheartbeat: {total / 1e6:.1f} MB of WAL in {elapsed:.1f} s; max confirmed lag "
          f"{conf_lag / 1e6:.2f} MB, restart lag at the end {restart_lag_end / 1e6:.2f} MB, "
          f"{m.get('pgfanout_heartbeats_total'):.0f} heartbeats")
    for ts, cur, conf, restart in samples:
        assert conf >= lsn_at(ts - 4), (f"at {ts:.1f}s confirmed_flush_lsn is more than 4 s of WAL behind:"
                                        f" {(cur - conf) / 1e6:.2f} MB of {total / 1e6:.1f} MB")
        if ts >= 10:
            assert restart >= lsn_at(ts - 10), (f"at {ts:.1f}s restart_lsn is more than 10 s of WAL behind:"
                                                f" {(cur - restart) / 1e6:.2f} MB of {total / 1e6:.1f} MB")
    assert conf_lag < total / 3 and restart_lag_end < total / 3

    assert m.get("pgfanout_heartbeats_total") >= elapsed / interval / 2
    assert m.get("pgfanout_heartbeat_errors_total") == 0
    assert m2.get("pgfanout_messages_total") == 0
    assert m2.events() == {("public.hb_t", op): (1 if op == "insert" else 0)
                           for op in ("insert", "update", "delete", "truncate")}
    text = out.read_text()
    assert "heartbeat" not in text
    assert [(e["op"], e["table"], e["after"]) for e in read_json_lines(out)] == [("insert", "hb_t", {"id": 1})]
    drop_slot_if_exists(admin, "hb_slot")


def test_heartbeat_without_execute_warns_once_and_keeps_streaming(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE DATABASE hb_noexec")
    db = runner.connect(cluster.dsn("hb_noexec"))
    db.execute("CREATE TABLE hn_t (id int PRIMARY KEY)")
    db.execute("CREATE PUBLICATION hn_pub FOR TABLE hn_t")
    db.execute("REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC")
    admin.execute("CREATE ROLE svc_hb_noexec LOGIN REPLICATION")
    db.execute("GRANT SELECT ON hn_t TO svc_hb_noexec")
    assert runner.scalar(db, "SELECT has_function_privilege('svc_hb_noexec',"
                             " 'pg_logical_emit_message(boolean, text, text)', 'EXECUTE')") is False
    port = free_port()
    out = tmp_path / "hn.out"
    with runner.Worker(["--dsn", cluster.dsn("hb_noexec", user="svc_hb_noexec"), "--slot", "hn_slot",
                        "--temporary-slot", "--publication", "hn_pub", "-o", str(out),
                        "--heartbeat-interval", "0.2", "--http-listen", str(port), "--log-format", "json",
                        "--status-interval", "0.2"], stderr_path=str(tmp_path / "hn.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        m = wait_metric(port, lambda m: m.get("pgfanout_heartbeat_errors_total") >= 5, what="heartbeat errors")
        assert m.get("pgfanout_heartbeats_total") == 0
        assert http_get(port, "/readyz")[0] == 200
        db.execute("INSERT INTO hn_t VALUES (7)")
        assert wait_for(lambda: out.stat().st_size > 0, 10), tail(w.stderr_text())
        assert w.running()
        assert w.terminate() == 0
    db.close()
    recs = parse_log(w.stderr_text(), "json")
    warns = [r["msg"] for r in recs if r["level"] == "warn" and "heartbeat" in r["msg"]]
    assert len(warns) == 1, warns  # once a minute at most, though several failed
    assert "permission denied" in warns[0], warns
    assert "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO svc_hb_noexec" in warns[0], \
        warns  # the role's own name, not "it"
    assert not [r for r in recs if r["level"] == "error"], recs
    assert [e["after"] for e in read_json_lines(out)] == [{"id": 7}]


# === 4. Slots ===============================================================================

def test_temporary_slot_and_drop_slot_on_exit(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE sl_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION sl_pub FOR TABLE sl_t")
    base = ["--dsn", cluster.dsn(), "--publication", "sl_pub", "--status-interval", "0.2"]

    # --temporary-slot (with --drop-slot-on-exit too: nothing left to drop, no complaint).
    out = tmp_path / "tmp.out"
    with runner.Worker(base + ["--slot", "sl_tmp", "--temporary-slot", "--drop-slot-on-exit", "-o", str(out)],
                       stderr_path=str(tmp_path / "tmp.err")) as w:
        assert wait_for(lambda: (slot_row(admin, "sl_tmp") or {}).get("active"), 15), tail(w.stderr_text())
        row = slot_row(admin, "sl_tmp")
        assert row["temporary"] is True, row
        admin.execute("INSERT INTO sl_t VALUES (1)")
        assert wait_for(lambda: out.stat().st_size > 0, 10)
        # The session ends: its slot goes with it, and the reconnect creates it again.
        admin.execute("SELECT pg_terminate_backend(%s)", (row["active_pid"],))
        assert wait_for(lambda: "reconnected" in w.stderr_text(), 20), tail(w.stderr_text())
        again = slot_row(admin, "sl_tmp")
        assert again["temporary"] is True and again["active_pid"] != row["active_pid"], (row, again)
        admin.execute("INSERT INTO sl_t VALUES (3)")
        assert wait_for(lambda: len(read_json_lines(out)) == 2, 10), tail(w.stderr_text())
        assert w.terminate() == 0
    assert wait_for(lambda: slot_row(admin, "sl_tmp") is None, 10), slot_row(admin, "sl_tmp")
    assert w.stderr_text().count("created temporary replication slot") == 2, w.stderr_text()
    assert "could not drop" not in w.stderr_text(), w.stderr_text()
    assert [e["after"] for e in read_json_lines(out)] == [{"id": 1}, {"id": 3}]

    # A name that exists: exit 1, the slot untouched.
    admin.execute("SELECT pg_create_logical_replication_slot('sl_exists', 'pgoutput')")
    before = slot_row(admin, "sl_exists")
    r = runner.run_pgfanout(base + ["--slot", "sl_exists", "--temporary-slot"], timeout=30)
    assert r.returncode == 1, r.describe()
    assert 'replication slot "sl_exists" already exists' in r.stderr and "--temporary-slot" in r.stderr, r.stderr
    assert slot_row(admin, "sl_exists") == before
    admin.execute("SELECT pg_drop_replication_slot('sl_exists')")

    # --drop-slot-on-exit: dropped after SIGTERM, exit 0.
    out = tmp_path / "drop.out"
    with runner.Worker(base + ["--slot", "sl_drop", "--create-slot", "--snapshot", "never", "--drop-slot-on-exit", "-o", str(out)],
                       stderr_path=str(tmp_path / "drop.err")) as w:
        assert wait_for(lambda: (slot_row(admin, "sl_drop") or {}).get("active"), 15), tail(w.stderr_text())
        assert slot_row(admin, "sl_drop")["temporary"] is False
        admin.execute("INSERT INTO sl_t VALUES (2)")
        assert wait_for(lambda: out.stat().st_size > 0, 10)
        assert w.terminate() == 0, tail(w.stderr_text())
    assert slot_row(admin, "sl_drop") is None
    assert 'dropped replication slot "sl_drop"' in w.stderr_text()


def test_publication_created_after_the_slot_stops_with_the_fix(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE pa_t (id int PRIMARY KEY)")
    admin.execute("SELECT pg_create_logical_replication_slot('pa_slot', 'pgoutput')")
    admin.execute("INSERT INTO pa_t VALUES (1)")        # before the publication exists
    admin.execute("CREATE PUBLICATION pa_pub FOR TABLE pa_t")
    after_pub = runner.current_lsn(admin)
    admin.execute("INSERT INTO pa_t VALUES (2)")
    confirmed0 = runner.slot_info(admin, "pa_slot")["confirmed_flush_lsn"]
    args = ["--dsn", cluster.dsn(), "--slot", "pa_slot", "--publication", "pa_pub", "--status-interval", "0.2"]

    t0 = time.monotonic()
    r = runner.run_pgfanout(args + ["--drop-slot-on-exit", "--log-format", "json"], timeout=40)
    assert not r.timed_out and r.returncode == 1, r.describe()
    assert time.monotonic() - t0 < 15
    recs = parse_log(r.stderr, "json")
    text = "\n".join(x["msg"] for x in recs)
    assert 'publication "pa_pub" does not exist' in text, text
    assert "created before publication" in text and "pg_replication_slot_advance" in text, text
    assert "pg_drop_replication_slot('pa_slot')" in text and "--create-slot" in text, text
    assert "reconnecting" not in text, text
    # Not a clean stop: the slot stays (--drop-slot-on-exit) and has not moved.
    runner.wait_slot_inactive(admin, "pa_slot")
    assert runner.slot_info(admin, "pa_slot")["confirmed_flush_lsn"] == confirmed0

    # The fix it names works: skip the WAL from before the publication.
    admin.execute("SELECT pg_replication_slot_advance('pa_slot', %s::pg_lsn)", (after_pub,))
    r = runner.run_pgfanout(args + ["--endpos", runner.current_lsn(admin)], timeout=40)
    assert r.returncode == 0, r.describe()
    assert [(e["op"], e["after"]) for e in map(json.loads, r.stdout.splitlines())] == [("insert", {"id": 2})]
    drop_slot_if_exists(admin, "pa_slot")


# === 5. Least privilege =====================================================================

def test_least_privilege_role_streams_to_stdout_and_redis(pgfanout, cluster, admin, rs, tmp_path):
    admin.execute("CREATE TABLE lp_orders (id int PRIMARY KEY, status text)")
    admin.execute("CREATE TABLE lp_products (id int PRIMARY KEY, slug text)")
    admin.execute("CREATE TABLE lp_secret (id int PRIMARY KEY, card text)")
    admin.execute("CREATE PUBLICATION lp_pub FOR TABLE lp_orders, lp_products")
    make_role(admin, CDC_ROLE, CDC_PW)
    admin.execute(f"GRANT SELECT ON lp_orders, lp_products TO {CDC_ROLE}")
    with admin.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication, rolinherit,"
                    " (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)"
                    " FROM pg_roles r WHERE rolname = %s", (CDC_ROLE,))
        assert cur.fetchone() == (False, False, False, False, True, True, 0)
    assert runner.scalar(admin, f"SELECT has_table_privilege('{CDC_ROLE}', 'lp_secret', 'SELECT')") is False
    assert runner.scalar(admin, f"SELECT has_database_privilege('{CDC_ROLE}', 'postgres', 'CREATE')") is False

    cfg = write_config(tmp_path / "lp.yaml", {"rules": [
        {"table": "lp_orders", "keys": ["lp_orders:{id}", "lp_orders:status:{status}"]},  # identity warning
        {"table": "lp_products", "keys": ["lp_products:{id}", "lp_products:{sluggo}"]},   # unknown column
        {"table": "lp_secret", "keys": ["lp_secret:{id}"]},                                # not published
    ]})
    client = rs.client()
    keys = [f"lp_orders:{i}" for i in range(1, 6)] + [f"lp_products:{i}" for i in range(1, 4)]
    keys += ["lp_orders:status:new", "lp_orders:status:paid", "lp_secret:1"]
    fill(client, keys)
    port = free_port()
    out = tmp_path / "lp.out"
    with runner.Worker(["--dsn", cluster.dsn(user=CDC_ROLE, password=CDC_PW), "--slot", "lp_slot", "--create-slot", "--snapshot", "never",
                        "--drop-slot-on-exit", "--publication", "lp_pub", "--sink", "stdout,redis", "-o", str(out),
                        "--config", cfg, "--redis", rs.addr, "--heartbeat-interval", "0.3",
                        "--status-interval", "0.2", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "lp.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        c = Counter(admin)
        c.txn([("INSERT INTO lp_orders VALUES (1, 'new'), (2, 'new'), (3, 'new')", None, "public.lp_orders", "insert"),
               ("INSERT INTO lp_products VALUES (1, 'a'), (2, 'b')", None, "public.lp_products", "insert")])
        c.txn([("UPDATE lp_orders SET status = 'paid' WHERE id = 2", None, "public.lp_orders", "update")])
        c.txn([("DELETE FROM lp_products WHERE id = 1", None, "public.lp_products", "delete")])
        c.txn([("INSERT INTO lp_secret VALUES (1, '4111')", None, None, None)], redis=False)
        wait_confirmed(admin, "lp_slot", runner.current_lsn(admin), worker=w)
        m = wait_metric(port, lambda m: m.get("pgfanout_heartbeats_total") >= 2, what="heartbeats as cdc")
        assert m.events() == c.expected()
        assert m.get("pgfanout_heartbeat_errors_total") == 0
        assert w.terminate() == 0, tail(w.stderr_text())
    assert runner.slot_info(admin, "lp_slot") is None  # dropped by cdc itself
    assert count_output(read_json_lines(out)) == c.nonzero()
    stderr = w.stderr_text()
    assert "cannot check" not in stderr and " error" not in stderr, stderr
    assert "lp_orders use status" in stderr and "REPLICA IDENTITY FULL" in stderr, stderr
    assert "lp_products name sluggo" in stderr, stderr
    assert 'lp_secret, but publication "lp_pub" does not include it' in stderr, stderr
    assert existing(client, keys) == {"lp_orders:4", "lp_orders:5", "lp_products:3", "lp_secret:1"}


# === 6. Partitioned tables ==================================================================

def test_partitioned_root_names_events_and_rules_with_new_partitions(pgfanout, cluster, admin, rs, tmp_path):
    admin.execute("CREATE TABLE pt (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
    admin.execute("CREATE TABLE pt_eu PARTITION OF pt FOR VALUES IN ('eu')")
    admin.execute("CREATE TABLE pt_us PARTITION OF pt FOR VALUES IN ('us')")
    admin.execute("CREATE PUBLICATION pt_pub FOR TABLE pt WITH (publish_via_partition_root = true)")
    cfg = write_config(tmp_path / "pt.yaml", {"rules": [{"table": "pt", "keys": ["pt:{id}"],
                                                         "table_keys": ["pt:list"]}]})
    client = rs.client()
    all_keys = [f"pt:{i}" for i in range(1, 80)] + ["pt:list"]
    fill(client, all_keys)
    port = free_port()
    out = tmp_path / "pt.out"
    c = Counter(admin)
    P = "public.pt"
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "pt_slot", "--create-slot", "--snapshot", "never", "--publication", "pt_pub",
                        "--sink", "stdout,redis", "-o", str(out), "--config", cfg, "--redis", rs.addr,
                        "--status-interval", "0.2", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "pt.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        c.txn([("INSERT INTO pt VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'eu', 'c')", None, P, "insert")])
        # Created, attached and sub-partitioned while pgfanout runs.
        admin.execute("CREATE TABLE pt_asia PARTITION OF pt FOR VALUES IN ('asia')")
        c.txn([("INSERT INTO pt_asia VALUES (10, 'asia', 'direct')", None, P, "insert"),
               ("INSERT INTO pt VALUES (11, 'asia', 'routed')", None, P, "insert")])
        admin.execute("CREATE TABLE pt_sa (id int, region text, v text, PRIMARY KEY (id, region))")
        admin.execute("ALTER TABLE pt ATTACH PARTITION pt_sa FOR VALUES IN ('sa')")
        admin.execute("CREATE TABLE pt_af PARTITION OF pt FOR VALUES IN ('af') PARTITION BY RANGE (id)")
        admin.execute("CREATE TABLE pt_af_low PARTITION OF pt_af FOR VALUES FROM (0) TO (100)")
        c.txn([("INSERT INTO pt_sa VALUES (20, 'sa', 'attached')", None, P, "insert"),
               ("INSERT INTO pt VALUES (30, 'af', 'nested'), (31, 'af', 'nested')", None, P, "insert")])
        c.txn([("UPDATE pt_asia SET v = 'changed' WHERE id = 10", None, P, "update"),
               ("UPDATE pt_af_low SET v = 'changed' WHERE id = 31", None, P, "update")])
        c.txn([("DELETE FROM pt WHERE id = 20", None, P, "delete")])
        # A row moving between partitions: pgoutput sends a delete and an insert.
        admin.execute("UPDATE pt SET region = 'asia' WHERE id = 3")
        c.events[(P, "delete")] += 1
        c.events[(P, "insert")] += 1
        wait_confirmed(admin, "pt_slot", runner.current_lsn(admin), worker=w)
        m = wait_metric(port, lambda m: m.events() == c.expected(), what=f"events {c.expected()}")
        assert {t for t, _ in m.events()} == {P}
        assert w.terminate() == 0, tail(w.stderr_text())
    events = read_json_lines(out)
    assert {(e["schema"], e["table"]) for e in events} == {("public", "pt")}, events
    assert count_output(events) == c.nonzero()
    assert "partitioned" not in w.stderr_text(), w.stderr_text()
    gone = {"pt:1", "pt:2", "pt:3", "pt:10", "pt:11", "pt:20", "pt:30", "pt:31", "pt:list"}
    assert existing(client, all_keys) == set(all_keys) - gone
    drop_slot_if_exists(admin, "pt_slot")

    # Without publish_via_partition_root: the partition's name, and a warning at startup.
    admin.execute("CREATE PUBLICATION pt_pub_leaf FOR TABLE pt")
    out = tmp_path / "leaf.out"
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "pt_leaf", "--temporary-slot", "--publication",
                        "pt_pub_leaf", "--sink", "stdout,redis", "-o", str(out), "--config", cfg,
                        "--redis", rs.addr], stderr_path=str(tmp_path / "leaf.err")) as w:
        wait_streaming(w)
        admin.execute("INSERT INTO pt VALUES (40, 'eu', 'leaf')")
        assert wait_for(lambda: out.stat().st_size > 0, 10), tail(w.stderr_text())
        assert w.terminate() == 0
    assert [(e["table"], e["after"]["id"]) for e in read_json_lines(out)] == [("pt_eu", 40)]
    assert "publish_via_partition_root = true" in w.stderr_text(), w.stderr_text()


# === 7. What a new user hits: visibility and early errors =====================================

def test_progress_lines_and_endpos_said(pgfanout, cluster, admin, tmp_path):
    """log.progress_interval: an info line per interval with the changes and transactions since
    the last one, the confirmed LSN, lag and in-flight per sink; 0 turns them off; reaching
    --endpos is said."""
    admin.execute("CREATE TABLE pg_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION pg_pub FOR TABLE pg_t")
    admin.execute("SELECT pg_create_logical_replication_slot('pg_slot', 'pgoutput')")
    out = str(tmp_path / "pg.out")
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "pg_slot", "--publication", "pg_pub", "-o", out,
                        "--status-interval", "0.2", "--progress-interval", "0.5"],
                       stderr_path=str(tmp_path / "pg.err")) as w:
        wait_streaming(w)
        for i in range(7):
            admin.execute("INSERT INTO pg_t SELECT g FROM generate_series(%s::int, %s::int) g", (i * 10, i * 10 + 9))
        lines = []

        def counted():
            lines[:] = re.findall(r"progress: (\d+) changes in (\d+) transactions in the last 0 s; confirmed "
                                  r"([0-9A-F]+/[0-9A-F]+); lag (\d+) bytes, ([\d.]+) s; in flight: stdout (\d+)",
                                  w.stderr_text())
            return sum(int(x[0]) for x in lines) == 70 and sum(int(x[1]) for x in lines) == 7
        assert wait_for(counted, 20), (lines, tail(w.stderr_text()))
        assert " info: progress:" in w.stderr_text()
        end = runner.current_lsn(admin)
        assert w.terminate() == 0
    r = runner.run_pgfanout(["--dsn", cluster.dsn(), "--slot", "pg_slot", "--publication", "pg_pub",
                             "-o", str(tmp_path / "pg2.out"), "--endpos", end, "--progress-interval", "0"], timeout=30)
    assert r.returncode == 0, r.describe()
    assert f"reached --endpos {end}" in r.stderr, r.stderr
    assert "progress:" not in r.stderr, r.stderr
    drop_slot_if_exists(admin, "pg_slot")


def test_slot_lag_bytes_is_right_before_the_first_status_update(pgfanout, cluster, admin, tmp_path):
    """pgfanout_slot_lag_bytes starts from the slot's confirmed_flush_lsn, not 0: right after
    startup, with a 10 s status interval, it is the real lag, not the server's whole LSN."""
    admin.execute("CREATE TABLE lagb_t (id int PRIMARY KEY, pad text)")
    admin.execute("INSERT INTO lagb_t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
    admin.execute("CREATE PUBLICATION lagb_pub FOR TABLE lagb_t")
    admin.execute("SELECT pg_create_logical_replication_slot('lagb_slot', 'pgoutput')")
    server = lsn_to_int(runner.current_lsn(admin))
    assert server > 4 << 20, server
    port = free_port()
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "lagb_slot", "--publication", "lagb_pub",
                        "-o", str(tmp_path / "lagb.out"), "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "lagb.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        m = scrape(port)
        assert m.get("pgfanout_confirmed_lsn") >= lsn_to_int(runner.slot_info(admin, "lagb_slot")["confirmed_flush_lsn"])
        assert m.get("pgfanout_slot_lag_bytes") < 1 << 20, m.text
        assert w.terminate() == 0
    drop_slot_if_exists(admin, "lagb_slot")


def test_replication_lag_counts_from_the_oldest_unacknowledged_transaction(pgfanout, cluster, admin, rs, tmp_path):
    """With Redis frozen, a committed transaction stays unacknowledged: the replication lag grows
    from its commit time (it used to stay 0, since the server had nothing more to send); once
    Redis answers again it falls back to 0."""
    admin.execute("CREATE TABLE ulag_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION ulag_pub FOR TABLE ulag_t")
    admin.execute("SELECT pg_create_logical_replication_slot('ulag_slot', 'pgoutput')")
    cfg = write_config(tmp_path / "ulag.yaml", {"rules": [{"table": "ulag_t", "keys": ["ulag:{id}"]}],
                                               "command_timeout_ms": 60000})
    port = free_port()
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "ulag_slot", "--publication", "ulag_pub", "--sink", "redis",
                        "--config", cfg, "--redis", rs.addr, "--status-interval", "0.2", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "ulag.err")) as w:
        wait_http(port, "/readyz", 200, worker=w)
        os.kill(rs.proc.pid, signal.SIGSTOP)
        try:
            admin.execute("INSERT INTO ulag_t VALUES (1)")
            time.sleep(3.5)
            lag = scrape(port).get("pgfanout_replication_lag_seconds")
            assert lag >= 3.0, f"replication lag {lag} s with a 3.5 s old unacknowledged transaction"
        finally:
            os.kill(rs.proc.pid, signal.SIGCONT)
        assert wait_metric(port, lambda m: m.get("pgfanout_replication_lag_seconds") == 0, what="lag back to 0")
        assert w.terminate() == 0
    drop_slot_if_exists(admin, "ulag_slot")


def test_bad_output_path_fails_before_a_slot_exists(pgfanout, cluster, admin, tmp_path):
    """-o to a file that cannot be opened fails before --create-slot makes a slot that would
    then pin WAL."""
    admin.execute("CREATE TABLE op_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION op_pub FOR TABLE op_t")
    bad = str(tmp_path / "no" / "such" / "dir" / "out.jsonl")
    r = runner.run_pgfanout(["--dsn", cluster.dsn(), "--slot", "op_slot", "--create-slot", "--snapshot", "never", "--publication", "op_pub",
                             "-o", bad], timeout=30)
    assert r.returncode == 1 and bad in r.stderr, r.describe()
    assert runner.slot_info(admin, "op_slot") is None, "a slot was created before the output failed"


def test_redis_without_rules_and_unknown_variables_are_warned(pgfanout, cluster, admin, rs, tmp_path):
    """A Redis sink with no rules invalidates nothing on row changes: said at startup.  A
    PGFANOUT_* variable that names no setting (a typo) is said too, with the nearest name."""
    admin.execute("CREATE TABLE nr_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION nr_pub FOR TABLE nr_t")
    cfg = write_config(tmp_path / "nr.yaml", {})
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "nr_slot", "--temporary-slot", "--publication", "nr_pub",
                        "--sink", "redis", "--config", cfg, "--redis", rs.addr],
                       env={"PGFANOUT_SOURCE_SLOTT": "typo", "PGFANOUT_LOG_LEVLE": "debug"},
                       stderr_path=str(tmp_path / "nr.err")) as w:
        wait_streaming(w)
        text = w.stderr_text()
        assert w.terminate() == 0
    assert re.search(r"warn: redis: no rules .*only pg_logical_emit_message\(true, 'pgfanout.invalidate'", text), text
    assert "unknown environment variable PGFANOUT_SOURCE_SLOTT ignored (did you mean PGFANOUT_SOURCE_SLOT?)" in text
    assert "unknown environment variable PGFANOUT_LOG_LEVLE ignored (did you mean PGFANOUT_LOG_LEVEL?)" in text
    assert "PGFANOUT_SOURCE_DSN" not in text and "unknown environment variable PGFANOUT_BIN" not in text
