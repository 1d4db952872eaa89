"""The README's first command, `bash scripts/quickstart.sh`, without its apt and CMake steps:
runs scripts/quickstart.py with the built binary (PGFANOUT_BIN) and checks what it shows.

The script's own verdict is not trusted.  It writes the raw facts with --summary (the Kafka
records' bytes, the Redis keys before and after, the DEL commands Redis received, pids and temp
dirs), and this test

- decodes the Kafka records itself with the pgfanout.v1 classes and expects exactly the insert
  of row 4, the update of row 2 (slug mug -> blue-mug), the delete of row 3 with its tombstone,
  and the pgfanout.invalidate message, each with its before/after images and key; and finds
  each of them, in order, in the script's output;
- computes from those decoded events and the demo's rules which keys pgfanout must delete, and
  compares that with the DEL commands Redis saw, with the keys that vanished (exactly the
  cached keys named) and stayed (the rest), and with the GONE/kept marks in the output;
- checks that every process the script started has exited and its temp dirs are gone, also
  after a Ctrl-C (SIGINT to its process group, as a terminal sends it) while Kafka starts and
  while pgfanout streams, and after a SIGTERM.
"""
import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import kafka_replay
import runner

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(REPO, "scripts", "quickstart.py")
PYTHON = "/usr/bin/python3"

TOPIC, MESSAGE_TOPIC = "pgfanout.public.products", "pgfanout.messages"
# The demo's rules (scripts/quickstart.py CONFIG) and its initial cache.
TEMPLATES = ["product:{id}", "product:slug:{slug}"]
TABLE_KEYS = ["products:list"]
INITIAL_ROWS = [{"id": 1, "slug": "teapot", "name": "Teapot", "price": "18.00"},
                {"id": 2, "slug": "mug", "name": "Mug", "price": "8.50"},
                {"id": 3, "slug": "kettle", "name": "Kettle", "price": "30.00"}]
CACHED = ({f"product:{r['id']}" for r in INITIAL_ROWS}
          | {f"product:slug:{r['slug']}" for r in INITIAL_ROWS}
          | {"products:list", "homepage:featured", "homepage:banner"})
TEXT_COLUMNS = {"slug", "name"}


@pytest.fixture
def qs_tmp():
    """A TMPDIR of our own for the script: every temp dir it makes lands here, and every
    process it starts names a path in here (except redis-server, which rewrites its title)."""
    d = tempfile.mkdtemp(prefix="pgfanout-qs-test-")
    os.chmod(d, 0o755)  # the postgres user must reach its cluster below
    yield d
    shutil.rmtree(d, ignore_errors=True)


def script_env(tmp, pgfanout):
    env = dict(os.environ, TMPDIR=tmp)
    env.pop("QUICKSTART_T0_NS", None)
    env.setdefault("PGFANOUT_PYPROTO", os.path.join(os.path.dirname(pgfanout), "pyproto"))
    return env


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def procs_naming(path):
    """Live processes whose command line contains path."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmd and alive(int(p)):
            found.append((int(p), cmd[:200]))
    return found


def assert_nothing_left(tmp, pids, allowed=()):
    left = [(name, pid) for name, pid in pids.items() if alive(pid)]
    assert not left, f"still running after the script exited: {left}"
    procs = procs_naming(tmp)
    assert not procs, f"processes still naming {tmp}: {procs}"
    stray = sorted(set(os.listdir(tmp)) - set(allowed))
    assert not stray, f"temp dirs left behind in {tmp}: {stray}"


def shown_pids(out):
    """{name: pid} from the script's "... pid N" lines."""
    pids = {}
    for line in out.splitlines():
        m = re.search(r"\] (PostgreSQL|Redis|Kafka|pgfanout)\b.*\bpid (\d+)", line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    return pids


# --- decoding the raw facts, independently of the script ----------------------------------

def py_value(v):
    kind = v.WhichOneof("kind")
    return None if kind == "is_null" else getattr(v, kind)


def columns_dict(columns):
    return {c.name: py_value(c.value) for c in columns}


def decode(facts):
    """(row events, message events) from the summary's raw records, in offset order.  A row
    event is a dict: op, table, key, before, after (dicts or None), commit_lsn, txn_index."""
    os.environ.setdefault("PGFANOUT_PYPROTO",
                          os.path.join(os.path.dirname(runner.pgfanout_bin()), "pyproto"))
    pb = kafka_replay.event_pb2()
    rows, messages = [], []
    records = sorted(facts["records"], key=lambda r: (r["topic"], r["partition"], r["offset"]))
    assert {r["topic"] for r in records} == {TOPIC, MESSAGE_TOPIC}, records
    for r in records:
        key = base64.b64decode(r["key"]) if r["key"] else None
        value = base64.b64decode(r["value"]) if r["value"] else None
        if r["topic"] == MESSAGE_TOPIC:
            ev = pb.Event()
            ev.ParseFromString(value)
            assert ev.op == pb.OP_MESSAGE
            messages.append({"prefix": ev.message.prefix, "content": ev.message.content,
                             "transactional": ev.message.transactional, "key": key})
            continue
        k = pb.Key()
        k.ParseFromString(key)
        assert (k.schema, k.table) == ("public", "products")
        if value is None:
            rows.append({"op": "tombstone", "key": columns_dict(k.columns)})
            continue
        ev = pb.Event()
        ev.ParseFromString(value)
        assert ev.key.columns == k.columns, "record key differs from Event.key"
        rows.append({
            "op": pb.Op.Name(ev.op)[3:].lower(),
            "table": f"{ev.source.schema}.{ev.source.table}",
            "key": columns_dict(ev.key.columns),
            "before": columns_dict(ev.before.columns) if ev.HasField("before") else None,
            "after": columns_dict(ev.after.columns) if ev.HasField("after") else None,
            "commit_lsn": ev.source.commit_lsn, "txn_index": ev.source.txn_index,
        })
    return rows, messages


def shown_row(row):
    """A row image as the script prints it: text columns quoted, numbers bare."""
    return "{" + ", ".join(f"{k}: {json.dumps(v) if k in TEXT_COLUMNS else v}"
                           for k, v in row.items()) + "}"


def expected_keys(rows, messages):
    """The keys the demo's rules name for the decoded events: each template over the old and
    the new row, the table keys for any row change, and the keys of pgfanout.invalidate
    messages."""
    keys = set()
    for ev in rows:
        if ev["op"] == "tombstone":
            continue
        for image in (ev["before"], ev["after"]):
            if image:
                keys |= {t.format(**image) for t in TEMPLATES}
        keys |= set(TABLE_KEYS)
    for m in messages:
        if m["prefix"] == "pgfanout.invalidate" and m["transactional"]:
            keys |= set(m["content"].decode().split())
    return keys


# --- the tests -----------------------------------------------------------------------------

def test_quickstart(pgfanout, qs_tmp):
    summary = os.path.join(qs_tmp, "summary.json")
    t0 = time.monotonic()
    r = subprocess.run([PYTHON, SCRIPT, "--bin", pgfanout, "--summary", summary],
                       cwd=REPO, env=script_env(qs_tmp, pgfanout), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    took = time.monotonic() - t0
    out = r.stdout
    print(out, r.stderr, f"(took {took:.1f} s)", sep="\n")
    assert r.returncode == 0, f"quickstart exited {r.returncode}:\n{out}\n{r.stderr}"
    with open(summary) as f:
        facts = json.load(f)
    assert facts["status"] == 0 and facts["pgfanout_exit"] == 0 and not facts["problems"]

    # Everything it started is gone; what it printed as pids is what it started.
    assert set(facts["pids"]) == {"postgres", "redis", "kafka", "pgfanout"}
    assert shown_pids(out) == {"PostgreSQL": facts["pids"]["postgres"],
                               "Redis": facts["pids"]["redis"],
                               "Kafka": facts["pids"]["kafka"],
                               "pgfanout": facts["pids"]["pgfanout"]}
    assert_nothing_left(qs_tmp, facts["pids"], allowed=["summary.json"])
    assert all(d.startswith(qs_tmp + "/") for d in facts["dirs"]), facts["dirs"]

    # Kafka: exactly these events, decoded here.
    rows, messages = decode(facts)
    row2_old = INITIAL_ROWS[1]
    row2_new = {**row2_old, "slug": "blue-mug", "name": "Blue mug"}
    row3 = INITIAL_ROWS[2]
    row4 = {"id": 4, "slug": "lamp", "name": "Desk lamp", "price": "24.00"}
    summary_of = [(e["op"], e.get("before"), e.get("after")) for e in rows]
    assert summary_of == [("insert", None, row4), ("update", row2_old, row2_new),
                          ("delete", row3, None), ("tombstone", None, None)], rows
    assert all(e["table"] == "public.products" for e in rows[:3])
    # The key is the primary key, also under REPLICA IDENTITY FULL (the new row's, or the old
    # row's for a delete); the tombstone carries the delete's key.
    assert [e["key"] for e in rows] == [{"id": 4}, {"id": 2}, {"id": 3}, {"id": 3}]
    # one transaction each, in commit order
    assert [e["txn_index"] for e in rows[:3]] == [0, 0, 0]
    assert rows[0]["commit_lsn"] < rows[1]["commit_lsn"] < rows[2]["commit_lsn"]
    assert messages == [{"prefix": "pgfanout.invalidate", "content": b"homepage:featured",
                         "transactional": True, "key": b"pgfanout.invalidate"}]

    # ... and the output shows each of them, decoded, in this order.
    lines = out.splitlines()
    want = [r"^\s+topic pgfanout\.public\.products$",
            rf"insert\s+products\s+after\s+{re.escape(shown_row(row4))}\s+key \{{id: 4\}}$",
            rf"update\s+products\s+before\s+{re.escape(shown_row(row2_old))}$",
            rf"^\s+after\s+{re.escape(shown_row(row2_new))}\s+key \{{id: 2\}}$",
            rf"delete\s+products\s+before\s+{re.escape(shown_row(row3))}\s+key \{{id: 3\}}$",
            r"tombstone\s+products\s+key \{id: 3\}, null value",
            r"^\s+topic pgfanout\.messages$",
            r'message\s+pgfanout\.invalidate\s+"homepage:featured" \(transactional\)']
    at = -1
    for pattern in want:
        hits = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert hits, f"no line matches {pattern!r} in:\n{out}"
        assert hits[0] > at, f"{pattern!r} out of order in:\n{out}"
        at = hits[0]

    # Redis: the keys the rules name for these events are exactly the DELs Redis received ...
    named = expected_keys(rows, messages)
    assert named == {"product:4", "product:slug:lamp", "product:2", "product:slug:mug",
                     "product:slug:blue-mug", "product:3", "product:slug:kettle",
                     "products:list", "homepage:featured"}
    cmds = [c.split() for c in facts["redis_commands"]]
    assert cmds and all(c[0].upper() == "DEL" for c in cmds), facts["redis_commands"]
    # Each key goes with its lease key (redis.leases, on by default), in the same DEL.
    assert {k for c in cmds for k in c[1:]} == named | {k + ":lease" for k in named}
    assert all(k + ":lease" in c[1:] for c in cmds for k in c[1:] if not k.endswith(":lease"))
    assert len(cmds) == 4  # one per transaction
    # ... of the cached keys exactly those vanished, and the rest stayed ...
    before, after = set(facts["redis_before"]), set(facts["redis_after"])
    # pgfanout's read-your-writes key is the one key that appears, raised by EVALSHA (MONITOR
    # shows its SET) past the last change.
    assert "pgfanout:ryw:quickstart" in after and facts["ryw_raises"] >= 1 and facts["ryw"] > 0
    after.discard("pgfanout:ryw:quickstart")
    assert before == CACHED
    assert before - after == CACHED & named == {
        "product:2", "product:3", "product:slug:mug", "product:slug:kettle", "products:list",
        "homepage:featured"}
    assert after == CACHED - named == {"product:1", "product:slug:teapot", "homepage:banner"}
    # ... and the output says so, key by key, and shows the commands.
    for key in CACHED:
        mark = "kept" if key in after else "GONE"
        assert re.search(rf"^\s+{re.escape(key)}\s+{mark}\b", out, re.M), \
            f"{key} not shown as {mark}:\n{out}"
    for c in facts["redis_commands"]:
        assert re.search(rf"^\s+{re.escape(c)}$", out, re.M), f"{c!r} not shown:\n{out}"

    # Short, with timing, and done well within the time a first-time user waits.
    assert len(lines) <= 70, f"{len(lines)} lines of output"
    m = re.search(r"^done in ([\d.]+) s: 5 Kafka records, 6 cached keys invalidated,"
                  r" 3 left alone", out, re.M)
    assert m, out
    assert all(re.match(r"\[\s*\d+\.\ds\] ", line) for line in lines if line.startswith("["))
    assert took < 120, f"quickstart took {took:.1f} s"


def start_script(pgfanout, tmp):
    """Starts the script in a process group of its own, as a shell runs a foreground job."""
    return subprocess.Popen([PYTHON, SCRIPT, "--bin", pgfanout], cwd=REPO,
                            env=script_env(tmp, pgfanout), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def read_until(proc, pattern, timeout=120):
    """Reads the script's stdout until a line matches pattern; returns what it read."""
    out = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
        if re.search(pattern, out.decode(errors="replace"), re.M):
            return out.decode(errors="replace")
    proc.kill()
    pytest.fail(f"no line matching {pattern!r} within {timeout} s:\n{out.decode()}")


@pytest.mark.parametrize("when,pattern,delay,how", [
    ("initdb", r"starting PostgreSQL, Redis and Kafka", 0.4, "ctrl-c"),
    ("kafka-starting", r"starting PostgreSQL, Redis and Kafka", 1.3, "ctrl-c"),
    ("streaming", r"changes in PostgreSQL", 0.0, "ctrl-c"),
    ("streaming-sigterm", r"pgfanout streaming", 0.0, "sigterm"),
])
def test_quickstart_interrupted(pgfanout, qs_tmp, when, pattern, delay, how):
    proc = start_script(pgfanout, qs_tmp)
    try:
        out = read_until(proc, pattern)
        time.sleep(delay)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rest, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out += rest.decode(errors="replace")
    err = err.decode(errors="replace")
    print(out, err, f"(stopped {took:.1f} s after the signal)", sep="\n")
    assert proc.returncode == 130, f"exit {proc.returncode}:\n{out}\n{err}"
    assert "interrupted" in err, err
    assert "Traceback" not in err, err
    pids = shown_pids(out)
    if when not in ("initdb", "kafka-starting"):
        assert set(pids) == {"PostgreSQL", "Redis", "Kafka", "pgfanout"}, out
    assert_nothing_left(qs_tmp, pids)
    assert took < 60, f"took {took:.1f} s to stop"


def test_quickstart_sh_runs_this_script():
    """quickstart.sh (apt and CMake not exercised here) is valid bash and ends by running
    scripts/quickstart.py with Debian's python and the binary it built."""
    sh = os.path.join(REPO, "scripts", "quickstart.sh")
    subprocess.run(["bash", "-n", sh], check=True)
    with open(sh) as f:
        text = f.read()
    assert re.search(r"^exec /usr/bin/python3 scripts/quickstart\.py --bin build/pgfanout$",
                     text, re.M), text
    assert "scripts/install-deps.sh" in text and "--target pgfanout pyproto" in text


def test_quickstart_pgfanout_fails(qs_tmp):
    """When pgfanout stops with an error, the script says so with pgfanout's log, exits 1 and
    still stops the servers."""
    fake = os.path.join(qs_tmp, "fake-pgfanout")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho 'pgfanout error: something is wrong (fake binary)' >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    r = subprocess.run([PYTHON, SCRIPT, "--bin", fake], cwd=REPO,
                       env=script_env(qs_tmp, runner.pgfanout_bin()), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    print(r.stdout, r.stderr, sep="\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pgfanout exited with 1 at start" in r.stderr
    assert "something is wrong (fake binary)" in r.stderr
    assert "Traceback" not in r.stderr
    assert_nothing_left(qs_tmp, shown_pids(r.stdout), allowed=["fake-pgfanout"])
