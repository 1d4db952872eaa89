"""pgfanout's Django package (contrib/django, issue 13 part 2) in a real Django 5.2 project
(contrib/django/tests/project) against a real PostgreSQL 15, a real redis-server and pgfanout
with the Django preset.  Run by the test venv's python (scripts/fetch-pyenv.sh), which has
Django, redis-py and psycopg from PyPI.

The stale-fill race (a) is staged with threading.Event, not timing: the reader's default
callable reads the old row, then blocks; the test commits an update and waits until pgfanout's
DEL was answered (the slot's confirmed_flush_lsn passed the update, and Redis counted the DEL);
then the reader goes on and stores.  The same staging runs against Django's stock
RedisCache.get_or_set (stale: the race is real here), against LeaseRedisCache (refused), and
against pgfanout with redis.leases: false (the lease-aware fill is accepted and stale: it is
pgfanout's deletion of the lease that closes the race).

Expected key names never come from pgfanout or from the package: Django's own make_key, and
the lease rules written out here."""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile

import pytest

import runner
from redis_util import create_slot, drop_slots, start_worker, stop_clean, wait_confirmed, worker_args, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.environ.get("PGFANOUT_SRC", os.path.join(HERE, "..", "..")))
PKG = os.path.join(SRC, "contrib", "django")
PROJECT = os.path.join(PKG, "tests", "project")
LUA_DIR = os.path.join(SRC, "contrib", "redis")
KEY_PREFIX = "shop"        # the project's settings.KEY_PREFIX and VERSION
VERSION = 1
TABLE = "shop_product"
RULE = {"table": TABLE, "keys": ["product:{id}", "product:{id}:name"]}


# --- servers and the Django project ---------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_srv():
    """One redis-server for the module: Django's CACHES point at it for the whole process."""
    from redisserver import RedisServer
    server = RedisServer().start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.cleanup()


def ensure_package():
    """Installs contrib/django into this python (pip install -e) when it is not importable, and
    fails unless the package imported is the tree's own."""
    if importlib.util.find_spec("pgfanout_django") is None:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", PKG],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert r.returncode == 0, f"pip install -e {PKG} failed:\n{r.stdout}"
        # An editable install takes effect at interpreter start; this process imports the tree.
        sys.path.insert(0, os.path.join(PKG, "src"))
        importlib.invalidate_caches()
    import pgfanout_django
    where = os.path.realpath(pgfanout_django.__file__)
    assert where.startswith(os.path.realpath(os.path.join(PKG, "src")) + os.sep), \
        f"pgfanout_django imported from {where}, not from this tree's {PKG}/src"


@pytest.fixture(scope="module")
def project(cluster, redis_srv):
    """The test project, set up once: settings from the servers the harness started, then
    migrate (creates shop_product on the cluster)."""
    ensure_package()
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "shopsite.settings",
        "SHOPSITE_PG_HOST": "127.0.0.1",
        "SHOPSITE_PG_PORT": str(cluster.port),
        "SHOPSITE_PG_USER": cluster.superuser,
        "SHOPSITE_PG_NAME": "postgres",
        "SHOPSITE_REDIS_URL": f"redis://127.0.0.1:{redis_srv.port}/0",
    })
    sys.path.insert(0, PROJECT)
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    yield
    from django.db import connections
    connections.close_all()


@pytest.fixture
def r(project, redis_srv):
    """A plain redis-py client, on an emptied database; the counters of this thread's caches
    are reset."""
    from django.conf import settings
    from django.core.cache import caches
    client = redis_srv.client()
    client.flushdb()
    for alias in settings.CACHES:
        if hasattr(caches[alias], "stats"):
            caches[alias].stats.clear()
    return client


@pytest.fixture
def pgf(project, cluster, redis_srv, tmp_path):
    """pgf(name, **redis_extra) starts pgfanout on a new slot `name` (see start_pgfanout); at
    teardown any worker still running is stopped by its pid, then the slots are dropped."""
    workers, names = [], []

    def start(name, **redis_extra):
        names.append(name)
        w = start_pgfanout(cluster, redis_srv, tmp_path, name, **redis_extra)
        workers.append(w)
        return w
    yield start
    for w in workers:
        w.__exit__(None, None, None)
    conn = runner.connect(cluster.dsn())
    try:
        drop_slots(conn, *names)
    finally:
        conn.close()


def make_key(key):
    """Django's own key function with the project's KEY_PREFIX and VERSION."""
    from django.core.cache.backends.base import default_key_func
    return default_key_func(key, KEY_PREFIX, VERSION)


def lease_of(full_key, layout="suffix"):
    """The lease name as the README's Leases section states it (not the package's code)."""
    if layout == "suffix":
        return full_key + ":lease"
    m = re.search(r"\{([^}]*)\}", full_key)
    if m and m.group(1):
        return full_key + ":lease"
    assert "}" not in full_key
    return "{" + full_key + "}:lease"


def new_product(pk, name="old", price="10.00"):
    from shop.models import Product
    Product.objects.filter(pk=pk).delete()
    return Product.objects.create(pk=pk, name=name, price=price)


def start_pgfanout(cluster, redis_srv, tmp_path, name, **redis_extra):
    """pgfanout on a new slot and publication for shop_product, with the Django preset and the
    rule for the project's keys; returns the started runner.Worker (stop it with stop())."""
    conn = runner.connect(cluster.dsn())
    try:
        create_slot(conn, name, f"{name}_pub", [f"public.{TABLE}"])
    finally:
        conn.close()
    section = {"django": {"key_prefix": KEY_PREFIX, "version": VERSION}, "rules": [RULE], **redis_extra}
    cfg = write_config(tmp_path / f"{name}.yaml", section)
    return start_worker(worker_args(cluster, name, f"{name}_pub", cfg, redis_srv.addr), tmp_path / f"{name}.log")


def stop(w):
    """SIGTERM; asserts a clean exit and returns the exit summary's keys and lease keys."""
    try:
        text = stop_clean(w)
        m = re.findall(r"redis: \d+ transactions, (\d+) keys in \d+ commands; .*; (\d+) lease keys deleted", text)
        assert m, text[-2000:]
        return {"keys": int(m[-1][0]), "leases": int(m[-1][1])}
    finally:
        w.__exit__(None, None, None)


def del_calls(client):
    return client.info("commandstats").get("cmdstat_del", {}).get("calls", 0)


def write_and_wait_invalidated(cluster, client, slot, w, pk, **changes):
    """Commits an update of product pk through the ORM, then waits until pgfanout's DEL for it
    was answered by Redis."""
    from shop.models import Product
    before = del_calls(client)
    Product.objects.filter(pk=pk).update(**changes)
    conn = runner.connect(cluster.dsn())
    try:
        wait_confirmed(conn, slot, runner.current_lsn(conn), worker=w)
    finally:
        conn.close()
    assert del_calls(client) > before, "pgfanout sent no DEL for the update"


class StagedReader:
    """A thread that runs caches[alias].get_or_set(product:pk) whose default callable reads the
    row through the ORM, signals `read`, and blocks until `go`."""

    def __init__(self, alias, pk):
        self.alias = alias
        self.pk = pk
        self.read = threading.Event()
        self.go = threading.Event()
        self.value = self.error = self.cache = None
        self.thread = threading.Thread(target=self._run)

    def _load(self):
        from shop.services import load_product
        v = load_product(self.pk)
        self.read.set()
        assert self.go.wait(60), "never released"
        return v

    def _run(self):
        from django.core.cache import caches
        from django.db import connection
        try:
            self.cache = caches[self.alias]          # Django's caches are per thread
            self.value = self.cache.get_or_set(f"product:{self.pk}", self._load)
        except BaseException as e:  # reported by finish()
            self.error = e
        finally:
            connection.close()

    def start(self):
        self.thread.start()
        assert self.read.wait(60), f"the reader did not read: {self.error!r}"

    def finish(self):
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive() and self.error is None, repr(self.error)
        return self.value


# --- the package itself --------------------------------------------------------------------------

def test_lua_scripts_are_byte_identical_to_contrib_redis(project):
    """The package ships the very fill-protocol scripts that contrib/redis documents, byte for
    byte (raise.lua there is pgfanout's own, not a client's)."""
    shipped = os.path.join(PKG, "src", "pgfanout_django", "lua")
    ours = sorted(f for f in os.listdir(LUA_DIR) if f.startswith("lease_") and f.endswith(".lua"))
    assert ours == ["lease_fill.lua", "lease_get.lua", "lease_release.lua"]
    assert sorted(f for f in os.listdir(shipped) if f.endswith(".lua")) == ours
    for f in ours:
        with open(os.path.join(LUA_DIR, f), "rb") as a, open(os.path.join(shipped, f), "rb") as b:
            assert a.read() == b.read(), f"{shipped}/{f} differs from contrib/redis/{f}"


def test_pip_builds_and_installs_the_package(project, tmp_path):
    """pip builds a wheel of contrib/django that carries the Lua scripts, and a plain (not
    editable) install of it imports and finds them."""
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    copy = tmp_path / "pkg"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "dist"), str(copy)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    wheels = os.listdir(tmp_path / "dist")
    assert len(wheels) == 1 and wheels[0].startswith("pgfanout_django-"), wheels
    with zipfile.ZipFile(tmp_path / "dist" / wheels[0]) as z:
        names = set(z.namelist())
        for f in ("lease_get.lua", "lease_fill.lua", "lease_release.lua"):
            with open(os.path.join(LUA_DIR, f), "rb") as src:
                assert z.read(f"pgfanout_django/lua/{f}") == src.read()
    assert {"pgfanout_django/cache.py", "pgfanout_django/ryw.py"} <= names
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        str(tmp_path / "dist" / wheels[0])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert r.returncode == 0, r.stdout
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import pgfanout_django, pgfanout_django.leases as l;"
            " assert pgfanout_django.__file__.startswith(sys.argv[1]), pgfanout_django.__file__;"
            " print(len(l.lua_source('lease_fill')))")
    r = subprocess.run([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    assert r.returncode == 0 and int(r.stdout) == os.path.getsize(os.path.join(LUA_DIR, "lease_fill.lua")), r.stdout


def test_settings_and_lease_names(project):
    """OPTIONS of our own are taken out before redis-py's pool sees them (the cache works), bad
    ones are refused, and lease names follow pgfanout's two layouts: with the suffix layout the
    lease of make_key(k) is make_key(k + ':lease'), as the README promises."""
    from django.core.cache import caches
    from pgfanout_django.cache import LeaseRedisCache
    default, cluster = caches["default"], caches["cluster"]
    assert default.get("nothing-here") is None       # the pool accepted the options left
    assert (default.lease_ttl_ms, default.lease_wait_ms, default.lease_poll_ms) == (3000, 100, 10)
    assert default.ryw_key == "pgfanout:ryw:pgfanout"
    k = make_key("product:5")
    assert default.lease_key(k) == make_key("product:5:lease") == lease_of(k)
    assert cluster.lease_key(k) == "{shop:1:product:5}:lease" == lease_of(k, "cluster")
    tagged = make_key("{user:5}:profile")
    assert cluster.lease_key(tagged) == tagged + ":lease" == lease_of(tagged, "cluster")
    assert cluster.lease_key("a}b") is None and cluster.lease_key("x{}y") is None
    for bad in ({"LEASE_LAYOUT": "ring"}, {"LEASE_SUFFIX": ""}, {"LEASE_TTL_MS": 0}, {"LEASE_POLL_MS": "10"}):
        with pytest.raises(ValueError):
            LeaseRedisCache("redis://127.0.0.1:1/0", {"OPTIONS": dict(bad)})
    params = {"OPTIONS": {"LEASE_WAIT_MS": 7}}
    LeaseRedisCache("redis://127.0.0.1:1/0", params)
    assert params == {"OPTIONS": {"LEASE_WAIT_MS": 7}}, "the settings dict was changed"


# --- race (a), staged ------------------------------------------------------------------------------

def test_stale_fill_baseline_stock_get_or_set(project, cluster, r, pgf):
    """Django's stock RedisCache.get_or_set, with pgfanout deleting key and lease: the reader's
    add() lands after the delete and the old row stays cached.  Expected: it proves the race
    is real here, so the lease tests below can fail."""
    from django.core.cache import caches
    new_product(11)
    w = pgf("dj_base")
    reader = StagedReader("stock", 11)
    reader.start()
    write_and_wait_invalidated(cluster, r, "dj_base", w, 11, name="new")
    assert reader.finish()["name"] == "old"
    cached = caches["stock"].get("product:11")
    print(f"\nstock get_or_set after the race: cached {cached}, database name 'new'")
    assert cached is not None and cached["name"] == "old", \
        f"the race was not reproduced ({cached}): the lease test could not fail"
    assert stop(w)["leases"] == 2


@pytest.mark.parametrize("layout", ["suffix", "cluster"])
def test_stale_fill_refused_with_leases(project, cluster, r, pgf, layout):
    """LeaseRedisCache.get_or_set with the same staging: pgfanout's DEL removes the lease the
    reader holds (named alike by both sides, in either layout), the reader's fill is refused
    and returns the value it read without caching it, and the next get_or_set fills the new
    row."""
    from django.core.cache import caches
    alias = "default" if layout == "suffix" else "cluster"
    extra = {} if layout == "suffix" else {"lease_layout": "cluster"}
    new_product(12)
    w = pgf(f"dj_lease_{layout}", **extra)
    key = make_key("product:12")
    reader = StagedReader(alias, 12)
    reader.start()
    lease = lease_of(key, layout)
    assert r.exists(lease), f"the reader holds no lease {lease!r}: {r.keys('*')}"
    write_and_wait_invalidated(cluster, r, f"dj_lease_{layout}", w, 12, name="new")
    lease_left = r.exists(lease)
    assert reader.finish()["name"] == "old"          # the value read is returned, uncached
    print(f"\nLeaseRedisCache ({layout}) after the race: stats {dict(reader.cache.stats)},"
          f" cached {r.get(key)!r}")
    assert reader.cache.stats["refused"] == 1 and r.get(key) is None, \
        f"the stale fill was stored: {dict(reader.cache.stats)}, {r.get(key)!r}"
    assert not lease_left, "pgfanout did not delete the reader's lease"
    cache = caches[alias]
    from shop.services import load_product
    assert cache.get_or_set("product:12", lambda: load_product(12))["name"] == "new"
    assert cache.get("product:12")["name"] == "new"
    assert stop(w)["leases"] == 2


def test_stale_fill_kept_when_pgfanout_deletes_no_lease(project, cluster, r, pgf):
    """pgfanout with redis.leases: false deletes the key but not its lease: the same staged
    fill through LeaseRedisCache is then accepted, and the old row stays cached.  So it is
    pgfanout's deletion of the lease that closes the race."""
    from django.core.cache import caches
    new_product(13)
    w = pgf("dj_nolease", leases=False)
    reader = StagedReader("default", 13)
    reader.start()
    write_and_wait_invalidated(cluster, r, "dj_nolease", w, 13, name="new")
    assert r.exists(lease_of(make_key("product:13")))
    reader.finish()
    cached = caches["default"].get("product:13")
    print(f"\nLeaseRedisCache with leases: false: stats {dict(reader.cache.stats)}, cached {cached}")
    assert reader.cache.stats["filled"] == 1 and cached["name"] == "old"
    assert stop(w)["leases"] == 0


# --- the protocol's other paths (no pgfanout needed) ------------------------------------------------

def test_thundering_herd_computes_once(project, r):
    """20 threads miss one key at once.  One takes the lease; its default callable blocks until
    all 20 have run lease_get (counted by Redis), so the 19 others are surely waiting; then
    it returns.  The value arrives within LEASE_WAIT_MS, so default ran exactly once and every
    thread got that value."""
    from django.core.cache import caches
    from django.db import connection
    caches["herd"].get_or_set("warm-up", 1)          # loads the scripts: EVALSHA counts are exact
    r.config_resetstat()
    calls = []
    release = threading.Event()
    results, errors, instances = [], [], []

    def load():
        calls.append(threading.get_ident())
        assert release.wait(60)
        return {"id": 21, "name": "computed once"}

    def worker():
        try:
            cache = caches["herd"]
            instances.append(cache)
            results.append(cache.get_or_set("product:21", load))
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    assert runner.wait_for(
        lambda: r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) >= 20, 30), \
        r.info("commandstats")
    release.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    stats = sum((c.stats for c in instances), start=type(instances[0].stats)())
    print(f"\n20 concurrent misses: default ran {len(calls)} time(s); {dict(stats)}")
    assert len(calls) == 1
    assert results == [{"id": 21, "name": "computed once"}] * 20
    assert stats["filled"] == 1 and stats["waited"] == 19
    assert not r.exists(lease_of(make_key("product:21")))


def test_busy_reader_reads_through_after_lease_wait(project, r):
    """A misser that finds the lease taken polls for LEASE_WAIT_MS (100 ms), then returns its
    own read without storing it; the lease holder's fill is still accepted afterwards."""
    from django.core.cache import caches
    holder = StagedReader("default", 22)
    new_product(22, name="row")
    holder.start()
    cache = caches["default"]
    assert cache.get_or_set("product:22", lambda: {"id": 22, "name": "read through"})["name"] == "read through"
    assert cache.stats["read_through"] == 1 and r.get(make_key("product:22")) is None
    assert holder.finish()["name"] == "row"
    assert holder.cache.stats["filled"] == 1 and cache.get("product:22")["name"] == "row"


def test_exception_releases_the_lease(project, r):
    """A default callable that raises: the exception reaches the caller and the lease is
    released, so the next misser takes it at once instead of waiting LEASE_TTL_MS."""
    from django.core.cache import caches
    cache = caches["default"]
    key = make_key("product:23")

    def boom():
        assert r.exists(lease_of(key))
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        cache.get_or_set("product:23", boom)
    assert not r.exists(lease_of(key)) and cache.stats["released"] == 1
    assert cache.get_or_set("product:23", "v") == "v" and cache.stats["filled"] == 1


def test_repeatable_read_atomic_block_reads_through(project, r):
    """Inside atomic() under REPEATABLE READ the snapshot may predate the lease, so get_or_set
    does not fill; under READ COMMITTED (a new snapshot per statement) it does.  Timeouts:
    None stores without expiry, 0 stores nothing."""
    from django.core.cache import caches
    from django.db import connection, transaction
    from shop.services import load_product
    new_product(24)
    cache = caches["default"]
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert cache.get_or_set("product:24", lambda: load_product(24))["name"] == "old"
    assert cache.stats["not_stored"] == 1 and not r.exists(make_key("product:24"))
    assert not r.exists(lease_of(make_key("product:24")))
    with transaction.atomic():
        assert cache.get_or_set("product:24", lambda: load_product(24))["name"] == "old"
    assert cache.stats["filled"] == 1 and 0 < r.pttl(make_key("product:24")) <= 300_000
    assert cache.get_or_set("forever", 5, timeout=None) == 5 and r.pttl(make_key("forever")) == -1
    assert r.get(make_key("forever")) == b"5"          # Django's serializer: ints stay raw
    assert cache.get_or_set("never", 6, timeout=0) == 6 and not r.exists(make_key("never"))


def test_scripts_survive_script_flush_and_a_redis_restart(project, redis_srv, r):
    """redis-py Script objects load a script again on NOSCRIPT: after SCRIPT FLUSH, and after
    redis-server restarts empty, get_or_set still takes leases and fills."""
    from django.core.cache import caches
    cache = caches["default"]
    assert cache.get_or_set("product:25", "first") == "first"
    shas = [cache._scripts.get.sha, cache._scripts.fill.sha]
    assert r.script_exists(*shas) == [True, True]
    r.script_flush()
    assert r.script_exists(*shas) == [False, False]
    assert cache.get_or_set("product:26", "after flush") == "after flush"
    assert r.get(make_key("product:26")) is not None and r.script_exists(*shas) == [True, True]
    assert cache.stats["filled"] == 2
    redis_srv.restart()
    client = redis_srv.client()
    assert client.script_exists(*shas) == [False, False] and client.dbsize() == 0
    assert cache.get_or_set("product:27", "after restart") == "after restart"
    assert client.get(make_key("product:27")) is not None and cache.stats["filled"] == 3


def test_async_get_or_set_and_cached_get(project, r):
    """aget_or_set takes the lease too (Django's own would be aget, aadd, aget), running the
    default callable, an ORM read, in the sync thread; cached("k").get(fn) is get_or_set."""
    import asyncio
    from django.core.cache import caches
    from pgfanout_django import cached
    from shop.services import load_product
    new_product(28, name="async")
    cache = caches["default"]

    async def view():
        return await cache.aget_or_set("product:28", lambda: load_product(28))
    assert asyncio.run(view())["name"] == "async"
    assert cache.stats["filled"] == 1 and cache.get("product:28")["name"] == "async"
    assert cached("product:{pk}:extra", timeout=60).get(lambda: "x", pk=28) == "x"
    assert cache.stats["filled"] == 2 and 0 < r.pttl(make_key("product:28:extra")) <= 60_000


# --- the application: views, cached(...), pgfanout ---------------------------------------------------

def test_views_and_cached_decorator(project, cluster, r, pgf):
    """The shop app uses only cache.get_or_set and @cached("product:{pk}:name"): a view's
    read is cached (no query the second time), pgfanout deletes both keys when the row
    changes, and the next reads show the new row."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from shop.services import product_name
    new_product(31, name="old", price="5.00")
    w = pgf("dj_views")
    client = Client()
    assert client.get("/products/31").json() == {"id": 31, "name": "old", "price": "5.00"}
    assert product_name(31) == "old" and product_name.key(31) == "product:31:name"
    assert product_name(pk=31) == "old"
    assert r.exists(make_key("product:31"), make_key("product:31:name")) == 2
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/products/31").json()["name"] == "old"
        assert product_name(31) == "old"
    assert len(queries) == 0, queries.captured_queries
    write_and_wait_invalidated(cluster, r, "dj_views", w, 31, name="new", price="6.50")
    assert r.exists(make_key("product:31"), make_key("product:31:name")) == 0
    assert client.get("/products/31").json() == {"id": 31, "name": "new", "price": "6.50"}
    assert product_name(31) == "new"
    assert stop(w)["leases"] == 2


# --- read-your-writes ------------------------------------------------------------------------------

def test_commit_lsn_and_lsn_parsing(project):
    """commit_lsn() is after the commit: it refuses inside atomic(); outside, it is at least
    the WAL insert position the commit left.  'X/Y' parses to (X << 32) | Y."""
    from django.db import connection, transaction
    from django.db.transaction import TransactionManagementError
    from pgfanout_django import commit_lsn, parse_lsn
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848 == parse_lsn(b"97500059720")
    assert parse_lsn("0/0") == 0 and parse_lsn(7) == 7
    for bad in ("1/2/3", "x", "-1", "1/100000000", -1, None):
        with pytest.raises((ValueError, TypeError)):
            parse_lsn(bad)
    with transaction.atomic():
        new_product(40)
        with pytest.raises(TransactionManagementError):
            commit_lsn()
    lsn = commit_lsn()
    with connection.cursor() as cur:
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        assert runner.lsn_to_int(cur.fetchone()[0]) >= lsn > 0


def test_read_your_writes(project, cluster, r, pgf):
    """pgfanout (slot 'pgfanout', so its default ryw key is the package's default
    'pgfanout:ryw:pgfanout') raises the key to the LSN through which it has invalidated.
    A write, commit_lsn(), then wait_for_invalidation() returns True and the cached key is
    already gone; a view does the same and answers with the new row; an LSN far in the
    future returns False after the timeout."""
    import time
    from django.test import Client
    from pgfanout_django import commit_lsn, wait_for_invalidation
    from shop.models import Product
    from shop.services import product_info
    new_product(41, price="1.00")
    w = pgf("pgfanout")
    key = make_key("product:41")

    # A write in a function, then the wait: the key is gone when it returns.
    assert product_info(41)["price"] == "1.00" and r.exists(key)
    p = Product.objects.get(pk=41)
    p.price = "2.00"
    p.save()
    lsn = commit_lsn()
    assert wait_for_invalidation(lsn, timeout=10), \
        f"ryw key {r.get('pgfanout:ryw:pgfanout')!r} never reached {lsn}:\n{w.stderr_text()[-2000:]}"
    assert not r.exists(key), "wait_for_invalidation returned before pgfanout deleted the key"
    assert int(r.get("pgfanout:ryw:pgfanout")) >= lsn
    assert wait_for_invalidation(runner.int_to_lsn(lsn), timeout=1)     # the 'X/Y' form
    assert product_info(41)["price"] == "2.00"

    # The same in a view (shop.views.update_price).
    assert r.exists(key)
    resp = Client().post("/products/41/price", data='{"price": "3.50"}', content_type="application/json")
    body = resp.json()
    assert resp.status_code == 200 and body["invalidated"] is True, body
    assert body["product"]["price"] == "3.50" and body["lsn"] > lsn

    # Far in the future: False once the timeout has passed.
    t0 = time.monotonic()
    assert wait_for_invalidation(body["lsn"] + (1 << 40), timeout=0.3) is False
    assert time.monotonic() - t0 >= 0.3
    stop(w)
