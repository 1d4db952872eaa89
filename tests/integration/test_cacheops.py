"""The redis.cacheops preset (issue 13, item 5) with django-cacheops 7.2 and Django 5.2 from PyPI,
in the project tests/django_cacheops, against a real PostgreSQL 15, redis-server and pgfanout.

cacheops invalidates on save() and delete() only; by its own caveats it misses queryset
.update(), raw SQL and other processes' writes.  Each case caches a queryset filtered on a
field, writes in one of those ways, waits until pgfanout has confirmed the write (the slot's
confirmed_flush_lsn passed it: pgfanout confirms only what Redis has answered), and evaluates
the queryset again: it must show the change.  In plain mode the cached q: key must be gone as
well.  The baseline runs pgfanout without the preset and expects the stale result, which shows
that the cases can fail.  Both CACHEOPS_INSIDEOUT modes run, each against pgfanout configured
to match.  Expectations come from the database, never from pgfanout."""
import datetime
import decimal
import os
import subprocess
import sys
import uuid

import pytest

import runner
from redis_util import create_slot, drop_slots, wait_confirmed, wait_started, worker_args, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "..", "django_cacheops")
UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def redis_server():
    from redisserver import RedisServer
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def django_env(cluster, redis_server):
    """Django set up against the module's cluster and Redis, the tables migrated (the
    migration sets REPLICA IDENTITY FULL); yields the models module."""
    os.environ.update(COTEST_PG_PORT=str(cluster.port), COTEST_PG_USER=cluster.superuser,
                      COTEST_REDIS_PORT=redis_server.addr.rsplit(":", 1)[1],
                      DJANGO_SETTINGS_MODULE="cotest.settings")
    sys.path.insert(0, PROJECT)
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from shop import models
    yield models
    from django.db import connections
    connections.close_all()


@pytest.fixture(params=["plain", "insideout"])
def mode(request, django_env):
    """CACHEOPS_INSIDEOUT for the test, matched by pgfanout's config."""
    from django.test import override_settings
    with override_settings(CACHEOPS_INSIDEOUT=request.param == "insideout"):
        yield request.param


class Fanout:
    """A pgfanout on a fresh slot (so it starts at the current WAL), and waiting for it."""

    def __init__(self, cluster, db, redis_server, tmp_path, name, redis_section):
        self.db, self.slot = db, f"{name}_slot"
        drop_slots(db, self.slot)
        db.execute(f"DROP PUBLICATION IF EXISTS {name}_pub")
        create_slot(db, self.slot, f"{name}_pub", ["public.shop_product", "public.shop_category"])
        cfg = write_config(tmp_path / f"{name}.yaml", redis_section)
        self.log = tmp_path / f"{name}.log"
        self.w = runner.Worker(worker_args(cluster, self.slot, f"{name}_pub", cfg, redis_server.addr),
                               stderr_path=str(self.log))
        self.w.__enter__()
        wait_started(self.w)

    def caught_up(self, timeout=30):
        """Waits until pgfanout has confirmed everything written so far (fails the test after
        timeout seconds)."""
        lsn = runner.scalar(self.db, "SELECT pg_current_wal_lsn()::text")
        wait_confirmed(self.db, self.slot, lsn, timeout=timeout, worker=self.w)

    def stop(self):
        rc = self.w.terminate(timeout=30)
        text = self.w.stderr_text()
        assert rc == 0 and "Sanitizer" not in text, f"pgfanout exited with {rc}:\n{text[-3000:]}"
        drop_slots(self.db, self.slot)
        return text


@pytest.fixture
def fanout(cluster, db, redis_server, tmp_path, mode):
    f = Fanout(cluster, db, redis_server, tmp_path, "co", {"cacheops": {"prefix": "", "insideout": mode == "insideout"}})
    yield f
    f.stop()


@pytest.fixture
def baseline(cluster, db, redis_server, tmp_path, django_env):
    """pgfanout with no preset and no rules: it streams and confirms, and invalidates nothing."""
    f = Fanout(cluster, db, redis_server, tmp_path, "base", {"rules": []})
    yield f
    f.stop()


@pytest.fixture
def shop(django_env, redis_server):
    """Empty tables and an empty Redis; two categories and four products."""
    m = django_env
    from django.db import connection
    with connection.cursor() as cur:
        cur.execute("TRUNCATE shop_product, shop_category RESTART IDENTITY CASCADE")
    redis_server.client().flushdb()
    c1 = m.Category.objects.create(name="one")
    m.Category.objects.create(name="two")
    for name, active in (("a", True), ("b", True), ("c", False), ("d", False)):
        m.Product.objects.create(name=name, active=active, category=c1, price=decimal.Decimal("1.00"))
    return m


def names(m, **filters):
    """A fresh cached queryset's names, sorted."""
    return sorted(p.name for p in m.Product.objects.filter(**filters).cache())


def q_keys(client):
    return set(client.keys("q:*"))


def raw(sql, *params):
    from django.db import connection
    with connection.cursor() as cur:
        cur.execute(sql, params)


def psql(cluster, sql):
    """A write from another process."""
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", cluster.dsn(), "-c", sql], check=True)


# Each write moves products against the cached filter(category_id=1, active=True), which
# holds a and b; want is what the filter holds afterwards.
CASES = {
    "raw_update_in": (lambda m, cl: raw("UPDATE shop_product SET active = true WHERE name = 'c'"), ["a", "b", "c"]),
    "raw_update_out": (lambda m, cl: raw("UPDATE shop_product SET active = false WHERE name = 'a'"), ["b"]),
    "bulk_update": (lambda m, cl: m.Product.objects.filter(name="b").update(active=False), ["a"]),
    "delete": (lambda m, cl: m.Product.objects.filter(name="a").delete(), ["b"]),
    "other_process": (lambda m, cl: psql(cl, "UPDATE shop_product SET active = true WHERE name = 'd'"),
                      ["a", "b", "d"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_write_invalidates(case, shop, fanout, mode, cluster, redis_server):
    m, client = shop, redis_server.client()
    fanout.caught_up()  # the fixture's own writes are through
    assert names(m, category_id=1, active=True) == ["a", "b"]
    cached = q_keys(client)
    assert cached, "cacheops cached nothing"
    assert names(m, category_id=1, active=True) == ["a", "b"]  # a hit
    write, want = CASES[case]
    write(m, cluster)
    fanout.caught_up()
    if mode == "plain":
        assert not cached & q_keys(client), "the cached queryset's key is still there"
    assert names(m, category_id=1, active=True) == want


@pytest.mark.parametrize("case", ["raw_update_in", "raw_update_out", "bulk_update", "other_process"])
def test_baseline_is_stale(case, shop, baseline, cluster, redis_server):
    """Without the preset the same writes leave the cached result: the test above can fail."""
    m = shop
    baseline.caught_up()
    assert names(m, category_id=1, active=True) == ["a", "b"]
    write, want = CASES[case]
    write(m, cluster)
    baseline.caught_up()
    assert names(m, category_id=1, active=True) == ["a", "b"] != want


# The type matrix: a filter on one field, a raw UPDATE that moves product c into it, then one
# that moves it out again.  (field lookup, filter value, SQL value in, SQL value out)
MATRIX = {
    "bool": ({"active": False, "name": "c"}, "active = false", "active = true"),
    "decimal_variant": ({"price": decimal.Decimal("1.5")}, "price = 1.50", "price = 2"),
    "decimal_int": ({"price": 3}, "price = 3.00", "price = 2"),
    "float": ({"rating": 0.1}, "rating = 0.1", "rating = 0.2"),
    "datetime_us": ({"updated": datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)},
                    "updated = '2024-05-01 12:00:00.123456+00'", "updated = '2024-05-01 12:00:00+00'"),
    "date": ({"released": datetime.date(2024, 2, 29)}, "released = '2024-02-29'", "released = '2024-03-01'"),
    "time": ({"opens": datetime.time(8, 30, 0, 5)}, "opens = '08:30:00.000005'", "opens = '08:30:00'"),
    "duration_neg": ({"ttl": datetime.timedelta(hours=-1)}, "ttl = '-01:00:00'", "ttl = '01:00:00'"),
    "uuid": ({"uid": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
             "uid = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "uid = NULL"),
    "bigint": ({"stock": 123456789012345678}, "stock = 123456789012345678", "stock = 123456789012345679"),
    "null": ({"label__isnull": True, "name": "c"}, "label = NULL", "label = 'x'"),
    "string_amp_eq_colon": ({"name": "a&b=c:d"}, "name = 'a&b=c:d'", "name = 'c'"),
    "fk": ({"category_id": 2}, "category_id = 2", "category_id = 1"),
}


@pytest.mark.parametrize("field", list(MATRIX))
def test_type_matrix(field, shop, fanout, mode, redis_server):
    m, client = shop, redis_server.client()
    filters, set_in, set_out = MATRIX[field]
    c_id = m.Product.objects.nocache().get(name="c").id
    raw(f"UPDATE shop_product SET {set_out} WHERE id = {c_id}")
    fanout.caught_up()
    before = names(m, **filters)
    assert "c" not in before
    cached = q_keys(client)
    raw(f"UPDATE shop_product SET {set_in} WHERE id = {c_id}")
    fanout.caught_up()
    if mode == "plain":
        assert not cached & q_keys(client), f"{field}: the cached queryset's key is still there"
    got = m.Product.objects.nocache().filter(**filters).count()
    assert got == len(before) + 1, f"{field}: the database does not match the filter; fix the case"
    assert len(names(m, **filters)) == got, f"{field}: stale after moving the row in"
    raw(f"UPDATE shop_product SET {set_out} WHERE id = {c_id}")
    fanout.caught_up()
    assert len(names(m, **filters)) == len(before), f"{field}: stale after moving the row out"


def test_truncate_invalidates_the_table(shop, fanout, mode, redis_server):
    m = shop
    fanout.caught_up()
    assert names(m, category_id=1, active=True) == ["a", "b"]
    raw("TRUNCATE shop_product")
    fanout.caught_up()
    assert names(m, category_id=1, active=True) == []


def test_startup_warns_without_replica_identity_full(shop, cluster, db, redis_server, tmp_path):
    raw("ALTER TABLE shop_category REPLICA IDENTITY DEFAULT")
    try:
        f = Fanout(cluster, db, redis_server, tmp_path, "warn", {"cacheops": {"prefix": ""}})
        text = f.stop()
    finally:
        raw("ALTER TABLE shop_category REPLICA IDENTITY FULL")
    assert "ALTER TABLE public.shop_category REPLICA IDENTITY FULL" in text, text[-3000:]
    assert "public.shop_product REPLICA IDENTITY" not in text, text[-3000:]
