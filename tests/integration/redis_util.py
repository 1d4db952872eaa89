"""Shared helpers for the Redis sink suites (test_redis.py, test_redis_faults.py).

The cache model: a few tables, each with a pgfanout rule (key templates, table keys,
generation) AND the same keys computed here in plain Python (hashlib, str.lower...), never
by asking pgfanout.  A MixedWorkload plans random transactions over those tables (inserts,
updates that change key columns, deletes, multi-row statements, rolled-back transactions,
rolled-back and released savepoints, application-named keys), and from the plan alone knows which keys
must be gone and which must survive once pgfanout has caught up:

    tables = mixed_tables("t1")                     # TableSpecs, table names start with t1_
    create_tables(conn, tables)
    wl = MixedWorkload(tables, seed=7)
    wl.populate(conn)                               # initial rows, before the slot exists
    create_slot(conn, slot, pub, tables)            # (plus a reference slot: CommitLog)
    fill(client, wl.fill_keys())                    # every key any row image could feed
    ... start pgfanout ...
    wl.run(conn)
    wait_confirmed(conn, slot, runner.current_lsn(conn))
    gone, kept = wl.expected()
    assert_keys(client, gone, kept)

Presets: pass key_func (e.g. django_key_func("shop", 3)) to fill_keys/expected to get the
keys in Django's format, and cachalot_alias to expected() to include django-cachalot's
table keys.  Keys of different tests never collide: every key starts with its table name,
and table names start with the test's prefix."""
import hashlib
import random
import re
import signal
import struct
import time

import yaml

import runner

FILL_VALUE = b"cached"


# --- keys computed independently of pgfanout ------------------------------------------------

def sha1_hex(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def md5_hex(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def identity_key(key):
    return key


def django_key_func(key_prefix, version):
    """Django's own cache key function (KEY_PREFIX:VERSION:key) for one CACHES entry."""
    from django.core.cache.backends.base import default_key_func

    def make(key):
        return default_key_func(key, key_prefix, version)
    return make


def cachalot_table_key(db_alias, table):
    """django-cachalot's table key for a table (before Django's key format is applied),
    computed by cachalot itself when it is importable."""
    try:
        from cachalot.utils import get_table_cache_key
    except ImportError:  # pragma: no cover - Debian ships python3-django-cachalot
        return sha1_hex(f"{db_alias}:{table}")
    return get_table_cache_key(db_alias, table)


class TableSpec:
    """One table of the cache model.

    name         table name in schema public
    ddl          statements creating it
    columns      column order used by inserts
    pk           primary key columns
    templates    pgfanout key templates of its rule
    key_funcs    the same keys in Python: row dict -> key, or None when the key does not
                 exist (a NULL column)
    table_keys   literal keys dropped on any change
    generation   None, "lsn" or "incr"
    new_row(rng, n) / change(rng, row, n)   row generators for the workload (n is a
                 counter unique over the whole workload, for unique slugs, emails, ids);
                 change is None for tables the workload must never touch
    initial      rows populate() inserts
    int_columns  the int4 columns (the others are text), for casts in VALUES lists
    """

    def __init__(self, name, ddl, columns, pk, templates, key_funcs, table_keys=(),
                 generation=None, new_row=None, change=None, initial=0, int_columns=()):
        self.name = name
        self.ddl = list(ddl)
        self.columns = list(columns)
        self.pk = tuple(pk)
        self.templates = list(templates)
        self.key_funcs = list(key_funcs)
        self.table_keys = list(table_keys)
        self.generation = generation
        self.new_row = new_row
        self.change = change
        self.initial = initial
        self.types = {c: ("int4" if c in int_columns else "text") for c in self.columns}

    @property
    def qualified(self):
        return f"public.{self.name}"

    @property
    def generation_key(self):
        """pgfanout's documented default generation key."""
        return f"pgfanout:gen:public.{self.name}"

    def rule(self, publish=None):
        """The redis.rules entry for this table, as a dict for the YAML config."""
        r = {"table": self.name}
        if self.templates:
            r["keys"] = list(self.templates)
        if self.table_keys:
            r["table_keys"] = list(self.table_keys)
        if self.generation:
            r["generation"] = self.generation
        if publish:
            r["publish"] = publish
        return r

    def row_keys(self, row):
        """The keys one row image feeds (NULL columns: no key)."""
        out = set()
        for f in self.key_funcs:
            k = f(row)
            if k is not None:
                out.add(k)
        return out

    def pk_of(self, row):
        return tuple(row[c] for c in self.pk)


WORDS = ["alpha", "Bravo", "charlie", "DELTA", "echo", "Foxtrot", "golf", "hotel", "India",
         "juliet", "kilo", "Lima"]


def _maybe(v, f):
    return None if v is None else f(v)


def mixed_tables(prefix):
    """The cache model of the mixed workload; table names are <prefix>_<name>.

    products    REPLICA IDENTITY FULL; slug changes (some with spaces or non-ASCII),
                |sha1|upper, md5 of a TOASTed description; generation lsn
    users       REPLICA IDENTITY FULL; nullable (sometimes empty) email with |lower and
                |lower|sha1, |upper, literal braces; generation incr
    items       REPLICA IDENTITY DEFAULT, composite primary key that updates change
    categories  never touched: all its keys must survive
    audit       changed, but no rule: nothing of it is deleted (except cachalot's key)"""
    p = f"{prefix}_products"
    u = f"{prefix}_users"
    i = f"{prefix}_items"
    c = f"{prefix}_categories"
    a = f"{prefix}_audit"

    def product_row(rng, n):
        r = rng.random()
        descr = None if r < 0.1 else (rng.choice(WORDS) + " crème brûlée" if r < 0.75 else _long_text(rng))
        return {"id": n, "slug": _slug(rng, n),
                "name": f"Product {rng.choice(WORDS)} {n}", "price": rng.randint(1, 10_000),
                "descr": descr}

    def product_change(rng, row, n):
        new = dict(row)
        r = rng.random()
        if r < 0.35:
            new["slug"] = _slug(rng, n)
        if 0.2 < r < 0.7:
            new["price"] = row["price"] + rng.randint(1, 50)
        if r >= 0.7:
            new["name"] = f"Renamed {rng.choice(WORDS)} {n}"
        if rng.random() < 0.1:
            new["descr"] = _long_text(rng) if rng.random() < 0.5 else f"short {n}"
        return new

    def user_row(rng, n):
        email = None if rng.random() < 0.1 else _email(rng, n)
        return {"id": n, "email": email, "name": f"{rng.choice(WORDS)} user{n}"}

    def user_change(rng, row, n):
        new = dict(row)
        r = rng.random()
        if r < 0.15 and row["email"]:
            new["email"] = row["email"].swapcase()  # same lower(): same key, still changed
        elif r < 0.45:
            r2 = rng.random()
            new["email"] = None if r2 < 0.15 else ("" if r2 < 0.2 else _email(rng, n))
        else:
            new["name"] = f"{rng.choice(WORDS)} renamed{n}"
        return new

    def item_row(rng, n):
        return {"tenant": rng.randint(1, 4), "id": n, "label": f"label {n}"}

    def item_change(rng, row, n):
        new = dict(row)
        if rng.random() < 0.4:
            new["id"] = n                      # primary key change: old key sent as 'K'
        else:
            new["label"] = f"relabel {rng.choice(WORDS)} {n}"
        return new

    def audit_row(rng, n):
        return {"id": n, "note": f"note {n}"}

    def audit_change(rng, row, n):
        return dict(row, note=f"note changed {n}")

    return [
        TableSpec(
            p,
            [f"CREATE TABLE {p} (id int4 PRIMARY KEY, slug text NOT NULL UNIQUE, name text,"
             f" price int4, descr text)",
             f"ALTER TABLE {p} ALTER COLUMN descr SET STORAGE EXTERNAL",
             f"ALTER TABLE {p} REPLICA IDENTITY FULL"],
            ["id", "slug", "name", "price", "descr"], ["id"],
            [f"{p}:{{id}}", f"{p}:slug:{{slug}}", f"{p}:descr:{{descr|md5}}",
             f"{p}:SH:{{slug|sha1|upper}}"],
            [lambda r: f"{p}:{r['id']}",
             lambda r: f"{p}:slug:{r['slug']}",
             lambda r: f"{p}:SH:{sha1_hex(r['slug']).upper()}",
             lambda r: _maybe(r["descr"], lambda d: f"{p}:descr:{md5_hex(d)}")],
            table_keys=[f"{p}:list"], generation="lsn",
            new_row=product_row, change=product_change, initial=150, int_columns=["id", "price"]),
        TableSpec(
            u,
            [f"CREATE TABLE {u} (id int4 PRIMARY KEY, email text, name text)",
             f"ALTER TABLE {u} REPLICA IDENTITY FULL"],
            ["id", "email", "name"], ["id"],
            [f"{u}:{{id}}", f"{u}:email:{{email|lower}}", f"{u}:eh:{{email|lower|sha1}}",
             f"{u}:NAME:{{name|upper}}", f"{u}:{{{{v2}}}}:{{id}}"],
            [lambda r: f"{u}:{r['id']}",
             lambda r: _maybe(r["email"], lambda e: f"{u}:email:{e.lower()}"),
             lambda r: _maybe(r["email"], lambda e: f"{u}:eh:{sha1_hex(e.lower())}"),
             lambda r: _maybe(r["name"], lambda nm: f"{u}:NAME:{nm.upper()}"),
             lambda r: u + ":{v2}:" + str(r["id"])],
            generation="incr", new_row=user_row, change=user_change, initial=150, int_columns=["id"]),
        TableSpec(
            i,
            [f"CREATE TABLE {i} (tenant int4, id int4, label text, PRIMARY KEY (tenant, id))"],
            ["tenant", "id", "label"], ["tenant", "id"],
            [f"{i}:{{tenant}}:{{id}}"],
            [lambda r: f"{i}:{r['tenant']}:{r['id']}"],
            table_keys=[f"{i}:all", f"{i}:count"],
            new_row=item_row, change=item_change, initial=150, int_columns=["tenant", "id"]),
        TableSpec(
            c,
            [f"CREATE TABLE {c} (id int4 PRIMARY KEY, name text)"],
            ["id", "name"], ["id"],
            [f"{c}:{{id}}"], [lambda r: f"{c}:{r['id']}"],
            table_keys=[f"{c}:list"],
            new_row=lambda rng, n: {"id": n, "name": f"cat {n}"}, change=None, initial=20,
            int_columns=["id"]),
        TableSpec(
            a,
            [f"CREATE TABLE {a} (id int4 PRIMARY KEY, note text)"],
            ["id", "note"], ["id"], [], [],
            new_row=audit_row, change=audit_change, initial=10, int_columns=["id"]),
    ]


def _slug(rng, n):
    """Unique by n; sometimes with a space or non-ASCII text (keys are bytes to Redis)."""
    return f"slug-{n}-{rng.choice(WORDS).lower()}" + rng.choice(["", "", "", " x", "-café", "-ü"])


def _email(rng, n):
    local = "".join(ch.upper() if rng.random() < 0.3 else ch for ch in f"user{n}.{rng.choice(WORDS)}")
    return f"{local}@{rng.choice(['Example.COM', 'mail.org', 'EXAMPLE.net'])}"


def _long_text(rng):
    """About 3 kB of incompressible-ish text: stored out of line (STORAGE EXTERNAL)."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3000))


def create_tables(conn, tables):
    for t in tables:
        for stmt in t.ddl:
            conn.execute(stmt)


def rules_of(tables, publish=None):
    """redis.rules for the tables that have something to do (keys, table keys, generation)."""
    return [t.rule(publish) for t in tables if t.templates or t.table_keys or t.generation]


# --- configuration, slots, waiting --------------------------------------------------------------

def write_config(path, redis_section):
    """Writes {'redis': redis_section} as YAML to path; returns path (as str)."""
    with open(path, "w") as f:
        yaml.safe_dump({"redis": redis_section}, f, sort_keys=False)
    return str(path)


def worker_args(cluster, slot, pub, config_path, redis_addr, *extra):
    """pgfanout's arguments for --sink redis on an existing slot and publication; with
    redis_addr None there is no --redis (the config's host and port apply)."""
    addr = ["--redis", redis_addr] if redis_addr else []
    return ["--dsn", cluster.dsn(), "--slot", slot, "--publication", pub, "--sink", "redis",
            "--config", str(config_path), *addr, "--status-interval", "0.2", *extra]


def create_slot(conn, slot, pub=None, tables=None, ref_slot=None):
    """Creates publication pub FOR TABLE tables (or FOR ALL TABLES when tables is None;
    no publication when pub is None), the pgoutput slot, and optionally right after it a
    second pgoutput slot ref_slot for CommitLog (create both before the workload).  Returns
    the slot's start LSN as an int."""
    if pub:
        if tables is None:
            conn.execute(f"CREATE PUBLICATION {pub} FOR ALL TABLES")
        else:
            names = ", ".join(t if isinstance(t, str) else t.qualified for t in tables)
            conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {names}")
    lsn = runner.scalar(conn, "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                        (slot,))
    if ref_slot:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (ref_slot,))
    return runner.lsn_to_int(lsn)


def drop_slots(conn, *slots):
    """Drops the slots that exist, waiting for their walsenders to let go."""
    for s in slots:
        if runner.slot_info(conn, s) is not None:
            runner.wait_slot_inactive(conn, s, timeout=30)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (s,))


def confirmed_lsn(conn, slot):
    return runner.lsn_to_int(runner.slot_info(conn, slot)["confirmed_flush_lsn"])


def wait_confirmed(conn, slot, lsn, timeout=60, worker=None):
    """Waits until the slot's confirmed_flush_lsn reaches lsn (int or 'X/X'): pgfanout has
    been acknowledged by Redis for everything before it.  Fails early when worker (a
    runner.Worker) exits."""
    target = runner.lsn_to_int(lsn) if isinstance(lsn, str) else lsn

    def reached():
        if worker is not None and not worker.running():
            raise AssertionError(f"pgfanout exited ({worker.proc.returncode}) while we waited for"
                                 f" {runner.int_to_lsn(target)}:\n{worker.stderr_text()[-3000:]}")
        return confirmed_lsn(conn, slot) >= target
    if not runner.wait_for(reached, timeout):
        info = runner.slot_info(conn, slot)
        tail = worker.stderr_text()[-3000:] if worker is not None else ""
        raise AssertionError(f"slot {slot} did not confirm {runner.int_to_lsn(target)} within"
                             f" {timeout}s: {info}\n{tail}")


def start_worker(args, stderr_path):
    """Starts pgfanout with args (logging to stderr_path) and returns the runner.Worker once
    it streams with Redis connected; the caller stops it.  Killed if it does not start."""
    w = runner.Worker(args, stderr_path=str(stderr_path))
    w.__enter__()
    try:
        wait_started(w)
    except BaseException:
        w.__exit__(None, None, None)
        raise
    return w


def stop_clean(w):
    """SIGTERM; asserts a clean exit (an ASan build exits non-zero on a leak or an error) and
    returns pgfanout's log."""
    rc = w.terminate(signal.SIGTERM, timeout=30)
    text = w.stderr_text()
    assert rc == 0 and "Sanitizer" not in text, f"pgfanout exited with {rc}:\n{text[-3000:]}"
    return text


def wait_started(worker, timeout=30):
    """Waits until pgfanout logged that it streams and that Redis is connected."""
    ok = runner.wait_for(lambda: not worker.running() or (
        "streaming slot" in worker.stderr_text() and ": connected" in worker.stderr_text()), timeout)
    if not ok or not worker.running():
        raise AssertionError("pgfanout did not start streaming:\n" + worker.stderr_text()[-3000:])


class CommitLog:
    """Commit LSNs read from a reference pgoutput slot (pg_logical_slot_peek_binary_changes,
    parsed here, not by pgfanout): {32-bit xid: commit LSN}.  Begin messages carry the
    commit record's LSN (final_lsn) and the xid."""

    def __init__(self, conn, ref_slot, pub):
        self.by_xid = {}
        with conn.cursor() as cur:
            cur.execute("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
                        " 'proto_version', '1', 'publication_names', %s)", (ref_slot, pub))
            for (data,) in cur:
                data = bytes(data)
                if data[:1] == b"B":
                    final_lsn, _ts, xid = struct.unpack(">QqI", data[1:21])
                    self.by_xid[xid] = final_lsn

    def commit_lsn(self, xid):
        """The commit LSN of transaction xid (a txid_current() value or a 32-bit xid)."""
        return self.by_xid[xid & 0xFFFFFFFF]


def parse_summary(stderr):
    """The numbers of the sink's last line at exit, 'redis: N transactions, K keys in C
    commands; ...', as a dict (txns, keys, commands), or None when it is missing."""
    found = re.findall(r"redis: (\d+) transactions, (\d+) keys in (\d+) commands", stderr)
    if not found:
        return None
    t, k, c = (int(x) for x in found[-1])
    return {"txns": t, "keys": k, "commands": c}


# --- filling and checking the cache --------------------------------------------------------

def fill(client, keys, value=FILL_VALUE, chunk=5000):
    """SETs every key to value (pipelined MSETs)."""
    keys = list(keys)
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(keys), chunk):
        pipe.mset({k: value for k in keys[i:i + chunk]})
    pipe.execute()


def existing(client, keys, chunk=2000):
    """The subset of keys that exist in the client's database."""
    keys = list(keys)
    present = set()
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        pipe = client.pipeline(transaction=False)
        for k in part:
            pipe.exists(k)
        for k, n in zip(part, pipe.execute()):
            if n:
                present.add(k)
    return present


def assert_keys(client, gone, kept, what=""):
    """Every key of gone is absent and every key of kept is present; the message shows how
    many were wrong and a few examples of each."""
    gone, kept = set(gone), set(kept)
    overlap = gone & kept
    assert not overlap, f"test bug: keys both expected gone and kept: {sorted(overlap)[:5]}"
    still_there = existing(client, gone)
    present = existing(client, kept)
    lost = kept - present
    problems = []
    if still_there:
        problems.append(f"{len(still_there)} of {len(gone)} keys that must be invalidated are"
                        f" still cached, e.g. {sorted(still_there)[:8]}")
    if lost:
        problems.append(f"{len(lost)} of {len(kept)} keys that must survive were deleted, e.g."
                        f" {sorted(lost)[:8]}")
    assert not problems, (what + ": " if what else "") + "; ".join(problems)


# --- the mixed workload ----------------------------------------------------------------------

class Step:
    """One statement of a planned transaction.

    kind     "sql" (sql, params), "savepoint", "rollback_to", "release"
    images   [(TableSpec, row dict)]: the old and/or new row images the statement changes
    tables   tables the statement changes
    app_keys keys named by pg_logical_emit_message with the invalidation prefix
    other_keys keys named with another prefix (must be ignored)"""

    def __init__(self, kind, sql=None, params=None, images=(), tables=(), app_keys=(),
                 other_keys=()):
        self.kind = kind
        self.sql = sql
        self.params = params
        self.images = list(images)
        self.tables = set(tables)
        self.app_keys = list(app_keys)
        self.other_keys = list(other_keys)
        self.discarded = False  # inside a rolled-back savepoint


class PlannedTxn:
    def __init__(self, steps, rollback):
        self.steps = steps
        self.rollback = rollback
        self.xid = None  # txid_current(), set by run() for committed transactions

    def effective_steps(self):
        """The steps whose effects reach the slot: none for a rolled-back transaction."""
        if self.rollback:
            return []
        return [s for s in self.steps if s.kind == "sql" and not s.discarded]

    def touches(self, table):
        return any(table.name in {t.name for t in s.tables} for s in self.effective_steps())


class MixedWorkload:
    """A random, reproducible workload over TableSpecs (see mixed_tables), planned up front
    and simulated in Python, so that the expected cache state follows from the plan alone.

    txns               number of transactions
    rollback_ratio     share of transactions that end in ROLLBACK
    savepoint_ratio    share of committed ones with a savepoint in the middle (rolled back
                       or released)
    message_prefix     pgfanout's redis.message_prefix (application keys)"""

    def __init__(self, tables, seed, txns=300, rollback_ratio=0.12, savepoint_ratio=0.2,
                 message_prefix="pgfanout.invalidate"):
        self.tables = tables
        self.by_name = {t.name: t for t in tables}
        self.rng = random.Random(seed)
        self.seed = seed
        self.message_prefix = message_prefix
        self.counter = 1000
        self.initial = {}
        self.state = {}
        for t in tables:
            rows = [t.new_row(self.rng, self._next()) for _ in range(t.initial)]
            self.initial[t.name] = rows
            self.state[t.name] = {t.pk_of(r): r for r in rows}
        self.app_prefix = tables[0].name + ":app"
        self.txns = [self._plan_txn(rollback_ratio, savepoint_ratio) for _ in range(txns)]

    def _next(self):
        self.counter += 1
        return self.counter

    # planning

    def _plan_txn(self, rollback_ratio, savepoint_ratio):
        rng = self.rng
        rollback = rng.random() < rollback_ratio
        state = {n: dict(rows) for n, rows in self.state.items()}
        steps = []
        n_ops = rng.randint(1, 6)
        sp_at = rng.randint(0, n_ops) if (not rollback and rng.random() < savepoint_ratio) else None
        sp_len = rng.randint(1, 3)
        sp_rollback = rng.random() < 0.6  # else RELEASE SAVEPOINT: its changes count
        saved = None
        for k in range(n_ops + (sp_len if sp_at is not None else 0)):
            if sp_at is not None and k == sp_at:
                steps.append(Step("savepoint"))
                saved = {n: dict(rows) for n, rows in state.items()}
            in_sp = sp_at is not None and sp_at <= k < sp_at + sp_len
            step = self._plan_step(state)
            step.discarded = in_sp and sp_rollback
            steps.append(step)
            if sp_at is not None and k == sp_at + sp_len - 1:
                if sp_rollback:
                    steps.append(Step("rollback_to"))
                    state = saved
                else:
                    steps.append(Step("release"))
        if not rollback:
            self.state = state
        return PlannedTxn(steps, rollback)

    def _plan_step(self, state):
        rng = self.rng
        r = rng.random()
        if r < 0.12:
            keys = [f"{self.app_prefix}:{self._next()}" for _ in range(rng.randint(1, 3))]
            # Whitespace of every kind separates keys.
            text = rng.choice([" ", "\t", "\n ", "  "]).join(keys)
            return Step("sql", "SELECT pg_logical_emit_message(true, %s, %s)",
                        (self.message_prefix, text), app_keys=keys)
        if r < 0.15:
            # Another prefix (and the default one, when the config names its own): ignored.
            others = [self.message_prefix + ".other", "pgfanout"]
            if self.message_prefix != "pgfanout.invalidate":
                others.append("pgfanout.invalidate")
            key = f"{self.app_prefix}:other:{self._next()}"
            return Step("sql", "SELECT pg_logical_emit_message(true, %s, %s)",
                        (rng.choice(others), key), other_keys=[key])
        mutable = [t for t in self.tables if t.change is not None]
        t = rng.choice(mutable)
        rows = state[t.name]
        op = rng.random()
        if op < 0.25 or len(rows) < 3:
            row = t.new_row(rng, self._next())
            rows[t.pk_of(row)] = row
            cols = ", ".join(t.columns)
            ph = ", ".join(["%s"] * len(t.columns))
            return Step("sql", f"INSERT INTO {t.name} ({cols}) VALUES ({ph})",
                        tuple(row[c] for c in t.columns), images=[(t, row)], tables=[t])
        if op < 0.8:
            targets = rng.sample(sorted(rows), rng.choice([1, 1, 1, 2, 3]))
            images = []
            if len(targets) > 1:
                # A multi-row statement: one UPDATE ... FROM (VALUES ...) changing several rows.
                news = []
                for pk in targets:
                    old = rows.pop(pk)
                    new = t.change(rng, old, self._next())
                    news.append((old, new))
                for old, new in news:
                    if t.pk_of(new) in rows:  # a primary key collision: keep the old key
                        new = dict(new, **{c: old[c] for c in t.pk})
                    rows[t.pk_of(new)] = new
                    images += [(t, old), (t, new)]
                vals = []
                params = []
                for old, new in news:
                    vals.append("(" + ", ".join(["%s"] * (len(t.pk) + len(t.columns))) + ")")
                    params += [old[c] for c in t.pk] + [new[c] for c in t.columns]
                src_cols = [f"o_{c}" for c in t.pk] + [f"n_{c}" for c in t.columns]
                types = t.types
                sets = ", ".join(f"{c} = v.n_{c}::{types[c]}" for c in t.columns)
                where = " AND ".join(f"{t.name}.{c} = v.o_{c}::{types[c]}" for c in t.pk)
                sql = (f"UPDATE {t.name} SET {sets} FROM (VALUES {', '.join(vals)})"
                       f" AS v({', '.join(src_cols)}) WHERE {where}")
                return Step("sql", sql, tuple(params), images=images, tables=[t])
            pk = targets[0]
            old = rows.pop(pk)
            new = t.change(rng, old, self._next())
            rows[t.pk_of(new)] = new
            sets = ", ".join(f"{c} = %s" for c in t.columns)
            where = " AND ".join(f"{c} = %s" for c in t.pk)
            return Step("sql", f"UPDATE {t.name} SET {sets} WHERE {where}",
                        tuple(new[c] for c in t.columns) + tuple(old[c] for c in t.pk),
                        images=[(t, old), (t, new)], tables=[t])
        pk = rng.choice(sorted(rows))
        old = rows.pop(pk)
        where = " AND ".join(f"{c} = %s" for c in t.pk)
        return Step("sql", f"DELETE FROM {t.name} WHERE {where}", tuple(old[c] for c in t.pk),
                    images=[(t, old)], tables=[t])

    # running

    def populate(self, conn):
        """Inserts the initial rows (do it before the slot exists: they are the cache's
        starting point, not changes)."""
        with conn.transaction():
            with conn.cursor() as cur:
                for t in self.tables:
                    rows = self.initial[t.name]
                    if not rows:
                        continue
                    cols = ", ".join(t.columns)
                    with cur.copy(f"COPY {t.name} ({cols}) FROM STDIN") as cp:
                        for r in rows:
                            cp.write_row([r[c] for c in t.columns])

    def run(self, conn, pause=0.0):
        """Runs every planned transaction on conn (autocommit connection), recording the
        xid of each committed one."""
        for txn in self.txns:
            conn.execute("BEGIN")
            try:
                if not txn.rollback:
                    txn.xid = runner.scalar(conn, "SELECT txid_current()")
                for s in txn.steps:
                    if s.kind == "savepoint":
                        conn.execute("SAVEPOINT sp")
                    elif s.kind == "rollback_to":
                        conn.execute("ROLLBACK TO SAVEPOINT sp")
                    elif s.kind == "release":
                        conn.execute("RELEASE SAVEPOINT sp")
                    else:
                        conn.execute(s.sql, s.params)
                conn.execute("ROLLBACK" if txn.rollback else "COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if pause:
                time.sleep(pause)

    # expectations

    def _all_images(self):
        for t in self.tables:
            for r in self.initial[t.name]:
                yield t, r
        for txn in self.txns:
            for s in txn.steps:
                yield from s.images

    def fill_keys(self, key_func=identity_key, cachalot_alias=None):
        """Every key the cache could hold for this workload: the keys of every row image
        (initial, committed, rolled back), every table key, every application key (of
        either prefix), cachalot's table keys; in key_func's format."""
        keys = set()
        for t, row in self._all_images():
            keys |= t.row_keys(row)
        for t in self.tables:
            keys |= set(t.table_keys)
        for txn in self.txns:
            for s in txn.steps:
                keys |= set(s.app_keys) | set(s.other_keys)
        out = {key_func(k) for k in keys}
        if cachalot_alias:
            out |= {key_func(cachalot_table_key(cachalot_alias, t.name)) for t in self.tables}
        return out

    def touched_tables(self):
        return {t.name for t in self.tables if any(txn.touches(t) for txn in self.txns)}

    def expected(self, key_func=identity_key, cachalot_alias=None):
        """(gone, kept): the keys that must be invalidated once every transaction has been
        processed (the keys of each committed old and new row image, the table keys of
        changed tables, the application keys of committed transactions, cachalot's keys of
        changed tables) and the rest of fill_keys(), which must survive."""
        gone = set()
        touched = set()
        for txn in self.txns:
            for s in txn.effective_steps():
                for t, row in s.images:
                    gone |= t.row_keys(row)
                for t in s.tables:
                    touched.add(t.name)
                    gone |= set(t.table_keys)
                gone |= set(s.app_keys)
        gone = {key_func(k) for k in gone}
        if cachalot_alias:
            gone |= {key_func(cachalot_table_key(cachalot_alias, n)) for n in touched}
        kept = self.fill_keys(key_func, cachalot_alias) - gone
        return gone, kept

    def current_rows(self, table):
        """The rows table holds after every planned transaction (as the simulation says)."""
        return list(self.state[table.name].values())

    def committed_touching(self, table):
        """The committed transactions (in commit order) that changed table."""
        return [txn for txn in self.txns if txn.touches(table)]

    def stats(self):
        """A one-line description for logs."""
        committed = [t for t in self.txns if not t.rollback]
        images = sum(len(s.images) for t in committed for s in t.effective_steps())
        def with_step(kind):
            return sum(1 for t in committed if any(s.kind == kind for s in t.steps))
        return (f"{len(self.txns)} transactions ({len(self.txns) - len(committed)} rolled back,"
                f" {with_step('rollback_to')} with a rolled-back savepoint, {with_step('release')}"
                f" with a released one), {images} committed row images")
