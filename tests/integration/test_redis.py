"""pgfanout's Redis sink (--sink redis) against a real PostgreSQL 15 and real redis-servers:
which cache keys each committed change deletes, and nothing else.

Expectations never come from pgfanout: keys are computed in Python (hashlib for |sha1 and
|md5, str.lower/upper), Django's key format by Django's own default_key_func, cachalot's
table key by cachalot.utils.get_table_cache_key, commit LSNs from a second pgoutput slot
parsed here (redis_util.CommitLog).  "pgfanout has caught up" always means the slot's
confirmed_flush_lsn reached the position after the workload, so each check also shows that
pgfanout confirms only what Redis has done.

Covered: the mixed workload (redis_util.MixedWorkload: inserts, updates with key-column
changes, deletes, multi-row statements, rolled-back transactions, rolled-back and released
savepoints, application keys) plain and with the Django + cachalot presets (custom and
default prefix/version/alias, a custom message prefix, batching settings); truncate with
generation keys (lsn and incr); publish messages; action unlink and generation_key; AUTH
with a password (environment and file), an ACL user, a database number, host/port from the
config, a unix socket; refused credentials; startup warnings (replica identity, unknown
column, missing or unpublished table); a transaction large enough to spill to a temp file;
deduplication within a transaction; config and settings errors; django-cachalot end to end
through Django's ORM; non-transactional invalidation messages; partitioned tables.


Every test uses its own tables, slot and publication on one cluster; tests that count
commands or keys use a redis-server of their own."""
import json
import os
import re
import signal
import time
import types

import pytest

import redis_util
import runner
from ports import free_port
from redis_util import (CommitLog, MixedWorkload, assert_keys, create_slot, create_tables, drop_slots,
                        fill, mixed_tables, wait_confirmed, wait_started, worker_args, write_config)
from redisserver import RedisServer
from runner import lsn_to_int

SEED = int(os.environ.get("PGFANOUT_REDIS_SEED", "20261125"))

AUTH_PASSWORD = "adm-Pw-7Qx"     # requirepass of the auth server
ACL_USER = "cdc"
ACL_PASSWORD = "cdc-Pw-93z"

DJ_PREFIX = "shop"               # Django CACHES KEY_PREFIX / VERSION for the preset tests
DJ_VERSION = 7


# --- fixtures -----------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def auth_server():
    """A redis-server with requirepass and an ACL user."""
    s = RedisServer(password=AUTH_PASSWORD, acl_user=ACL_USER, acl_password=ACL_PASSWORD).start()
    yield s
    s.cleanup()


@pytest.fixture
def slots(db):
    """Slots named by the test; dropped at the end (after its pgfanout has let go)."""
    names = []
    yield names
    drop_slots(db, *names)


def log_path(tmp_path):
    return str(tmp_path / "pgfanout.log")


def stop_worker(w):
    """SIGTERM; asserts a clean exit and returns the log."""
    rc = w.terminate(signal.SIGTERM, timeout=30)
    text = w.stderr_text()
    assert rc == 0, f"pgfanout exited with {rc} on SIGTERM:\n{text[-3000:]}"
    return text


def xid_of(conn):
    return runner.scalar(conn, "SELECT txid_current()")


def run_txn(conn, *stmts):
    """Runs stmts in one transaction; returns its txid_current()."""
    with conn.transaction():
        xid = xid_of(conn)
        for s in stmts:
            if isinstance(s, tuple):
                conn.execute(*s)
            else:
                conn.execute(s)
    return xid


def get_int(client, key):
    v = client.get(key)
    return None if v is None else int(v)


# --- 1. keys per change: the mixed workload ------------------------------------------------------

@pytest.mark.parametrize("preset", ["plain", "django_cachalot", "django_defaults"])
def test_mixed_workload_invalidates_exactly_the_changed_rows(pgfanout, cluster, db, rserver, slots,
                                                             tmp_path, preset):
    """Keys of every row image a committed transaction changed (old and new, so a changed
    slug or email invalidates both), the table keys and cachalot keys of changed tables and
    the application keys of committed transactions are gone; every other key (untouched
    rows, rolled-back transactions and savepoints, another message prefix, a table nothing
    changed) is still cached.  Generation keys: lsn holds the commit LSN of the last
    transaction that changed the table, incr counts those transactions.  Then TRUNCATE:
    table keys, generation keys and cachalot keys move, row keys cannot be named."""
    django = preset.startswith("django")
    name = {"plain": "mxp", "django_cachalot": "mxd", "django_defaults": "mxe"}[preset]
    tables = mixed_tables(name)
    products, users, items, categories, audit = tables
    create_tables(db, tables)
    # The Django variants also take other settings: batching, and their own message prefix.
    message_prefix = "myapp.cache" if preset == "django_defaults" else "pgfanout.invalidate"
    wl = MixedWorkload(tables, seed=SEED + ["plain", "django_cachalot", "django_defaults"].index(preset),
                       message_prefix=message_prefix)
    wl.populate(db)
    slot, ref, pub = f"{name}_slot", f"{name}_ref", f"{name}_pub"
    slots += [slot, ref]
    create_slot(db, slot, pub, tables, ref_slot=ref)

    section = {"rules": redis_util.rules_of(tables)}
    if preset == "django_cachalot":
        key_func = redis_util.django_key_func(DJ_PREFIX, DJ_VERSION)
        alias = "replica"
        section.update(django={"key_prefix": DJ_PREFIX, "version": DJ_VERSION},
                       cachalot={"db_alias": alias}, window=4, linger_ms=20, command_timeout_ms=5000)
    elif preset == "django_defaults":
        # Django's defaults: KEY_PREFIX "" and VERSION 1; cachalot's alias "default".
        key_func = redis_util.django_key_func("", 1)
        alias = "default"
        section.update(django={}, cachalot={}, message_prefix=message_prefix)
    else:
        key_func, alias = redis_util.identity_key, None
    cfg = write_config(tmp_path / "redis.yaml", section)

    client = rserver.client()
    filled = wl.fill_keys(key_func, alias)
    fill(client, filled)
    raw = set()
    if django:
        # The same keys without Django's prefix: pgfanout must not touch them.
        raw = wl.fill_keys(redis_util.identity_key, alias)
        fill(client, raw)
    assert len(filled) > 500

    with runner.Worker(worker_args(cluster, slot, pub, cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        wl.run(db)
        wait_confirmed(db, slot, runner.current_lsn(db), worker=w)
        gone, kept = wl.expected(key_func, alias)
        print(f"\n{preset}: {wl.stats()}; {len(gone)} keys to invalidate, {len(kept)} to keep")
        assert len(gone) > 200 and len(kept) > 200, "the workload must change some rows, not all"
        assert_keys(client, gone, kept | raw, what="after the mixed workload")

        # Generation keys, from the reference slot's commit LSNs.
        log = CommitLog(db, ref, pub)
        last = max(log.commit_lsn(txn.xid) for txn in wl.committed_touching(products))
        gen_products = get_int(client, key_func(products.generation_key))
        assert gen_products == last, (
            f"generation lsn {gen_products} is not the commit LSN {last} of the last"
            f" transaction that changed {products.name}")
        gen_users = get_int(client, key_func(users.generation_key))
        assert gen_users == len(wl.committed_touching(users))
        for t in (items, categories, audit):
            assert not client.exists(key_func(t.generation_key)), f"{t.name} has no generation"
        if django:
            assert not client.exists(products.generation_key), "unprefixed generation key written"

        # TRUNCATE: table keys, generations and cachalot keys; row keys stay (documented).
        row_keys = {key_func(k) for r in wl.current_rows(products)[:5]
                    for k in products.row_keys(r)}
        truncate_gone = {key_func(k) for t in (products, items) for k in t.table_keys}
        if django:
            truncate_gone |= {key_func(redis_util.cachalot_table_key(alias, t.name))
                              for t in (products, users, items)}
        truncate_kept = row_keys | {key_func(k) for k in categories.table_keys}
        fill(client, truncate_gone | truncate_kept)
        x1 = run_txn(db, f"TRUNCATE {products.name}")
        x2 = run_txn(db, f"TRUNCATE {users.name}, {items.name}")
        wait_confirmed(db, slot, runner.current_lsn(db), worker=w)
        log = CommitLog(db, ref, pub)
        assert_keys(client, truncate_gone, truncate_kept, what="after TRUNCATE")
        gen_after = get_int(client, key_func(products.generation_key))
        assert gen_after == log.commit_lsn(x1) and gen_after > gen_products
        assert get_int(client, key_func(users.generation_key)) == gen_users + 1
        assert log.commit_lsn(x2) > log.commit_lsn(x1)
        text = stop_worker(w)
    assert f"TRUNCATE of public.{items.name} cannot name its rows' keys" in text, text[-3000:]
    for t in (products, users):  # they have a generation key: no warning
        assert f"TRUNCATE of public.{t.name} " not in text, text[-3000:]
    summary = redis_util.parse_summary(text)
    assert summary is not None, text[-3000:]
    # Transactions that gave Redis something to do: the workload's, plus the two truncates.
    ruled = {t.name for t in tables if t.templates or t.table_keys or t.generation}
    busy = [txn for txn in wl.txns
            if any(st.app_keys or {t.name for t in st.tables} & (
                {t.name for t in tables} if django else ruled) for st in txn.effective_steps())]
    assert summary["txns"] == len(busy) + 2, (summary, len(busy))


# --- 2. publish ------------------------------------------------------------------------------

def test_publish_messages(pgfanout, cluster, db, rserver, slots, tmp_path):
    """One JSON message per change on the rule's channel, after the commit, in commit order:
    table, op, key (the replica identity columns: the primary key, or the whole row for
    REPLICA IDENTITY FULL), keys (the keys of that change), lsn (the change's position,
    inside its transaction) and xid.  Nothing for a rolled-back transaction; nothing before
    the commit; a second rule on the same table publishes on its own channel."""
    db.execute("CREATE TABLE pb_a (id int4 PRIMARY KEY, name text)")
    db.execute("CREATE TABLE pb_b (id int4 PRIMARY KEY, slug text, qty int4)")
    db.execute("ALTER TABLE pb_b REPLICA IDENTITY FULL")
    db.execute("INSERT INTO pb_b VALUES (1, 's1', 10), (2, 's2', 20)")
    slots += ["pb_slot", "pb_ref"]
    create_slot(db, "pb_slot", "pb_pub", ["public.pb_a", "public.pb_b"], ref_slot="pb_ref")
    cfg = write_config(tmp_path / "redis.yaml", {"rules": [
        {"table": "pb_a", "keys": ["pb_a:{id}"], "table_keys": ["pb_a:list"], "publish": "inval"},
        {"table": "public.pb_a", "keys": ["pb_a:second:{id}"], "publish": "inval2"},
        {"table": "pb_b", "keys": ["pb_b:{id}", "pb_b:slug:{slug}"], "table_keys": ["pb_b:list"],
         "publish": "inval", "generation": "incr"},
    ]})
    client = rserver.client()
    fill(client, {"pb_a:4", "pb_a:list", "pb_b:slug:s1", "pb_b:slug:s1-new", "pb_b:1", "pb_b:3"})
    ps = client.pubsub()
    ps.subscribe("inval", "inval2")
    for _ in range(2):
        assert ps.get_message(timeout=5)["type"] == "subscribe"

    def drain(timeout):
        out = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = ps.get_message(timeout=0.1)
            if m and m["type"] == "message":
                out.append((m["channel"].decode(), json.loads(m["data"])))
        return out

    expected = []  # (channel, table, op, key, keys set, xid)

    def want(channel, table, op, key, keys, xid):
        expected.append((channel, table, op, key, set(keys), xid & 0xFFFFFFFF))

    with runner.Worker(worker_args(cluster, "pb_slot", "pb_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        x1 = run_txn(db, "INSERT INTO pb_a VALUES (1, 'x'), (2, 'y')")
        for i in (1, 2):
            want("inval", "public.pb_a", "insert", {"id": i}, [f"pb_a:{i}", "pb_a:list"], x1)
            want("inval2", "public.pb_a", "insert", {"id": i}, [f"pb_a:second:{i}"], x1)
        x2 = run_txn(db, "UPDATE pb_b SET slug = 's1-new', qty = qty + 1 WHERE id = 1")
        want("inval", "public.pb_b", "update", {"id": 1, "slug": "s1-new", "qty": 11},
             ["pb_b:1", "pb_b:slug:s1", "pb_b:slug:s1-new", "pb_b:list"], x2)
        x3 = run_txn(db, "DELETE FROM pb_a WHERE id = 2", "DELETE FROM pb_b WHERE id = 2")
        want("inval", "public.pb_a", "delete", {"id": 2}, ["pb_a:2", "pb_a:list"], x3)
        want("inval2", "public.pb_a", "delete", {"id": 2}, ["pb_a:second:2"], x3)
        want("inval", "public.pb_b", "delete", {"id": 2, "slug": "s2", "qty": 20},
             ["pb_b:2", "pb_b:slug:s2", "pb_b:list"], x3)
        with pytest.raises(RuntimeError):
            with db.transaction():
                db.execute("INSERT INTO pb_a VALUES (3, 'rolled back')")
                raise RuntimeError("roll back")
        wait_confirmed(db, "pb_slot", runner.current_lsn(db), worker=w)
        got = drain(0.5)
        assert len(got) == len(expected), (got, expected)
        assert_keys(client, {"pb_b:slug:s1", "pb_b:slug:s1-new", "pb_b:1"}, {"pb_b:3"})
        # An open transaction publishes and deletes nothing until it commits.
        fill(client, {"pb_a:list"})
        with db.transaction():
            x4 = xid_of(db)
            db.execute("INSERT INTO pb_a VALUES (4, 'z')")
            time.sleep(0.8)
            assert drain(0.2) == [], "a message was published before the commit"
            assert_keys(client, set(), {"pb_a:4", "pb_a:list"}, what="before the commit")
        want("inval", "public.pb_a", "insert", {"id": 4}, ["pb_a:4", "pb_a:list"], x4)
        want("inval2", "public.pb_a", "insert", {"id": 4}, ["pb_a:second:4"], x4)
        x5 = run_txn(db, "TRUNCATE pb_b")
        want("inval", "public.pb_b", "truncate", {}, ["pb_b:list"], x5)
        wait_confirmed(db, "pb_slot", runner.current_lsn(db), worker=w)
        got += drain(1.0)
        assert_keys(client, {"pb_a:4", "pb_a:list"}, {"pb_b:3"}, what="after the commit")
        stop_worker(w)

    log = CommitLog(db, "pb_ref", "pb_pub")
    commits = sorted(log.by_xid.values())
    assert len(got) == len(expected), "\n".join(map(str, got))
    last_lsn = 0
    for (channel, msg), (wch, table, op, key, keys, xid) in zip(got, expected):
        where = f"message {msg} on {channel}"
        assert channel == wch, where
        assert set(msg) >= {"table", "op", "key", "keys", "lsn", "xid"}, where
        assert (msg["table"], msg["op"], msg["key"], msg["xid"]) == (table, op, key, xid), where
        assert set(msg["keys"]) == keys, where
        assert runner.LSN_RE.match(msg["lsn"]), where
        lsn = lsn_to_int(msg["lsn"])
        commit = log.commit_lsn(xid)
        previous_commit = max([c for c in commits if c < commit], default=0)
        assert previous_commit < lsn <= commit, f"{where}: lsn outside its transaction"
        assert lsn >= last_lsn, f"{where}: out of order"
        last_lsn = lsn
    assert get_int(client, "pgfanout:gen:public.pb_b") == 3  # x2, x3, x5


# --- 3. AUTH, ACL user, database number; refused credentials ------------------------------------

AUTH_CASES = {
    # name: (redis section extras, env password, db)
    "env_password": ({}, AUTH_PASSWORD, 0),
    "password_file": ({"password_file": "FILE"}, None, 0),
    "acl_user_env": ({"username": ACL_USER}, ACL_PASSWORD, 0),
    "acl_user_file": ({"username": ACL_USER, "password_file": "FILE"}, None, 0),
    "db_number": ({"db": 3}, AUTH_PASSWORD, 3),  # and host/port from the config, no --redis
}


@pytest.mark.parametrize("case", sorted(AUTH_CASES))
def test_auth_and_database(pgfanout, cluster, db, auth_server, slots, tmp_path, case):
    """pgfanout authenticates (password from PGFANOUT_REDIS_PASSWORD or password_file, as
    the default user or an ACL user) and deletes in its database only."""
    extra, env_pw, dbnum = AUTH_CASES[case]
    t = f"au_{case}"
    db.execute(f"CREATE TABLE {t} (id int4 PRIMARY KEY, v text)")
    db.execute(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    slots.append(f"{t}_slot")
    create_slot(db, f"{t}_slot", f"{t}_pub", [f"public.{t}"])
    section = dict(extra, rules=[{"table": t, "keys": [f"{t}:{{id}}"]}])
    if section.get("password_file"):
        pwfile = tmp_path / "redis-password"
        # Only the first line counts, without its line end (CRLF too).
        pwfile.write_text((ACL_PASSWORD if "username" in extra else AUTH_PASSWORD)
                          + ("\r\n" if case == "acl_user_file" else "\nsecond line\n"))
        section["password_file"] = str(pwfile)
    cfg = write_config(tmp_path / "redis.yaml", section)
    client = auth_server.client(dbnum)
    other = auth_server.client(0 if dbnum else 5)
    keys = {f"{t}:{i}" for i in (1, 2, 3, 4)}
    fill(client, keys)
    fill(other, keys)
    env = {"PGFANOUT_REDIS_PASSWORD": env_pw or ""}
    addr = auth_server.addr
    if case == "db_number":
        section.update(host="127.0.0.1", port=auth_server.port)
        cfg = write_config(tmp_path / "redis.yaml", section)
        addr = None
    with runner.Worker(worker_args(cluster, f"{t}_slot", f"{t}_pub", cfg, addr),
                       stderr_path=log_path(tmp_path), env=env) as w:
        wait_started(w)
        run_txn(db, f"INSERT INTO {t} VALUES (3, 'c')", f"UPDATE {t} SET v = 'A' WHERE id = 1")
        wait_confirmed(db, f"{t}_slot", runner.current_lsn(db), worker=w)
        assert_keys(client, {f"{t}:1", f"{t}:3"}, {f"{t}:2", f"{t}:4"}, what=f"db {dbnum}")
        assert_keys(other, set(), keys, what="another database")
        # Our own clients are the default user: an ACL user's connection is pgfanout's.
        users = {c.get("user") for c in client.client_list()}
        if "username" in extra:
            assert ACL_USER in users, f"no connection as ACL user {ACL_USER}: {users}"
        else:
            assert users == {"default"}, users
        text = stop_worker(w)
    assert AUTH_PASSWORD not in text and ACL_PASSWORD not in text


BAD_AUTH_CASES = {
    # name: (redis section extras, env password or None, file password or None, words in the error)
    "wrong_env_password": ({}, "Wrong-Secret-1", None, ["AUTH", "PGFANOUT_REDIS_PASSWORD"]),
    "wrong_file_password": ({}, None, "Wrong-Secret-2", ["AUTH", "password_file"]),
    "acl_user_wrong_password": ({"username": ACL_USER}, "Wrong-Secret-3", None,
                                ["AUTH", "redis.username"]),
    "no_password": ({}, None, None, ["NOAUTH"]),
}


@pytest.mark.parametrize("case", sorted(BAD_AUTH_CASES))
def test_refused_credentials_exit_without_confirming(pgfanout, cluster, db, auth_server, slots,
                                                      tmp_path, case):
    """Refused credentials: pgfanout exits non-zero by itself with a message that says what
    to check, never prints the password, and the slot does not confirm past the changes
    waiting in it (a run with the right password then deletes their keys)."""
    extra, env_pw, file_pw, words = BAD_AUTH_CASES[case]
    t = f"ba_{case}"
    db.execute(f"CREATE TABLE {t} (id int4 PRIMARY KEY)")
    slot = f"{t}_slot"
    slots.append(slot)
    create_slot(db, slot, f"{t}_pub", [f"public.{t}"])
    section = dict(extra, rules=[{"table": t, "keys": [f"{t}:{{id}}"]}])
    if file_pw:
        pwfile = tmp_path / "redis-password"
        pwfile.write_text(file_pw + "\n")
        section["password_file"] = str(pwfile)
    cfg = write_config(tmp_path / "redis.yaml", section)
    client = auth_server.client()
    fill(client, {f"{t}:1", f"{t}:2"})
    before = runner.current_lsn(db)
    run_txn(db, f"INSERT INTO {t} VALUES (1)")
    run_txn(db, f"INSERT INTO {t} VALUES (2)")
    res = runner.run_pgfanout(worker_args(cluster, slot, f"{t}_pub", cfg, auth_server.addr),
                              timeout=30, env={"PGFANOUT_REDIS_PASSWORD": env_pw or ""})
    assert not res.timed_out, "pgfanout kept running with refused credentials:\n" + res.describe()
    assert res.returncode == 1, res.describe()
    for word in words:
        assert word in res.stderr, f"{word!r} missing:\n" + res.describe()
    for secret in (env_pw, file_pw, AUTH_PASSWORD, ACL_PASSWORD):
        if secret:
            assert secret not in res.stderr and secret not in res.stdout, "password printed"
    runner.wait_slot_inactive(db, slot)
    confirmed = redis_util.confirmed_lsn(db, slot)
    assert confirmed <= lsn_to_int(before), (
        f"confirmed_flush_lsn {runner.int_to_lsn(confirmed)} moved past changes at {before}"
        " that Redis never saw")
    assert_keys(client, set(), {f"{t}:1", f"{t}:2"}, what="after the refused run")

    # Nothing was lost: with the right password the same slot delivers both transactions.
    good = dict(section)
    good.pop("password_file", None)
    cfg = write_config(tmp_path / "good.yaml", good)
    pw = ACL_PASSWORD if "username" in extra else AUTH_PASSWORD
    with runner.Worker(worker_args(cluster, slot, f"{t}_pub", cfg, auth_server.addr),
                       stderr_path=str(tmp_path / "good.log"),
                       env={"PGFANOUT_REDIS_PASSWORD": pw}) as w:
        wait_confirmed(db, slot, runner.current_lsn(db), worker=w)
        assert_keys(client, {f"{t}:1", f"{t}:2"}, set(), what="after the run with the right password")
        stop_worker(w)


def test_unix_socket(pgfanout, cluster, db, slots, tmp_path):
    """--redis /path: a unix socket (a redis-server of the test's own listening only there)."""
    import subprocess
    import redis
    sock = str(tmp_path / "redis.sock")
    proc = subprocess.Popen([os.environ.get("PGFANOUT_REDIS_SERVER", "/usr/bin/redis-server"),
                             "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=sock, socket_timeout=10)
        assert runner.wait_for(lambda: os.path.exists(sock) and _pings(client), 20), "no redis on the socket"
        db.execute("CREATE TABLE us (id int4 PRIMARY KEY)")
        slots.append("us_slot")
        create_slot(db, "us_slot", "us_pub", ["public.us"])
        cfg = write_config(tmp_path / "redis.yaml", {"rules": [{"table": "us", "keys": ["us:{id}"]}]})
        fill(client, {"us:1", "us:2"})
        with runner.Worker(worker_args(cluster, "us_slot", "us_pub", cfg, sock),
                           stderr_path=log_path(tmp_path)) as w:
            wait_started(w)
            run_txn(db, "INSERT INTO us VALUES (1)")
            wait_confirmed(db, "us_slot", runner.current_lsn(db), worker=w)
            assert_keys(client, {"us:1"}, {"us:2"})
            text = stop_worker(w)
        assert f"redis at {sock}: connected" in text, text[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _pings(client):
    import redis
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def partitioned_run(cluster, db, rserver, slots, tmp_path, name, via_root):
    """A rule (and cachalot) for a partitioned table; rows inserted through the parent land
    in its partitions.  Returns (keys still cached of those expected gone, the log)."""
    db.execute(f"CREATE TABLE {name} (id int4, region text, PRIMARY KEY (id, region))"
               " PARTITION BY LIST (region)")
    db.execute(f"CREATE TABLE {name}_eu PARTITION OF {name} FOR VALUES IN ('eu')")
    db.execute(f"CREATE TABLE {name}_us PARTITION OF {name} FOR VALUES IN ('us')")
    db.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE {name}"
               f" WITH (publish_via_partition_root = {'true' if via_root else 'false'})")
    slots.append(f"{name}_slot")
    create_slot(db, f"{name}_slot")
    cfg = write_config(tmp_path / "redis.yaml", {"cachalot": {}, "rules": [
        {"table": name, "keys": [f"{name}:{{region}}:{{id}}"], "table_keys": [f"{name}:list"]}]})
    client = rserver.client()
    gone = {f"{name}:eu:1", f"{name}:us:2", f"{name}:list", redis_util.cachalot_table_key("default", name)}
    fill(client, gone | {f"{name}:eu:3"})
    with runner.Worker(worker_args(cluster, f"{name}_slot", f"{name}_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        run_txn(db, f"INSERT INTO {name} VALUES (1, 'eu'), (2, 'us')")
        wait_confirmed(db, f"{name}_slot", runner.current_lsn(db), worker=w)
        left = redis_util.existing(client, gone)
        assert client.exists(f"{name}:eu:3")
        return left, stop_worker(w)


def test_partitioned_table_via_partition_root(pgfanout, cluster, db, rserver, slots, tmp_path):
    """With publish_via_partition_root, a rule (and cachalot's key) for a partitioned table
    covers changes made in its partitions."""
    left, text = partitioned_run(cluster, db, rserver, slots, tmp_path, "ptr", via_root=True)
    assert not left, f"still cached: {left}"
    assert "does not include" not in text, text[-2000:]


def test_partitioned_table_default_publication_is_warned(pgfanout, cluster, db, rserver, slots,
                                                        tmp_path):
    """With the default publish_via_partition_root = false, changes arrive under each
    partition's name, so a rule for the partitioned table cannot match: pgfanout says so at
    startup and names the ALTER PUBLICATION that fixes it (not the wrong "ADD TABLE")."""
    left, text = partitioned_run(cluster, db, rserver, slots, tmp_path, "ptd", via_root=False)
    assert "publish_via_partition_root = true" in text, text[-2000:]
    assert "partitioned table public.ptd" in text, text[-2000:]
    assert "ADD TABLE" not in text, text[-2000:]
    assert left, "the partitions' changes were not expected to match the parent's rule"


# --- 4. replica identity warning -------------------------------------------------------------------

def test_replica_identity_warning_at_startup(pgfanout, cluster, db, rserver, slots, tmp_path):
    """A template column that updates and deletes do not send (not in the replica identity)
    is warned about at startup, naming table, column and the fix REPLICA IDENTITY FULL; no
    warning for FULL, or for templates that use only identity columns."""
    db.execute("CREATE TABLE ri_def (id int4 PRIMARY KEY, email text, name text)")
    db.execute("CREATE TABLE ri_full (id int4 PRIMARY KEY, email text)")
    db.execute("ALTER TABLE ri_full REPLICA IDENTITY FULL")
    db.execute("CREATE TABLE ri_pk (id int4 PRIMARY KEY, email text)")
    db.execute("CREATE TABLE ri_idx (code text NOT NULL, region int4 NOT NULL, payload text)")
    db.execute("CREATE UNIQUE INDEX ri_idx_key ON ri_idx (code, region)")
    db.execute("ALTER TABLE ri_idx REPLICA IDENTITY USING INDEX ri_idx_key")
    db.execute("CREATE TABLE ri_nothing (n int4, label text)")
    db.execute("ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING")
    db.execute("CREATE TABLE ri_unpublished (id int4 PRIMARY KEY)")
    db.execute("CREATE TABLE ri_cols (id int4 PRIMARY KEY)")
    db.execute("ALTER TABLE ri_cols REPLICA IDENTITY FULL")
    names = ["ri_def", "ri_full", "ri_pk", "ri_idx", "ri_nothing", "ri_cols"]
    slots.append("ri_slot")
    create_slot(db, "ri_slot", "ri_pub", [f"public.{n}" for n in names])
    cfg = write_config(tmp_path / "redis.yaml", {"rules": [
        {"table": "ri_def", "keys": ["d:{id}", "d:e:{email|lower}", "d:n:{name}"]},
        {"table": "ri_full", "keys": ["f:{id}", "f:e:{email|lower}"]},
        {"table": "ri_pk", "keys": ["p:{id}"]},
        {"table": "ri_idx", "keys": ["i:{code}:{region}", "i:p:{payload|sha1}"]},
        {"table": "ri_nothing", "keys": ["n:{n}"]},
        {"table": "ri_unpublished", "keys": ["u:{id}"]},
        {"table": "ri_missing", "keys": ["m:{id}"]},
        {"table": "ri_cols", "keys": ["c:{id}:{nosuchcol}"]},
    ]})
    with runner.Worker(worker_args(cluster, "ri_slot", "ri_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        text = stop_worker(w)
    warnings = {n: [ln for ln in text.splitlines() if re.search(rf"public\.{n}\b", ln) and " warn" in ln]
                for n in names + ["ri_unpublished", "ri_missing"]}

    def missing_columns(table):
        """The columns the single identity warning of table lists."""
        (line,) = [ln for ln in warnings[table] if "the key templates of" in ln]
        assert f"ALTER TABLE public.{table} REPLICA IDENTITY FULL" in line, line
        m = re.search(r"the key templates of public\.\w+ use (.+?), which its replica identity", line)
        assert m, line
        return set(m.group(1).split(", "))

    assert missing_columns("ri_def") == {"email", "name"}, text
    assert missing_columns("ri_idx") == {"payload"}, text
    assert missing_columns("ri_nothing") == {"n"}, text
    # The publication's own start-up warning: its UPDATEs and DELETEs fail (ri_nothing only).
    assert [ln for ln in text.splitlines() if "without a replica identity" in ln and "public.ri_nothing" in ln
            and "public.ri_def" not in ln], text
    assert warnings["ri_full"] == [], text
    # The other checks at startup: a table outside the publication, a missing table, a
    # template column the table does not have.
    assert any("ALTER PUBLICATION ri_pub ADD TABLE public.ri_unpublished" in ln
               for ln in warnings["ri_unpublished"]), text
    assert any("does not exist" in ln for ln in warnings["ri_missing"]), text
    assert warnings["ri_pk"] == [], text
    (unknown,) = warnings["ri_cols"]
    assert "nosuchcol" in unknown and "does not have" in unknown, unknown


# --- 5. a large transaction ------------------------------------------------------------------------

LARGE_ROWS = 200_000


def test_large_transaction_invalidates_every_key(pgfanout, cluster, db, rserver, slots, tmp_path):
    """One transaction of 200k inserted rows, two keys each (over 4 MB of keys, so the sink
    spills it to a temp file): every key is deleted, exactly once, and nothing else."""
    db.execute("CREATE TABLE lg (id int4 PRIMARY KEY, tag text)")
    slots.append("lg_slot")
    create_slot(db, "lg_slot", "lg_pub", ["public.lg"])
    cfg = write_config(tmp_path / "redis.yaml", {"rules": [
        {"table": "lg", "keys": ["lg:{id}", "lg:t:{tag|sha1}"]}]})
    gone = {f"lg:{i}" for i in range(1, LARGE_ROWS + 1)}
    gone |= {"lg:t:" + redis_util.sha1_hex(f"tag-{i}") for i in range(1, LARGE_ROWS + 1)}
    kept = {f"lg:{i}" for i in range(LARGE_ROWS + 1, LARGE_ROWS + 2001)}
    kept |= {"lg:t:" + redis_util.sha1_hex(f"tag-{i}") for i in range(LARGE_ROWS + 1, LARGE_ROWS + 2001)}
    assert sum(len(k) for k in gone) > 4 << 20, "not enough key bytes to spill"
    client = rserver.client()
    fill(client, gone | kept)
    assert client.dbsize() == len(gone) + len(kept)
    with runner.Worker(worker_args(cluster, "lg_slot", "lg_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        t0 = time.monotonic()
        db.execute(f"INSERT INTO lg SELECT g, 'tag-' || g FROM generate_series(1, {LARGE_ROWS}) g")
        wait_confirmed(db, "lg_slot", runner.current_lsn(db), timeout=150, worker=w)
        print(f"\n{LARGE_ROWS} rows in one transaction invalidated in {time.monotonic() - t0:.1f} s")
        # The server holds only what we filled (and pgfanout's read-your-writes key): its size
        # shows every gone key was deleted.
        size = client.dbsize() - client.exists("pgfanout:ryw:lg_slot")
        assert size == len(kept), f"{size - len(kept)} keys not deleted"
        assert_keys(client, set(), kept)
        text = stop_worker(w)
    summary = redis_util.parse_summary(text)
    assert summary and summary["txns"] == 1 and summary["keys"] == 2 * LARGE_ROWS, text[-2000:]


# --- 6. dedup within a transaction ---------------------------------------------------------------

def test_one_deletion_per_key_per_transaction(pgfanout, cluster, db, rserver, slots, tmp_path):
    """1000 updates of one row in one transaction: each key is deleted once (one DEL of the
    3 distinct keys), the generation is incremented once."""
    db.execute("CREATE TABLE dd (id int4 PRIMARY KEY, slug text, n int4)")
    db.execute("ALTER TABLE dd REPLICA IDENTITY FULL")
    db.execute("INSERT INTO dd VALUES (1, 'one', 0), (2, 'two', 0)")
    slots.append("dd_slot")
    create_slot(db, "dd_slot", "dd_pub", ["public.dd"])
    cfg = write_config(tmp_path / "redis.yaml", {"rules": [
        {"table": "dd", "keys": ["dd:{id}", "dd:slug:{slug}"], "table_keys": ["dd:list"],
         "generation": "incr"}]})
    client = rserver.client()
    fill(client, {"dd:1", "dd:slug:one", "dd:list", "dd:2", "dd:slug:two"})
    client.config_resetstat()
    with runner.Worker(worker_args(cluster, "dd_slot", "dd_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        db.execute("DO $$ BEGIN FOR i IN 1..1000 LOOP UPDATE dd SET n = n + 1 WHERE id = 1;"
                   " END LOOP; END $$")
        wait_confirmed(db, "dd_slot", runner.current_lsn(db), worker=w)
        assert_keys(client, {"dd:1", "dd:slug:one", "dd:list"}, {"dd:2", "dd:slug:two"})
        assert get_int(client, "pgfanout:gen:public.dd") == 1
        stats = client.info("commandstats")
        assert stats.get("cmdstat_del", {}).get("calls") == 1, stats
        assert stats.get("cmdstat_incr", {}).get("calls") == 1, stats
        text = stop_worker(w)
    assert redis_util.parse_summary(text) == {"txns": 1, "keys": 4, "commands": 2}, text[-2000:]


def test_action_unlink_and_custom_generation_key(pgfanout, cluster, db, rserver, slots, tmp_path):
    """action: unlink sends UNLINK (no DEL) for row and table keys; generation_key replaces
    the default key."""
    db.execute("CREATE TABLE ul (id int4 PRIMARY KEY, v text)")
    slots.append("ul_slot")
    create_slot(db, "ul_slot", "ul_pub", ["public.ul"])
    cfg = write_config(tmp_path / "redis.yaml", {"rules": [
        {"table": "ul", "keys": ["ul:{id}"], "table_keys": ["ul:list"], "action": "unlink",
         "generation": "incr", "generation_key": "ul:generation"}]})
    client = rserver.client()
    fill(client, {"ul:1", "ul:2", "ul:3", "ul:list"})
    client.config_resetstat()
    with runner.Worker(worker_args(cluster, "ul_slot", "ul_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        run_txn(db, "INSERT INTO ul VALUES (1, 'a'), (2, 'b')")
        run_txn(db, "DELETE FROM ul WHERE id = 1")
        wait_confirmed(db, "ul_slot", runner.current_lsn(db), worker=w)
        assert_keys(client, {"ul:1", "ul:2", "ul:list"}, {"ul:3"})
        assert get_int(client, "ul:generation") == 2
        assert not client.exists("pgfanout:gen:public.ul")
        stats = client.info("commandstats")
        assert stats.get("cmdstat_unlink", {}).get("calls", 0) >= 2, stats  # one per transaction at least
        assert "cmdstat_del" not in stats, stats
        stop_worker(w)


# --- 7. config errors ----------------------------------------------------------------------------------

RULE = "  rules:\n    - table: t\n      keys: [\"t:{id}\"]\n"
CONFIG_ERRORS = {
    # name: (yaml text, text on the offending line, key path, words in the message)
    "unknown_key": ("redis:\n  port: 6379\n  hots: localhost\n" + RULE,
                    "hots:", "redis.hots", ["unknown key 'hots'", "host"]),
    "unknown_rule_key": ("redis:\n" + RULE + "      actoin: unlink\n",
                         "actoin:", "redis.rules[0].actoin", ["unknown key 'actoin'", "action"]),
    "unknown_top_key": ("reddis:\n  port: 1\n", "reddis:", "reddis", ["unknown key 'reddis'"]),
    "bad_generation": ("redis:\n" + RULE + "      generation: lsnn\n",
                       "generation:", "redis.rules[0].generation", ["none, lsn, incr"]),
    "bad_action": ("redis:\n  db: 1\n" + RULE + "      action: delete\n",
                   "action:", "redis.rules[0].action", ["del, unlink"]),
    "bad_bool": ("redis:\n  tls: yess\n" + RULE, "tls:", "redis.tls", ["true", "false"]),
    "bad_filter": ("redis:\n" + RULE + "    - table: users\n      keys:\n        - \"u:{id}\"\n"
                   "        - \"u:{email|lowercase}\"\n",
                   "lowercase", "redis.rules[1].keys[1]",
                   ["unknown filter 'lowercase'", "lower, upper, sha1, md5"]),
    "unclosed_brace": ("redis:\n  rules:\n    - table: t\n      table_keys: [\"t:all\"]\n"
                       "      keys: [\"t:{id\"]\n", "t:{id", "redis.rules[0].keys[0]", ["'{'"]),
    "too_many_filters": ("redis:\n" + RULE + "    - table: u\n"
                         "      keys: [\"u:{e|lower|upper|sha1|md5|lower}\"]\n",
                         "u:{e|", "redis.rules[1].keys[0]", ["at most 4"]),
    "table_key_placeholder": ("redis:\n" + RULE + "      table_keys:\n        - \"t:list\"\n"
                              "        - \"t:{id}\"\n", "- \"t:{id}\"", "redis.rules[0].table_keys[1]",
                              ["literal"]),
    "bad_table_name": ("redis:\n  rules:\n    - table: a.b.c\n      keys: [\"k\"]\n",
                       "a.b.c", "redis.rules[0].table", ["a.b.c", "schema.table"]),
    "rule_does_nothing": ("redis:\n" + RULE + "    - table: lonely\n", "lonely",
                          "redis.rules[1]", ["does nothing"]),
    "bad_port": ("redis:\n  port: http\n", "port:", "redis.port", ["non-negative integers"]),
    "empty_column_before_filter": ("redis:\n  rules:\n    - table: t\n      keys: [\"t:{|lower}\"]\n",
                                   "t:{|lower}", "redis.rules[0].keys[0]", ["empty placeholder"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_config_errors_name_key_and_line(pgfanout, tmp_path, case):
    """A bad config file: exit status 2 before connecting anywhere (the DSN points at a
    closed port), with a message that names the file, the line and the key."""
    text, marker, keypath, words = CONFIG_ERRORS[case]
    line = next(i + 1 for i, ln in enumerate(text.splitlines()) if marker in ln)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=5"
    res = runner.run_pgfanout(["--dsn", dsn, "--sink", "redis", "--config", str(path),
                               "--redis", f"127.0.0.1:{free_port()}"], timeout=30)
    assert res.returncode == 2, res.describe()
    assert f"config file {path}, line {line} ({keypath})" in res.stderr, res.describe()
    for word in words:
        assert word in res.stderr, f"{word!r} missing:\n" + res.describe()


SETTINGS_ERRORS = {
    # name: (redis section, env password, words in the message)
    "username_without_password": ({"username": "cdc"}, "", ["redis.username", "PGFANOUT_REDIS_PASSWORD"]),
    "password_file_missing": ({"password_file": "/nonexistent/redis-password"}, "",
                              ["redis.password_file", "/nonexistent/redis-password"]),
    "password_file_empty": ({"password_file": "EMPTY"}, "", ["redis.password_file", "empty"]),
    "tls": ({"tls": True}, "", ["redis.tls", "TLS"]),
    "empty_lease_suffix": ({"lease_suffix": ""}, "", ["redis.lease_suffix", "redis.leases: false"]),
    "bad_lease_layout": ({"lease_layout": "ring"}, "", ["redis.lease_layout", "suffix, cluster"]),
}


@pytest.mark.parametrize("case", sorted(SETTINGS_ERRORS))
def test_redis_settings_refused_before_connecting(pgfanout, tmp_path, case):
    """Settings that cannot work are refused at startup with exit status 2, before any
    connection (the DSN and Redis point at closed ports)."""
    section, env_pw, words = SETTINGS_ERRORS[case]
    section = dict(section, rules=[{"table": "t", "keys": ["t:{id}"]}])
    if section.get("password_file") == "EMPTY":
        (tmp_path / "empty").write_text("")
        section["password_file"] = str(tmp_path / "empty")
    cfg = write_config(tmp_path / "redis.yaml", section)
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=5"
    res = runner.run_pgfanout(["--dsn", dsn, "--sink", "redis", "--config", cfg,
                               "--redis", f"127.0.0.1:{free_port()}"], timeout=30,
                              env={"PGFANOUT_REDIS_PASSWORD": env_pw})
    assert res.returncode == 2, res.describe()
    for word in words:
        assert word in res.stderr, f"{word!r} missing:\n" + res.describe()


# --- django-cachalot end to end through Django's ORM ----------------------------------------------

@pytest.fixture(scope="module")
def django_env(cluster):
    """Django 3.2 configured in this process: PostgreSQL through psycopg2, django_redis on a
    redis-server of its own with KEY_PREFIX/VERSION, django-cachalot installed, and one model
    (table dj_gadget)."""
    import django
    from django.conf import settings
    if settings.configured:
        pytest.fail("Django settings were already configured in this process")
    server = RedisServer().start()
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "postgres",
                               "USER": cluster.superuser, "HOST": "127.0.0.1",
                               "PORT": str(cluster.port)}},
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache",
                            "LOCATION": f"redis://127.0.0.1:{server.port}/0",
                            "KEY_PREFIX": DJ_PREFIX, "VERSION": DJ_VERSION}},
        INSTALLED_APPS=["cachalot"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import models

    class Gadget(models.Model):
        name = models.TextField()

        class Meta:
            app_label = "pgfanout_tests"
            db_table = "dj_gadget"

    yield types.SimpleNamespace(server=server, Gadget=Gadget)
    from django.db import connections
    connections.close_all()
    server.cleanup()


def test_cachalot_end_to_end(pgfanout, cluster, db, django_env, slots, tmp_path):
    """A cachalot-cached ORM query stays stale when the row changes outside Django (nothing
    tells the cache), and returns the new value once pgfanout (Django + cachalot presets)
    has processed the change: it deleted the very key cachalot reads.  Keys written with
    Django's cache API are deleted by the rule's templates in Django's key format."""
    from cachalot.utils import get_table_cache_key
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    Gadget = django_env.Gadget
    db.execute("CREATE TABLE dj_gadget (id serial PRIMARY KEY, name text NOT NULL)")
    db.execute("INSERT INTO dj_gadget (name) VALUES ('old'), ('other')")
    slots.append("dj_slot")
    create_slot(db, "dj_slot", "dj_pub", ["public.dj_gadget"])
    client = django_env.server.client()

    def read():
        return Gadget.objects.get(pk=1).name, Gadget.objects.count()

    assert read() == ("old", 2)
    with CaptureQueriesContext(connection) as q:
        assert read() == ("old", 2)
    assert len(q) == 0, f"cachalot did not serve the queries from the cache: {q.captured_queries}"
    table_key = cache.make_key(get_table_cache_key("default", "dj_gadget"))
    assert table_key == f"{DJ_PREFIX}:{DJ_VERSION}:{get_table_cache_key('default', 'dj_gadget')}"
    assert client.exists(table_key), f"cachalot's table key {table_key} is not in Redis"

    db.execute("UPDATE dj_gadget SET name = 'new' WHERE id = 1")
    db.execute("INSERT INTO dj_gadget (name) VALUES ('third')")
    assert read() == ("old", 2), "without pgfanout the cached result must stay stale"

    # Django's own cache API for the row keys the rule names (the Django preset end to end).
    cache.set_many({"gadget:1": "g1", "gadget:2": "g2", "gadget:9": "g9", "gadget:list": [1, 2]})

    cfg = write_config(tmp_path / "redis.yaml", {
        "django": {"key_prefix": DJ_PREFIX, "version": DJ_VERSION},
        "cachalot": {"db_alias": "default"},
        "rules": [{"table": "dj_gadget", "keys": ["gadget:{id}"], "generation": "lsn"}]})
    with runner.Worker(worker_args(cluster, "dj_slot", "dj_pub", cfg, django_env.server.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_confirmed(db, "dj_slot", runner.current_lsn(db), worker=w)
        assert not client.exists(table_key), "pgfanout did not delete cachalot's table key"
        assert read() == ("new", 3)
        assert cache.get_many(["gadget:1", "gadget:2", "gadget:9", "gadget:list"]) == {
            "gadget:2": "g2", "gadget:9": "g9", "gadget:list": [1, 2]}
        # And again, while pgfanout runs: a change outside Django shows up, and so does a key
        # the application names in the transaction.
        run_txn(db, "DELETE FROM dj_gadget WHERE id = 2",
                "SELECT pg_logical_emit_message(true, 'pgfanout.invalidate', 'gadget:list')")
        wait_confirmed(db, "dj_slot", runner.current_lsn(db), worker=w)
        assert read() == ("new", 2)
        assert cache.get_many(["gadget:2", "gadget:9", "gadget:list"]) == {"gadget:9": "g9"}
        # The generation key reads as an int through Django's cache (django_redis unpickles
        # anything that is not one).
        gen = cache.get("pgfanout:gen:public.dj_gadget")
        raw = client.get(cache.make_key("pgfanout:gen:public.dj_gadget"))
        assert isinstance(gen, int) and gen == int(raw), (gen, raw)
        assert gen <= lsn_to_int(runner.current_lsn(db))
        stop_worker(w)


# --- non-transactional invalidation messages ---------------------------------------------------

def run_non_transactional(cluster, db, rserver, slots, tmp_path, name):
    slots.append(f"{name}_slot")
    create_slot(db, f"{name}_slot", f"{name}_pub")
    cfg = write_config(tmp_path / "redis.yaml", {"rules": []})
    client = rserver.client()
    fill(client, {f"{name}:a", f"{name}:b", f"{name}:c"})
    with runner.Worker(worker_args(cluster, f"{name}_slot", f"{name}_pub", cfg, rserver.addr),
                       stderr_path=log_path(tmp_path)) as w:
        wait_started(w)
        db.execute("SELECT pg_logical_emit_message(false, 'pgfanout.invalidate', %s)",
                   (f"{name}:a {name}:b",))
        # No transaction follows: the message alone must be delivered.
        assert runner.wait_for(lambda: client.exists(f"{name}:a", f"{name}:b") == 0, 15), \
            w.stderr_text()[-2000:]
        assert client.exists(f"{name}:c") == 1
        return stop_worker(w)


def test_non_transactional_message_deletes_its_keys(pgfanout, cluster, db, rserver, slots, tmp_path):
    """pg_logical_emit_message(false, ...) outside any transaction is delivered on its own."""
    run_non_transactional(cluster, db, rserver, slots, tmp_path, "ntx")


def test_non_transactional_message_latency_is_sane(pgfanout, cluster, db, rserver, slots, tmp_path):
    text = run_non_transactional(cluster, db, rserver, slots, tmp_path, "ntl")
    m = re.search(r"latency p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", text)
    assert m, text[-2000:]
    assert max(float(x) for x in m.groups()) < 60_000, m.group(0)
