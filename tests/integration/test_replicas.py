"""The replica-aware second pass and read-your-writes (issue 13, parts 3, 4 and 7), against a
real PostgreSQL 15 primary, a real `pg_basebackup -R` hot standby that applies WAL 600 ms late
(recovery_min_apply_delay), a real redis-server and pgfanout.

Race (b): pgfanout deletes a key once the transaction commits on the primary; a reader that
then fills from a standby that has not replayed the commit stores the old row, and nothing
deletes it again.  With the standby listed (redis.replicas by DSN, or redis.replica_names by
application_name through pg_stat_replication), pgfanout deletes the transaction's keys a
second time once the standby has replayed it, and only then confirms the slot and raises the
read-your-writes key.

Expectations never come from pgfanout: "the standby has replayed" is read from the standby
itself; "stale" compares Redis with the primary's row; "pgfanout has deleted" is a key gone
from Redis.  Each mechanism's test runs once without it (a baseline that must show the stale
value), so the checks can fail."""
import os
import signal
import time

import pytest

import runner
from pgcluster import PgCluster, PgStandby
from ports import free_port
from redis_util import create_slot, drop_slots, start_worker, stop_clean, wait_confirmed, wait_started, worker_args, write_config

APPLY_DELAY_MS = 600
LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "contrib", "redis")


@pytest.fixture(scope="module")
def primary():
    c = PgCluster(extra_conf={"hot_standby": "on", "wal_receiver_status_interval": "1s"}).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def standby(primary):
    """A hot standby streaming from primary, replaying commits APPLY_DELAY_MS late, known to
    the primary as application_name 'rep1' (cluster_name is the walreceiver's default name)."""
    s = PgStandby(primary, slot="rep1_phys", extra_conf={
        "recovery_min_apply_delay": f"'{APPLY_DELAY_MS}ms'", "cluster_name": "'rep1'",
        "wal_receiver_status_interval": "1s", "hot_standby_feedback": "on"}).start()
    yield s
    s.stop()


@pytest.fixture
def db(primary):
    conn = runner.connect(primary.dsn())
    yield conn
    conn.close()


@pytest.fixture
def slots(db):
    names = []
    yield names
    drop_slots(db, *names)


def lsn_int(text):
    return runner.lsn_to_int(text)


def insert_lsn(conn):
    """pg_current_wal_insert_lsn() right after a commit: at least the commit's end LSN, what
    a view that has just written waits for (contrib/django's commit_lsn does the same)."""
    return lsn_int(runner.scalar(conn, "SELECT pg_current_wal_insert_lsn()::text"))


def start(primary, db, slots, rserver, tmp_path, name, redis_section, *extra, metrics=False):
    """Slot, publication and table t_<name>; returns (worker, metrics port or None)."""
    db.execute(f"CREATE TABLE t_{name} (id int4 PRIMARY KEY, v text)")
    db.execute(f"INSERT INTO t_{name} SELECT g, 'v0' FROM generate_series(1, 20) g")
    slots.append(f"{name}_slot")
    create_slot(db, f"{name}_slot", f"{name}_pub", [f"public.t_{name}"])
    section = {"rules": [{"table": f"t_{name}", "keys": [f"{name}:{{id}}"]}], **redis_section}
    cfg = write_config(tmp_path / f"{name}.yaml", section)
    port = free_port() if metrics else None
    more = ["--http-listen", f"127.0.0.1:{port}"] if metrics else []
    w = start_worker(worker_args(primary, f"{name}_slot", f"{name}_pub", cfg, rserver.addr, *more, *extra),
                     tmp_path / f"{name}.log")
    return w, port


metrics = runner.scrape_metrics


def ryw(client, slot):
    v = client.get(f"pgfanout:ryw:{slot}")
    return int(v) if v is not None else 0


def wait_gone(client, key, timeout=20):
    assert runner.wait_for(lambda: client.get(key) is None, timeout, 0.005), f"pgfanout never deleted {key}"


def standby_row(standby, table, id_):
    conn = runner.connect(standby.dsn())
    try:
        return runner.scalar(conn, f"SELECT v FROM {table} WHERE id = %s", (id_,))
    finally:
        conn.close()


def lagging_fill(db, client, standby, name, id_, value, worker):
    """Race (b) staged: the writer commits on the primary; pgfanout's first pass deletes the
    key; a reader then fills it from the standby, which has not replayed the commit yet.
    Returns (the commit's LSN, what the reader read and cached)."""
    key = f"{name}:{id_}"
    standby.wait_replayed(runner.current_lsn(db))   # the table and its rows are there
    client.set(key, "v0")                      # filled before the write
    db.execute(f"UPDATE t_{name} SET v = %s WHERE id = %s", (value, id_))
    lsn = insert_lsn(db)
    wait_gone(client, key)                     # pgfanout's first pass
    read = standby_row(standby, f"t_{name}", id_)
    client.set(key, read)                      # the reader's fill, from the standby
    assert worker.running(), worker.stderr_text()[-3000:]
    return lsn, read


# --- read-your-writes ------------------------------------------------------------------------------

def test_ryw_key_reaches_each_write_and_never_goes_down(pgfanout, primary, db, slots, rserver, tmp_path):
    """After a write's commit, pg_current_wal_insert_lsn() is reached by the read-your-writes
    key once pgfanout has deleted the write's key (the key is raised only after Redis answered
    the DEL).  The key only rises: a value set higher by hand is left alone, and raise.lua
    compares 20-digit numbers exactly."""
    client = rserver.client()
    w, port = start(primary, db, slots, rserver, tmp_path, "ryw", {}, metrics=True)
    try:
        for i in range(1, 6):
            client.set(f"ryw:{i}", "old")
            db.execute("UPDATE t_ryw SET v = %s WHERE id = %s", (f"v{i}", i))
            lsn = insert_lsn(db)
            t0 = time.monotonic()
            assert runner.wait_for(lambda: ryw(client, "ryw_slot") >= lsn, 30, 0.002), \
                f"ryw key {ryw(client, 'ryw_slot')} never reached {lsn}:\n{w.stderr_text()[-2000:]}"
            waited = time.monotonic() - t0
            assert client.get(f"ryw:{i}") is None, "the ryw key claimed a write whose key was not deleted yet"
            print(f"\nwrite {i}: ryw key reached the commit's LSN after {waited * 1000:.1f} ms")
        assert int(float(metrics(port)["pgfanout_redis_ryw_lsn"])) >= lsn
        # Monotonic: a higher value stays.
        client.set("pgfanout:ryw:ryw_slot", "99999999999999999999")
        db.execute("UPDATE t_ryw SET v = 'x' WHERE id = 7")
        wait_confirmed(db, "ryw_slot", insert_lsn(db), worker=w)
        time.sleep(0.3)
        assert client.get("pgfanout:ryw:ryw_slot") == b"99999999999999999999"
    finally:
        stop_clean(w)
    raise_ = client.register_script(open(os.path.join(LUA_DIR, "raise.lua")).read())
    client.set("r", "18446744073709551615")
    assert raise_(keys=["r"], args=["18446744073709551614"]) == 0 and client.get("r") == b"18446744073709551615"
    assert raise_(keys=["r2"], args=["9"]) == 1 and raise_(keys=["r2"], args=["10"]) == 1
    assert raise_(keys=["r2"], args=["9"]) == 0 and client.get("r2") == b"10"


# --- the second pass --------------------------------------------------------------------------------

def test_lagging_standby_fill_stays_stale_without_the_second_pass(pgfanout, primary, standby, db, slots, rserver,
                                                                    tmp_path):
    """The baseline: no standby listed.  The reader's fill from the lagging standby happens
    after pgfanout's only delete, and stays: the race is real here."""
    client = rserver.client()
    w, _ = start(primary, db, slots, rserver, tmp_path, "base", {})
    try:
        lsn, read = lagging_fill(db, client, standby, "base", 1, "new", w)
        assert read == "v0", "the standby had already replayed the write: no lag to test with"
        standby.wait_replayed(runner.int_to_lsn(lsn))
        time.sleep(APPLY_DELAY_MS / 1000 + 0.5)
        cached = client.get("base:1")
        print(f"\nwithout the second pass: cached {cached!r}, primary 'new'")
        assert cached == b"v0", "expected the stale fill to stay without a second pass"
    finally:
        stop_clean(w)


@pytest.mark.parametrize("mode", ["dsn", "application_name"])
def test_second_pass_deletes_the_lagging_fill(pgfanout, primary, standby, db, slots, rserver, tmp_path, mode):
    """With the standby listed, the stale fill is deleted by the second pass, which goes only
    once the standby has replayed the commit; the slot is not confirmed past the write before
    that, and the read-your-writes key, once past the write, means the key is fresh."""
    client = rserver.client()
    listing = {"replicas": standby.dsn()} if mode == "dsn" else {"replica_names": "rep1"}
    name = "pd" if mode == "dsn" else "pn"
    w, port = start(primary, db, slots, rserver, tmp_path, name,
                    {**listing, "second_pass_delay_ms": 50, "replica_poll_ms": 20}, metrics=True)
    try:
        for i in range(1, 4):
            lsn, read = lagging_fill(db, client, standby, name, i, f"new{i}", w)
            assert read == "v0", "the standby had already replayed the write: no lag to test with"
            # Until the standby has replayed, the slot must not be confirmed past the write.
            while lsn_int(standby.replay_lsn()) < lsn:
                info = runner.slot_info(db, f"{name}_slot")
                assert lsn_int(info["confirmed_flush_lsn"]) < lsn, \
                    f"slot confirmed {info['confirmed_flush_lsn']} before the standby replayed {runner.int_to_lsn(lsn)}"
                time.sleep(0.01)
            assert runner.wait_for(lambda: ryw(client, f"{name}_slot") >= lsn, 30, 0.005), w.stderr_text()[-2000:]
            cached = client.get(f"{name}:{i}")
            assert cached is None, f"the lagging fill {cached!r} survived the second pass"
            assert standby_row(standby, f"t_{name}", i) == f"new{i}"
        m = metrics(port)
        passes = int(float(m["pgfanout_redis_second_passes_total"]))
        rname = f"127.0.0.1:{standby.port}" if mode == "dsn" else "rep1"
        lag = float(m[f'pgfanout_replica_lag_seconds{{replica="{rname}"}}'])
        up = m[f'pgfanout_replica_up{{replica="{rname}"}}']
        print(f"\n{mode}: {passes} second passes; second pass latency sum "
              f"{float(m['pgfanout_redis_second_pass_seconds_sum']):.3f} s over "
              f"{m['pgfanout_redis_second_pass_seconds_count']}; replica up "
              f"{up}, lag {lag:.3f} s")
        assert passes >= 3 and up == "1"
        assert int(float(m["pgfanout_redis_second_pass_forced_total"])) == 0
        mean = float(m["pgfanout_redis_second_pass_seconds_sum"]) / int(m["pgfanout_redis_second_pass_seconds_count"])
        assert mean >= APPLY_DELAY_MS / 1000, f"second passes came {mean:.3f} s after commit, before the standby applied"
    finally:
        stop_clean(w)


def test_second_pass_without_standbys_catches_a_late_plain_fill(pgfanout, primary, db, slots, rserver, tmp_path):
    """redis.second_pass with no standbys: a plain SET of the old value (a fill that took no
    lease, as django-cacheops' are) landing just after the first pass is deleted
    second_pass_delay_ms later; the slot and the read-your-writes key wait for that pass."""
    client = rserver.client()
    w, _ = start(primary, db, slots, rserver, tmp_path, "sp", {"second_pass": True, "second_pass_delay_ms": 400})
    try:
        client.set("sp:1", "v0")
        db.execute("UPDATE t_sp SET v = 'new' WHERE id = 1")
        lsn = insert_lsn(db)
        wait_gone(client, "sp:1")
        t_first = time.monotonic()
        client.set("sp:1", "v0")                   # the late fill of a reader that read before the commit
        assert ryw(client, "sp_slot") < lsn
        assert runner.wait_for(lambda: ryw(client, "sp_slot") >= lsn, 30, 0.005), w.stderr_text()[-2000:]
        waited = time.monotonic() - t_first
        assert client.get("sp:1") is None, "the late plain fill survived the second pass"
        assert waited >= 0.35, f"the second pass came {waited:.3f} s after the first, not after the delay"
        print(f"\nsecond pass {waited * 1000:.0f} ms after the first (delay 400 ms)")
    finally:
        stop_clean(w)


# --- bad input and faults ---------------------------------------------------------------------------

def test_unreachable_and_non_standby_dsns_fail_at_startup(pgfanout, primary, db, slots, rserver, tmp_path):
    """A DSN nobody answers, and the primary's own DSN (not a standby), each stop pgfanout
    before it streams, with a message that names the standby and what to do."""
    db.execute("CREATE TABLE t_bad (id int4 PRIMARY KEY, v text)")
    slots.append("bad_slot")
    create_slot(db, "bad_slot", "bad_pub", ["public.t_bad"])
    dead = f"host=127.0.0.1 port={free_port()} dbname=postgres connect_timeout=3"
    for dsn, expect in ((dead, "cannot connect to the standby 127.0.0.1:"), (primary.dsn(), "is not a standby")):
        cfg = write_config(tmp_path / "bad.yaml", {"replicas": dsn,
                                                   "rules": [{"table": "t_bad", "keys": ["bad:{id}"]}]})
        r = runner.run_pgfanout(worker_args(primary, "bad_slot", "bad_pub", cfg, rserver.addr), timeout=60)
        print(f"\n{r.stderr.strip().splitlines()[-1]}")
        assert r.returncode != 0 and expect in r.stderr and "redis.replicas" in r.stderr, r.stderr[-2000:]
        assert "streaming slot" not in r.stderr
        assert "password" not in r.stderr.lower() or "PGFANOUT_REDIS_PASSWORD" not in r.stderr


def test_standby_down_warns_streams_on_and_forces_after_max_wait(pgfanout, primary, db, slots, rserver, tmp_path):
    """A standby stopped at run time: a warning, streaming continues (every key's first pass
    still happens at once), and after redis.replica_max_wait the second passes go anyway,
    counted, so the slot moves on and WAL is not pinned."""
    sb = PgStandby(primary, slot="down_phys", extra_conf={"cluster_name": "'down1'"}).start()
    client = rserver.client()
    try:
        w, port = start(primary, db, slots, rserver, tmp_path, "down", {"replicas": sb.dsn(), "replica_max_wait": 2,
                                                                       "replica_poll_ms": 20}, metrics=True)
        try:
            sb.stop(remove=False)
            for i in range(1, 11):
                client.set(f"down:{i}", "old")
                db.execute("UPDATE t_down SET v = 'new' WHERE id = %s", (i,))
            lsn = insert_lsn(db)
            for i in range(1, 11):
                wait_gone(client, f"down:{i}")
            assert runner.wait_for(lambda: "streaming goes on" in w.stderr_text(), 20), w.stderr_text()[-2000:]
            t0 = time.monotonic()
            wait_confirmed(db, "down_slot", lsn, timeout=30, worker=w)
            waited = time.monotonic() - t0
            m = metrics(port)
            forced = int(float(m["pgfanout_redis_second_pass_forced_total"]))
            up = m["pgfanout_replica_up{replica=\"127.0.0.1:%d\"}" % sb.port]
            print(f"\nstandby down: slot confirmed {waited:.1f} s after the first passes; {forced} forced passes; "
                  f"up={up}")
            assert forced >= 1 and "redis.replica_max_wait" in w.stderr_text()
            assert up == "0"
            assert ryw(client, "down_slot") >= lsn
        finally:
            stop_clean(w)
    finally:
        sb.stop()


def test_script_flush_is_survived(pgfanout, primary, db, slots, rserver, tmp_path):
    """SCRIPT FLUSH (what a Redis restart does to loaded scripts) while pgfanout runs: the next
    EVALSHA gets NOSCRIPT, pgfanout reconnects, loads its scripts again and resends; every key
    is still deleted and the read-your-writes key keeps rising."""
    client = rserver.client()
    w, _ = start(primary, db, slots, rserver, tmp_path, "fl", {})
    try:
        db.execute("UPDATE t_fl SET v = 'a' WHERE id = 1")
        first = insert_lsn(db)
        assert runner.wait_for(lambda: ryw(client, "fl_slot") >= first, 30, 0.005)
        client.script_flush()
        for i in range(2, 12):
            client.set(f"fl:{i}", "old")
            db.execute("UPDATE t_fl SET v = 'b' WHERE id = %s", (i,))
        lsn = insert_lsn(db)
        for i in range(2, 12):
            wait_gone(client, f"fl:{i}")
        assert runner.wait_for(lambda: ryw(client, "fl_slot") >= lsn, 30, 0.005), w.stderr_text()[-2000:]
        text = w.stderr_text()
        assert "NOSCRIPT" in text and "connected again" in text, text[-2000:]
    finally:
        stop_clean(w)


def test_redis_lost_during_the_second_pass(pgfanout, primary, standby, db, slots, rserver, tmp_path):
    """Redis stops answering while a second pass is under way (SIGSTOP: the command times
    out, the connection is dropped, reconnects fail), then comes back, and no other write
    follows: the second pass is sent again on the new connection, so the slot and the
    read-your-writes key move past the write and the stale fill is gone."""
    client = rserver.client()
    sconn = runner.connect(standby.dsn())
    section = {"replicas": standby.dsn(), "second_pass_delay_ms": 50, "replica_poll_ms": 20,
               "command_timeout_ms": 500}
    w, _ = start(primary, db, slots, rserver, tmp_path, "rl", section)
    try:
        standby.wait_replayed(runner.current_lsn(db))
        sconn.execute("SELECT pg_wal_replay_pause()")
        client.set("rl:1", "v0")
        db.execute("UPDATE t_rl SET v = 'new' WHERE id = 1")
        lsn = insert_lsn(db)
        wait_gone(client, "rl:1")                                 # the first pass
        client.set("rl:1", standby_row(standby, "t_rl", 1))     # a stale fill from the paused standby
        os.kill(rserver.proc.pid, signal.SIGSTOP)
        try:
            sconn.execute("SELECT pg_wal_replay_resume()")       # the second pass falls due now
            time.sleep(2)
        finally:
            os.kill(rserver.proc.pid, signal.SIGCONT)
        wait_confirmed(db, "rl_slot", lsn, timeout=30, worker=w)
        assert client.get("rl:1") is None, "the stale fill survived: the second pass was not sent again"
        assert ryw(client, "rl_slot") >= lsn
        assert "connected again" in w.stderr_text()
    finally:
        sconn.execute("SELECT pg_wal_replay_resume()")
        sconn.close()
        stop_clean(w)


def test_kill_between_the_passes_redoes_both(pgfanout, primary, standby, db, slots, rserver, tmp_path):
    """kill -9 while a transaction waits for its second pass (the standby's replay is paused):
    the slot was not confirmed past it, so after a restart both passes are done again; a fill
    from the standby in between is deleted by the new second pass."""
    client = rserver.client()
    sconn = runner.connect(standby.dsn())
    section = {"replicas": standby.dsn(), "second_pass_delay_ms": 50, "replica_poll_ms": 20}
    w, _ = start(primary, db, slots, rserver, tmp_path, "kb", section)
    try:
        standby.wait_replayed(runner.current_lsn(db))
        sconn.execute("SELECT pg_wal_replay_pause()")
        client.set("kb:1", "v0")
        db.execute("UPDATE t_kb SET v = 'new' WHERE id = 1")
        lsn = insert_lsn(db)
        wait_gone(client, "kb:1")
        time.sleep(0.5)
        assert lsn_int(runner.slot_info(db, "kb_slot")["confirmed_flush_lsn"]) < lsn
        w.kill()
        client.set("kb:1", standby_row(standby, "t_kb", 1))     # a stale fill while pgfanout is down
        assert client.get("kb:1") == b"v0"
    finally:
        w.kill()
    cfg = str(tmp_path / "kb.yaml")
    w2 = runner.Worker(worker_args(primary, "kb_slot", "kb_pub", cfg, rserver.addr),
                       stderr_path=str(tmp_path / "kb2.log"))
    try:
        wait_started(w2)
        wait_gone(client, "kb:1")                                 # the first pass again
        client.set("kb:1", standby_row(standby, "t_kb", 1))     # and another stale fill
        time.sleep(0.5)
        assert lsn_int(runner.slot_info(db, "kb_slot")["confirmed_flush_lsn"]) < lsn
        sconn.execute("SELECT pg_wal_replay_resume()")
        wait_confirmed(db, "kb_slot", lsn, timeout=30, worker=w2)
        assert client.get("kb:1") is None, "the second pass after the restart did not delete the stale fill"
    finally:
        sconn.execute("SELECT pg_wal_replay_resume()")
        sconn.close()
        stop_clean(w2)
