"""Leases (issue 13, part 1) against a real PostgreSQL 15, a real redis-server and pgfanout:
the stale-fill race, staged step by step and then under load, with the fill protocol of
contrib/redis/*.lua and with plain cache-aside (GET, read, SET) for comparison.

The race: a reader misses and reads the old row; a writer commits; pgfanout deletes the key;
the reader then stores the old value, which stays until its TTL.  With the protocol the
reader's store goes through lease_fill.lua, and pgfanout's DEL of the key and its lease in one
command makes that store fail.  The scripts' own answers are checked against redis-server
alone first.

Expectations never come from pgfanout: lease names are built here (key + ":lease", Django's
own make_key for the preset, the hash-tag rule for the cluster layout); "pgfanout has deleted"
means the slot's confirmed_flush_lsn passed the write, which pgfanout confirms only once Redis
has answered the DEL (and, for the staged race, the DEL count in commandstats grew)."""
import os
import random
import re
import threading
import time

import pytest

import runner
from leasecache import LEASE_TTL_MS, LeaseCache, lua as _lua
from ports import free_port
from redis_util import create_slot, drop_slots, start_worker, stop_clean, wait_confirmed, worker_args, write_config

STRESS_SECONDS = float(os.environ.get("PGFANOUT_LEASE_STRESS_SECONDS", "4"))


# --- fixtures and helpers ------------------------------------------------------------------------

@pytest.fixture
def slots(db):
    names = []
    yield names
    drop_slots(db, *names)


def start(cluster, db, slots, rserver, tmp_path, name, redis_section, tables, *extra):
    """Creates slot and publication name_slot/name_pub for tables, writes the config, and
    returns a started runner.Worker (the caller stops it); extra are more pgfanout flags."""
    slots.append(f"{name}_slot")
    create_slot(db, f"{name}_slot", f"{name}_pub", [f"public.{t}" for t in tables])
    cfg = write_config(tmp_path / f"{name}.yaml", redis_section)
    return start_worker(worker_args(cluster, f"{name}_slot", f"{name}_pub", cfg, rserver.addr, *extra),
                        tmp_path / f"{name}.log")


def stop_worker(w):
    """SIGTERM; asserts a clean exit (an ASan build exits non-zero on a leak or an error) and
    returns the numbers of the exit summary: keys, commands and lease keys."""
    text = stop_clean(w)
    m = re.findall(r"redis: \d+ transactions, (\d+) keys in (\d+) commands; .*; (\d+) lease keys deleted", text)
    assert m, text[-2000:]
    return dict(zip(("keys", "commands", "leases"), (int(x) for x in m[-1])))


def metric_values(port, *names):
    """The values of unlabelled samples on /metrics, in the order of names (None if missing)."""
    values = runner.scrape_metrics(port)
    return [int(float(values[n])) if n in values else None for n in names]


def del_calls(client):
    return client.info("commandstats").get("cmdstat_del", {}).get("calls", 0)


def read_row(conn, table, id_):
    """The row's value now (autocommit: a fresh snapshot per statement)."""
    return str(runner.scalar(conn, f"SELECT v FROM {table} WHERE id = %s", (id_,))).encode()


def invalidate_and_wait(db, client, slot, table, id_, new_value, worker):
    """Commits an update of the row and waits until pgfanout's DEL for it was answered."""
    before = del_calls(client)
    db.execute(f"UPDATE {table} SET v = %s WHERE id = %s", (new_value, id_))
    wait_confirmed(db, slot, runner.current_lsn(db), worker=worker)
    assert del_calls(client) > before, "pgfanout sent no DEL for the update"


# --- the scripts alone -----------------------------------------------------------------------------

def test_scripts_without_pgfanout(rserver):
    """What each script returns, against redis-server alone: a hit, a lease, a busy lease with
    its remaining time; a fill with and without a TTL; a fill refused once the lease expired or
    another caller took it over; a release only by the lease's holder."""
    client = rserver.client()
    cache = LeaseCache(client)
    client.set("sc:hit", "v")
    assert cache.take("sc:hit") == ("hit", b"v")
    kind, token = cache.take("sc:a")
    assert kind == "lease" and 0 < client.pttl("sc:a:lease") <= LEASE_TTL_MS
    busy, pttl = cache.take("sc:a")
    assert busy == "busy" and 0 < pttl <= LEASE_TTL_MS
    assert not cache.fill("sc:a", "not-the-token", "x") and client.get("sc:a") is None
    assert cache.fill("sc:a", token, "value", 60000)
    assert client.get("sc:a") == b"value" and 0 < client.pttl("sc:a") <= 60000
    assert not client.exists("sc:a:lease")
    assert not cache.fill("sc:a", token, "again")        # a token fills once
    # A lease that expired, then was taken by another caller: the first caller's fill fails.
    first = client.register_script(_lua("lease_get.lua"))(keys=["sc:b", "sc:b:lease"], args=["t1", 50])
    assert first == [2]
    time.sleep(0.1)
    kind, second = cache.take("sc:b")
    assert kind == "lease"
    assert not cache.fill("sc:b", "t1", "old") and client.get("sc:b") is None
    # Release: only the holder's token deletes the lease.
    assert cache.release_script(keys=["sc:b:lease"], args=["t1"]) == 0 and client.exists("sc:b:lease")
    assert cache.release_script(keys=["sc:b:lease"], args=[second]) == 1 and not client.exists("sc:b:lease")
    assert cache.fill("sc:b", second, "v") is False
    # ttl 0: no expiry.
    kind, token = cache.take("sc:c")
    assert cache.fill("sc:c", token, "forever", 0) and client.pttl("sc:c") == -1


# --- (a) the stale fill, staged -------------------------------------------------------------------

def test_staged_stale_fill_is_refused_with_a_lease_and_kept_without(pgfanout, cluster, db, rserver, slots,
                                                                      tmp_path):
    """1. the reader takes the lease and reads the old row; 2. the writer commits; 3. pgfanout
    deletes key and lease in one DEL; 4. the reader's fill through lease_fill.lua is refused,
    and the cache stays empty.  The same steps with a plain SET leave the old value cached,
    so the check can fail.  The next miss then fills the new value."""
    db.execute("CREATE TABLE st (id int4 PRIMARY KEY, v text)")
    db.execute("INSERT INTO st VALUES (1, 'old'), (2, 'old')")
    client = rserver.client()
    w = start(cluster, db, slots, rserver, tmp_path, "st", {"rules": [{"table": "st", "keys": ["st:{id}"]}]},
              ["st"])
    try:
        cache = LeaseCache(client)
        reader = runner.connect(cluster.dsn())

        # With the protocol (key st:1).
        kind, token = cache.take("st:1")
        assert kind == "lease" and client.get("st:1:lease") == token.encode()
        old = read_row(reader, "st", 1)
        assert old == b"old"
        assert cache.take("st:1")[0] == "busy"      # a concurrent misser does not get the lease
        client.config_resetstat()
        invalidate_and_wait(db, client, "st_slot", "st", 1, "new", w)
        stats = client.info("commandstats")["cmdstat_del"]
        assert stats["calls"] == 1, stats          # key and lease in one command
        lease_left = client.exists("st:1:lease")
        stored = cache.fill("st:1", token, old)
        cached = client.get("st:1")
        print(f"\nstaged race with a lease: fill stored={stored}, cached={cached!r}, database=b'new'")
        assert not stored and cached is None, f"the stale value {cached!r} was cached over b'new'"
        assert not lease_left, "pgfanout did not delete the lease key"
        value, how = cache.get_or_fill("st:1", lambda: read_row(reader, "st", 1))
        assert (value, how) == (b"new", "filled") and client.get("st:1") == b"new"

        # The same steps without the protocol (key st:2): GET misses, read, write, DEL, SET.
        assert client.get("st:2") is None
        old = read_row(reader, "st", 2)
        invalidate_and_wait(db, client, "st_slot", "st", 2, "new", w)
        client.set("st:2", old)
        print(f"staged race with a plain SET: cached={client.get('st:2')!r}, database=b'new'")
        assert client.get("st:2") == b"old", "the race was not reproduced: the check could not fail"
        reader.close()
        assert stop_worker(w) == {"keys": 2, "commands": 2, "leases": 2}
    finally:
        w.__exit__(None, None, None)


def test_leases_off_deletes_no_lease(pgfanout, cluster, db, rserver, slots, tmp_path):
    """redis.leases: false (the documented way out): only the key is deleted, so the staged
    fill is accepted and the stale value stays, as the protocol's test expects it would be
    without pgfanout's help."""
    db.execute("CREATE TABLE so (id int4 PRIMARY KEY, v text)")
    db.execute("INSERT INTO so VALUES (1, 'old')")
    client = rserver.client()
    w = start(cluster, db, slots, rserver, tmp_path, "so",
              {"leases": False, "rules": [{"table": "so", "keys": ["so:{id}"]}]}, ["so"])
    try:
        cache = LeaseCache(client)
        kind, token = cache.take("so:1")
        assert kind == "lease"
        old = read_row(db, "so", 1)
        invalidate_and_wait(db, client, "so_slot", "so", 1, "new", w)
        assert client.exists("so:1:lease")
        assert cache.fill("so:1", token, old) and client.get("so:1") == b"old"
        assert stop_worker(w) == {"keys": 1, "commands": 1, "leases": 0}
    finally:
        w.__exit__(None, None, None)


# --- lease names: the Django preset, a custom suffix, the cluster layout ---------------------------

@pytest.mark.parametrize("layout", ["suffix_django", "cluster"])
def test_lease_names(pgfanout, cluster, db, rserver, slots, tmp_path, layout):
    """Each key's lease, named as the README says, is deleted with it.  Django: the lease of
    make_key(k) is make_key(k + ':lease') (Django's own default_key_func).  Cluster: a tagged
    key's lease is key + suffix, an untagged one's is '{' key '}' + suffix, and a key with a
    '}' but no tag (named in a logical message) is deleted alone, warned about, and counted on
    /metrics.  A rule's key that ends with the suffix is warned about at startup."""
    db.execute(f"CREATE TABLE ln_{layout} (id int4 PRIMARY KEY, v text)")
    db.execute(f"INSERT INTO ln_{layout} VALUES (1, 'a')")
    client = rserver.client()
    t = f"ln_{layout}"
    if layout == "suffix_django":
        from redis_util import django_key_func
        make_key = django_key_func("shop", 7)
        section = {"django": {"key_prefix": "shop", "version": 7}, "lease_suffix": "#lease",
                   "rules": [{"table": t, "keys": [t + ":{id}"], "table_keys": [t + ":all#lease"]}]}
        key = make_key(f"{t}:1")
        pairs = {key: make_key(f"{t}:1#lease")}
        alone = []
    else:
        section = {"lease_layout": "cluster",
                   "rules": [{"table": t, "keys": [t + ":{id}", "{{" + t + "}}:x:{id}"]}]}
        pairs = {f"{t}:1": "{" + f"{t}:1" + "}:lease", "{" + t + "}:x:1": "{" + t + "}:x:1:lease"}
        alone = [f"{t}:}}:1"]
    port = free_port()
    w = start(cluster, db, slots, rserver, tmp_path, t, section, [t], "--http-listen", f"127.0.0.1:{port}")
    try:
        for k, lease in pairs.items():
            client.set(k, "v")
            client.set(lease, "token")
        for k in alone:
            client.set(k, "v")
            client.set(k + ":lease", "token")
        client.config_resetstat()
        with db.transaction():
            db.execute(f"UPDATE {t} SET v = 'b' WHERE id = 1")
            # A key rules cannot spell (a '}' without '{'), named by the application instead.
            for k in alone:
                db.execute("SELECT pg_logical_emit_message(true, 'pgfanout.invalidate', %s)", (k,))
        wait_confirmed(db, f"{t}_slot", runner.current_lsn(db), worker=w)
        left = [k for k in list(pairs) + list(pairs.values()) + alone if client.exists(k)]
        assert not left, f"not deleted: {left}"
        assert client.info("commandstats")["cmdstat_del"]["calls"] == 1
        for k in alone:
            assert client.exists(k + ":lease")   # no lease name is deleted for it
        text = w.stderr_text()
        if alone:
            assert "no valid {hash tag}" in text, text[-2000:]
        else:   # a table key that looks like a lease is pointed out at startup
            assert f"key '{t}:all#lease' of the rule for {t} ends with redis.lease_suffix '#lease'" in text, \
                text[-2000:]
        metrics = metric_values(port, "pgfanout_redis_lease_keys_total", "pgfanout_redis_lease_unsupported_total")
        summary = stop_worker(w)
        assert summary["leases"] == summary["keys"] - len(alone), summary
        assert metrics == [summary["leases"], len(alone)], metrics
    finally:
        w.__exit__(None, None, None)


# --- (a) under load ---------------------------------------------------------------------------------

def test_concurrent_readers_and_writers_leave_no_stale_key(pgfanout, cluster, db, rserver, slots, tmp_path):
    """Readers fill two tables' caches for a few seconds while writers update them: table lc
    through the lease protocol, table pc with plain cache-aside (GET, read, SET), with the
    same slow fill (a few ms between the read and the store).  Once pgfanout has caught up,
    no lc key holds a value that differs from its row; pc shows how many the race leaves."""
    nrows = 16
    for t in ("lc", "pc"):
        db.execute(f"CREATE TABLE {t} (id int4 PRIMARY KEY, v int4 NOT NULL)")
        db.execute(f"INSERT INTO {t} SELECT g, 0 FROM generate_series(1, {nrows}) g")
    client = rserver.client()
    w = start(cluster, db, slots, rserver, tmp_path, "lcpc",
              {"rules": [{"table": "lc", "keys": ["lc:{id}"]}, {"table": "pc", "keys": ["pc:{id}"]}]},
              ["lc", "pc"])
    stop = threading.Event()
    errors = []
    counts = {}
    lock = threading.Lock()

    def count(what):
        with lock:
            counts[what] = counts.get(what, 0) + 1

    def reader(seed):
        try:
            rng = random.Random(seed)
            conn = runner.connect(cluster.dsn())
            rc = rserver.client()
            cache = LeaseCache(rc)
            slow = lambda: time.sleep(rng.uniform(0.002, 0.02))  # noqa: E731
            while not stop.is_set():
                i = rng.randint(1, nrows)
                _, how = cache.get_or_fill(f"lc:{i}", lambda: read_row(conn, "lc", i), between=slow)
                count("lc_" + how)
                if rc.get(f"pc:{i}") is None:
                    v = read_row(conn, "pc", i)
                    slow()
                    rc.set(f"pc:{i}", v)
                    count("pc_filled")
            conn.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    def writer(seed):
        try:
            rng = random.Random(seed)
            conn = runner.connect(cluster.dsn())
            while not stop.is_set():
                i = rng.randint(1, nrows)
                for t in ("lc", "pc"):
                    conn.execute(f"UPDATE {t} SET v = v + 1 WHERE id = %s", (i,))
                count("writes")
                time.sleep(rng.uniform(0, 0.004))
            conn.close()
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    threads += [threading.Thread(target=writer, args=(100 + s,)) for s in range(2)]
    try:
        for th in threads:
            th.start()
        time.sleep(STRESS_SECONDS)
        stop.set()
        for th in threads:
            th.join(30)
        assert not errors, errors
        wait_confirmed(db, "lcpc_slot", runner.current_lsn(db), worker=w)
        stale = {}
        for t in ("lc", "pc"):
            rows = dict(db.execute(f"SELECT id, v FROM {t}").fetchall())
            cached = {i: client.get(f"{t}:{i}") for i in rows}
            stale[t] = sorted(i for i, v in cached.items() if v is not None and int(v) != rows[i])
            counts[t + "_cached"] = sum(v is not None for v in cached.values())
        print(f"\n{STRESS_SECONDS:.0f} s, 6 readers, 2 writers, {nrows} rows per table: {counts}")
        print(f"stale keys at the end: lease protocol {len(stale['lc'])}, plain cache-aside {len(stale['pc'])}"
              f" {stale['pc']}")
        assert counts.get("lc_filled", 0) > 50 and counts.get("writes", 0) > 100, counts
        assert stale["lc"] == [], f"stale keys with the lease protocol: {stale['lc']}"
        assert not client.keys("lc:*:lease"), "a lease was left behind"
        summary = stop_worker(w)
        assert summary["leases"] == summary["keys"] > 0, summary
    finally:
        stop.set()
        w.__exit__(None, None, None)
