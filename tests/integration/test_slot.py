"""The replication slot's life across reconnects, against a real PostgreSQL 15.

1. A slot that vanishes while pgfanout streams is an error (exit 1, naming the slot, the last
   confirmed LSN and that later changes are gone downstream), never a silently recreated slot:
   --create-slot applies at startup only.  A slot dropped and recreated (so it starts past
   anything pgfanout confirmed) while pgfanout was away is the same error.
2. A slot that is active for another walsender is transient: at a reconnect (the old
   walsender has not let go yet) pgfanout retries with backoff and resumes; at startup it is
   the standby case: it waits, /readyz says why, and it takes over once the slot is free.
   SIGTERM while waiting is a clean exit 0.

Each test fails against the behaviour before these fixes: the slot was recreated on the
reconnect (the changes in between never appeared), and "is active for PID" ended the
process with exit 1 both at a reconnect and at startup."""
import json
import os
import re

import psycopg
import pytest

import runner
from runner import wait_for
from pgcluster import free_port
from test_service import http_get, wait_http


@pytest.fixture(scope="module")
def cdc_role(cluster, admin):
    """A LOGIN REPLICATION role for pgfanout, so a test can refuse its logins for a moment
    (ALTER ROLE ... NOLOGIN) and so decide when a reconnect can happen."""
    admin.execute("CREATE ROLE slot_cdc LOGIN REPLICATION SUPERUSER")
    return "slot_cdc"


def role_dsn(cluster, role):
    return f"host=127.0.0.1 port={cluster.port} dbname=postgres user={role}"


def read_ids(path, table):
    """The ids of the insert events of table in a JSON-lines file, in order."""
    if not os.path.exists(path):
        return []
    ids = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):  # whole lines only: the last one may still be being written
                e = json.loads(line)
                if e.get("op") == "insert" and e.get("table") == table:
                    ids.append(e["after"]["id"])
    return ids


def wait_ids(path, table, want, worker, timeout=30):
    """Waits until the file holds every id in want; fails naming what arrived."""
    ok = wait_for(lambda: set(want) <= set(read_ids(path, table)) or not worker.running(), timeout)
    got = read_ids(path, table)
    assert ok and set(want) <= set(got), (f"ids {sorted(set(want) - set(got))} never arrived; got {got}\n"
                                          + worker.stderr_text()[-3000:])


def confirmed(conn, slot):
    info = runner.slot_info(conn, slot)
    return None if info is None else runner.lsn_to_int(info["confirmed_flush_lsn"])


def wait_confirmed_past(conn, slot, lsn_text, worker, timeout=30):
    target = runner.lsn_to_int(lsn_text)
    ok = wait_for(lambda: (confirmed(conn, slot) or 0) >= target or not worker.running(), timeout)
    assert ok and worker.running(), (f"slot {slot} not confirmed past {lsn_text}: {runner.slot_info(conn, slot)}\n"
                                     + worker.stderr_text()[-3000:])


def terminate_walsender(conn, slot):
    """Ends the walsender that holds slot and waits until the slot is free."""
    pid = runner.slot_info(conn, slot)["active_pid"]
    assert pid, f"slot {slot} is not active"
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    runner.wait_slot_inactive(conn, slot, timeout=15)


class SlotHolder:
    """Holds a slot the way a walsender of another client would: START_REPLICATION on a
    replication connection that never reads and never confirms anything."""

    def __init__(self, dsn, slot, pub):
        import psycopg2
        import psycopg2.extras
        self.conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        cur = self.conn.cursor()
        cur.start_replication(slot_name=slot, decode=False,
                              options={"proto_version": "1", "publication_names": pub})
        self.cur = cur

    def close(self):
        self.conn.close()


def streaming_worker(cluster, admin, role, name, tmp_path):
    """Table {name}_t, publication {name}_pub, and pgfanout as role creating and streaming slot
    {name}_slot to {name}.out, with row 1 delivered.  Returns (worker, output path)."""
    admin.execute(f"CREATE TABLE {name}_t (id int PRIMARY KEY)")
    admin.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE {name}_t")
    out = str(tmp_path / f"{name}.out")
    w = runner.Worker(["--dsn", role_dsn(cluster, role), "--slot", f"{name}_slot", "--create-slot", "--snapshot", "never",
                       "--publication", f"{name}_pub", "-o", out, "--status-interval", "0.2"],
                      stderr_path=str(tmp_path / f"{name}.err"))
    try:
        wait_for(lambda: "streaming slot" in w.stderr_text() or not w.running(), 30)
        admin.execute(f"INSERT INTO {name}_t VALUES (1)")
        wait_ids(out, f"{name}_t", [1], w)
    except BaseException:
        w.kill()
        raise
    return w, out


def test_slot_dropped_while_streaming_is_an_error_not_a_new_slot(pgfanout, cluster, admin, cdc_role, tmp_path):
    w, out = streaming_worker(cluster, admin, cdc_role, "lost", tmp_path)
    with w:
        admin.execute("INSERT INTO lost_t SELECT generate_series(2, 5)")
        wait_ids(out, "lost_t", range(1, 6), w)
        wait_confirmed_past(admin, "lost_slot", runner.current_lsn(admin), w)
        # The slot is dropped while pgfanout is away (its walsender ended), and its next
        # connect is held off until then, so the order is certain.
        admin.execute(f"ALTER ROLE {cdc_role} NOLOGIN")
        before = confirmed(admin, "lost_slot")
        terminate_walsender(admin, "lost_slot")
        admin.execute("SELECT pg_drop_replication_slot('lost_slot')")
        lost_from = runner.lsn_to_int(runner.current_lsn(admin))
        admin.execute("INSERT INTO lost_t SELECT generate_series(6, 10)")
        admin.execute(f"ALTER ROLE {cdc_role} LOGIN")
        rc = w.wait(40)
        text = w.stderr_text()
    assert rc == 1, f"pgfanout did not stop with exit 1 (returncode {rc}):\n{text[-3000:]}"
    assert runner.slot_info(admin, "lost_slot") is None, "a new slot was created on the reconnect"
    assert text.count("created replication slot") == 1, text[-3000:]
    m = re.search(r'replication slot "lost_slot" was lost while pgfanout was streaming.*?every change up to '
                  r'([0-9A-F]+/[0-9A-F]+), the last position confirmed to PostgreSQL', text)
    assert m, text[-3000:]
    said = runner.lsn_to_int(m.group(1))
    assert before <= said <= lost_from, (m.group(1), before, lost_from)
    assert "gone downstream" in text and "--create-slot" in text and "backfill" in text, text[-3000:]
    assert read_ids(out, "lost_t") == [1, 2, 3, 4, 5]


def test_slot_recreated_while_away_is_an_error(pgfanout, cluster, admin, cdc_role, tmp_path):
    w, out = streaming_worker(cluster, admin, cdc_role, "again", tmp_path)
    with w:
        wait_confirmed_past(admin, "again_slot", runner.current_lsn(admin), w)
        admin.execute(f"ALTER ROLE {cdc_role} NOLOGIN")
        terminate_walsender(admin, "again_slot")
        admin.execute("SELECT pg_drop_replication_slot('again_slot')")
        admin.execute("INSERT INTO again_t VALUES (2)")  # in no slot: lost
        admin.execute("SELECT pg_create_logical_replication_slot('again_slot', 'pgoutput')")
        admin.execute("INSERT INTO again_t VALUES (3)")
        admin.execute(f"ALTER ROLE {cdc_role} LOGIN")
        rc = w.wait(40)
        text = w.stderr_text()
    assert rc == 1, f"pgfanout resumed from a recreated slot (returncode {rc}):\n{text[-3000:]}"
    assert re.search(r'replication slot "again_slot" was dropped and recreated, or advanced, while pgfanout '
                     r'was away: its confirmed position [0-9A-F]+/[0-9A-F]+ is past [0-9A-F]+/[0-9A-F]+', text), \
        text[-3000:]
    assert "gone downstream" in text
    assert read_ids(out, "again_t") == [1], "a change from the recreated slot was delivered"
    admin.execute("SELECT pg_drop_replication_slot('again_slot')")


def test_temporary_slot_is_still_recreated_on_reconnect(pgfanout, cluster, admin, tmp_path):
    """--temporary-slot is documented to be recreated after a reconnect: not an error."""
    admin.execute("CREATE TABLE tmp_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION tmp_pub FOR TABLE tmp_t")
    out, err = str(tmp_path / "tmp.out"), str(tmp_path / "tmp.err")
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "tmp_slot", "--temporary-slot",
                        "--publication", "tmp_pub", "-o", out, "--status-interval", "0.2"],
                       stderr_path=err) as w:
        wait_for(lambda: "streaming slot" in w.stderr_text(), 30)
        pid = runner.slot_info(admin, "tmp_slot")["active_pid"]
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert wait_for(lambda: w.stderr_text().count("created temporary replication slot") == 2, 30), \
            w.stderr_text()[-3000:]
        admin.execute("INSERT INTO tmp_t VALUES (1)")
        wait_ids(out, "tmp_t", [1], w)
        assert w.terminate() == 0


def test_busy_slot_at_reconnect_is_retried(pgfanout, cluster, admin, cdc_role, tmp_path):
    w, out = streaming_worker(cluster, admin, cdc_role, "busy", tmp_path)
    with w:
        # Another walsender takes the slot before pgfanout may reconnect, as a slow-to-exit
        # old walsender of its own would.
        admin.execute(f"ALTER ROLE {cdc_role} NOLOGIN")
        terminate_walsender(admin, "busy_slot")
        holder = SlotHolder(cluster.dsn(), "busy_slot", "busy_pub")
        try:
            admin.execute(f"ALTER ROLE {cdc_role} LOGIN")
            admin.execute("INSERT INTO busy_t VALUES (2)")
            assert wait_for(lambda: "is active for PID" in w.stderr_text() or not w.running(), 30), \
                w.stderr_text()[-3000:]
            assert wait_for(lambda: not w.running(), 2) is False, \
                f"pgfanout exited ({w.proc.returncode}) on a busy slot:\n{w.stderr_text()[-3000:]}"
        finally:
            holder.close()
        admin.execute("INSERT INTO busy_t VALUES (3)")
        wait_ids(out, "busy_t", [1, 2, 3], w, timeout=60)
        text = w.stderr_text()
        assert re.search(r"reconnect failed: .*is active for PID \d+ \(the previous connection's walsender", text), \
            text[-3000:]
        assert "reconnected after" in text
        assert w.terminate() == 0
    admin.execute("SELECT pg_drop_replication_slot('busy_slot')")


def test_standby_waits_for_the_slot_and_takes_over(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE ha_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION ha_pub FOR TABLE ha_t")
    base = ["--dsn", cluster.dsn(), "--slot", "ha_slot", "--publication", "ha_pub", "--status-interval", "0.2"]
    a_out, b_out = str(tmp_path / "a.out"), str(tmp_path / "b.out")
    a_port, b_port = free_port(), free_port()
    with runner.Worker(base + ["--create-slot", "--snapshot", "never", "-o", a_out, "--http-listen", str(a_port)],
                       stderr_path=str(tmp_path / "a.err")) as a:
        wait_http(a_port, "/readyz", 200, worker=a)  # A holds the slot before B starts
        b = runner.Worker(base + ["-o", b_out, "--http-listen", str(b_port)], stderr_path=str(tmp_path / "b.err"))
        with b:
            standby(a, b, a_port, b_port, a_out, b_out, admin)
    runner.wait_slot_inactive(admin, "ha_slot")
    admin.execute("SELECT pg_drop_replication_slot('ha_slot')")


def standby(a, b, a_port, b_port, a_out, b_out, admin):
    """B waits while A streams, then takes over once A is killed."""
    body = wait_http(b_port, "/readyz", 503, worker=b, contains="active for PID")
    assert "standby" in body and "ha_slot" in body, body
    assert http_get(b_port, "/healthz")[0] == 200
    admin.execute("INSERT INTO ha_t VALUES (1)")
    wait_ids(a_out, "ha_t", [1], a)
    assert b.running(), b.stderr_text()[-3000:]
    assert 'waiting for replication slot "ha_slot"' in b.stderr_text()
    a.kill()
    wait_http(b_port, "/readyz", 200, worker=b, timeout=30)
    admin.execute("INSERT INTO ha_t VALUES (2)")
    wait_ids(b_out, "ha_t", [2], b)
    assert b.terminate() == 0


def test_second_instance_takes_over_within_5s_under_load_nothing_lost(pgfanout, cluster, admin, tmp_path):
    """Two instances on one slot (the Kubernetes pattern: two replicas, no leader election): B
    waits as a standby while A streams a steady workload; A is killed with -9 mid-stream; B
    holds the slot and streams within 5 s, and every committed row is in A's or B's output
    (rows A wrote but had not confirmed come again from B: counted, not lost)."""
    import threading
    import time
    admin.execute("CREATE TABLE ha2_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION ha2_pub FOR TABLE ha2_t")
    base = ["--dsn", cluster.dsn(), "--slot", "ha2_slot", "--publication", "ha2_pub", "--status-interval", "0.2"]
    a_out, b_out = str(tmp_path / "a.out"), str(tmp_path / "b.out")
    a_port, b_port = free_port(), free_port()
    written, stop = [], threading.Event()

    def writer():
        conn = runner.connect(cluster.dsn())
        try:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("INSERT INTO ha2_t VALUES (%s)", (i,))
                written.append(i)
                time.sleep(0.003)
        finally:
            conn.close()

    with runner.Worker(base + ["--create-slot", "--snapshot", "never", "-o", a_out, "--http-listen", str(a_port)],
                       stderr_path=str(tmp_path / "a.err")) as a:
        wait_http(a_port, "/readyz", 200, worker=a)
        with runner.Worker(base + ["-o", b_out, "--http-listen", str(b_port)], stderr_path=str(tmp_path / "b.err")) as b:
            wait_http(b_port, "/readyz", 503, worker=b, contains="standby")
            t = threading.Thread(target=writer)
            t.start()
            try:
                assert wait_for(lambda: len(read_ids(a_out, "ha2_t")) >= 200, 30), a.stderr_text()[-3000:]
                a.kill()
                killed = time.monotonic()
                wait_http(b_port, "/readyz", 200, worker=b, timeout=30)
                took = time.monotonic() - killed
                time.sleep(1)
            finally:
                stop.set()
                t.join()
            wait_ids(b_out, "ha2_t", [written[-1]], b)
            got_a, got_b = read_ids(a_out, "ha2_t"), read_ids(b_out, "ha2_t")
            lost = sorted(set(written) - set(got_a) - set(got_b))
            dups = len(set(got_a) & set(got_b))
            print(f"\nHA: {len(written)} rows; A streamed {len(got_a)}, killed -9; B took over in {took:.2f} s and "
                  f"streamed {len(got_b)}; lost {len(lost)}, sent twice {dups}")
            assert not lost, f"rows lost in the takeover: {lost[:20]}"
            assert took < 5, f"B took {took:.1f} s to take over"
            assert b.terminate() == 0
    runner.wait_slot_inactive(admin, "ha2_slot")
    admin.execute("SELECT pg_drop_replication_slot('ha2_slot')")


def test_standby_stopped_while_waiting_exits_zero(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE hs_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION hs_pub FOR TABLE hs_t")
    admin.execute("SELECT pg_create_logical_replication_slot('hs_slot', 'pgoutput')")
    holder = SlotHolder(cluster.dsn(), "hs_slot", "hs_pub")
    try:
        with runner.Worker(["--dsn", cluster.dsn(), "--slot", "hs_slot", "--publication", "hs_pub"],
                           stderr_path=str(tmp_path / "hs.err")) as w:
            assert wait_for(lambda: "waiting for replication slot" in w.stderr_text() or not w.running(), 30), \
                w.stderr_text()[-3000:]
            assert w.running(), w.stderr_text()[-3000:]
            assert w.terminate(timeout=10) == 0, w.stderr_text()[-3000:]
    finally:
        holder.close()
    runner.wait_slot_inactive(admin, "hs_slot")
    admin.execute("SELECT pg_drop_replication_slot('hs_slot')")


def test_runtime_error_reports_what_the_server_acknowledged(pgfanout, cluster, admin, tmp_path):
    """The publication is dropped while pgfanout streams, so PostgreSQL ends replication with
    an error: pgfanout exits 1, sends no status update outside COPY (no "no COPY in progress"
    line), and the position it reports as confirmed is the one PostgreSQL itself shows."""
    admin.execute("CREATE TABLE gone_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION gone_pub FOR TABLE gone_t")
    out = str(tmp_path / "gone.out")
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "gone_slot", "--create-slot", "--snapshot", "never", "--publication", "gone_pub",
                        "-o", out, "--status-interval", "0.2"], stderr_path=str(tmp_path / "gone.err")) as w:
        wait_for(lambda: "streaming slot" in w.stderr_text(), 30)
        admin.execute("INSERT INTO gone_t VALUES (1)")
        wait_ids(out, "gone_t", [1], w)
        admin.execute("DROP PUBLICATION gone_pub")
        admin.execute("INSERT INTO gone_t VALUES (2)")
        rc = w.wait(30)
        text = w.stderr_text()
    assert rc == 1, text[-3000:]
    assert "no COPY in progress" not in text and "cannot send status update" not in text, text[-3000:]
    assert "confirmed position" not in text.split("ended replication")[-1], text[-3000:]
    server = runner.wait_slot_inactive(admin, "gone_slot")["confirmed_flush_lsn"]
    m = re.search(r'replication slot "gone_slot" is confirmed up to ([0-9A-F]+/[0-9A-F]+), as PostgreSQL '
                  r'reports it', text)
    assert m and m.group(1) == server, (server, text[-3000:])
    admin.execute("SELECT pg_drop_replication_slot('gone_slot')")
