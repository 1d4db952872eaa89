"""LeaseRedisCache: Django's Redis cache whose get_or_set follows pgfanout's lease protocol.

Django's own get_or_set is get, default(), add (SET NX), get.  A reader that missed, read the
old row, and calls add after pgfanout has deleted the key stores the old value: add refuses only
when a value is present, and the delete just removed it.  Here the store is a compare-and-set on
a lease token instead (contrib/redis/lease_fill.lua), and pgfanout deletes the lease together
with the key, so a fill that began before a change committed is refused.

The protocol (docs/design/cache-consistency.md, 1.2):
1. lease_get.lua: K's value (a hit), or the lease for a fresh token, or "busy";
2. lease granted: compute the value, store it with lease_fill.lua (only while the token still
   holds the lease) and return it, stored or not;
3. busy: poll K every LEASE_POLL_MS for at most LEASE_WAIT_MS; then read through (compute and
   return without storing);
4. the computation raised: release the lease (lease_release.lua) and re-raise.

Everything else (get, set, add, delete, ...) is Django's, unchanged: a plain set() has no lease
and is not race-safe.
"""
import logging
import threading
import time
from collections import Counter

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from django.db import connections

from . import leases

logger = logging.getLogger("pgfanout_django")

DEFAULT_RYW_KEY = "pgfanout:ryw:pgfanout"

# Our OPTIONS, with their defaults; popped before Django's RedisCache sees the rest (it passes
# every remaining option to redis-py's connection pool, which would refuse them).
LEASE_OPTIONS = {
    "LEASE_TTL_MS": 3000,
    "LEASE_WAIT_MS": 100,
    "LEASE_POLL_MS": 10,
    "LEASE_SUFFIX": ":lease",
    "LEASE_LAYOUT": "suffix",
    "RYW_KEY": DEFAULT_RYW_KEY,
    "LEASE_FILL_IN_ATOMIC": False,
}

_MISSING = object()
_WARNED_MAX = 1000


class LeaseRedisCache(RedisCache):
    """django.core.cache.backends.redis.RedisCache with a lease-protocol get_or_set.

    self.stats counts what each get_or_set did: hit, filled, refused (the fill lost its lease:
    an invalidation came first), waited (a concurrent misser got the value by polling),
    read_through (no value in time, returned uncached), not_stored (timeout 0, or a read in a
    REPEATABLE READ/SERIALIZABLE atomic block), no_lease (a key the cluster layout cannot
    lease), released (the computation raised)."""

    def __init__(self, server, params):
        params = dict(params)
        options = dict(params.get("OPTIONS") or {})
        conf = {name: options.pop(name, default) for name, default in LEASE_OPTIONS.items()}
        params["OPTIONS"] = options
        super().__init__(server, params)
        for name in ("LEASE_TTL_MS", "LEASE_WAIT_MS", "LEASE_POLL_MS"):
            value = conf[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name != "LEASE_WAIT_MS" else 0):
                raise ValueError(f"OPTIONS {name} must be a positive integer (milliseconds), not {value!r}")
        if conf["LEASE_LAYOUT"] not in ("suffix", "cluster"):
            raise ValueError(f"OPTIONS LEASE_LAYOUT must be 'suffix' or 'cluster' (as pgfanout's"
                             f" redis.lease_layout), not {conf['LEASE_LAYOUT']!r}")
        if not conf["LEASE_SUFFIX"]:
            raise ValueError("OPTIONS LEASE_SUFFIX must not be empty (pgfanout's redis.lease_suffix)")
        self.lease_ttl_ms = conf["LEASE_TTL_MS"]
        self.lease_wait_ms = conf["LEASE_WAIT_MS"]
        self.lease_poll_ms = conf["LEASE_POLL_MS"]
        self.lease_suffix = conf["LEASE_SUFFIX"]
        self.lease_layout = conf["LEASE_LAYOUT"]
        self.ryw_key = conf["RYW_KEY"]
        self.lease_fill_in_atomic = bool(conf["LEASE_FILL_IN_ATOMIC"])
        self.stats = Counter()
        self._lock = threading.Lock()
        self._scripts = None
        self._warned = set()

    # --- helpers ------------------------------------------------------------------------------

    def lease_key(self, full_key):
        """The lease key of a full cache key (after make_key), as pgfanout names it; None when
        the cluster layout has no name in its hash slot."""
        return leases.lease_key(full_key, self.lease_suffix, self.lease_layout)

    def _count(self, what):
        with self._lock:
            self.stats[what] += 1

    def _scripts_for(self, client):
        # Script objects hold only the source and its SHA1; every call names its client.
        if self._scripts is None:
            self._scripts = leases.Scripts(client)
        return self._scripts

    def _snapshot_may_predate_lease(self):
        """True when a database read now could use a snapshot taken before the lease: some open
        connection is in an atomic block under REPEATABLE READ or SERIALIZABLE (unless
        LEASE_FILL_IN_ATOMIC).  READ COMMITTED takes a new snapshot per statement."""
        if self.lease_fill_in_atomic:
            return False
        for conn in connections.all(initialized_only=True):
            if not conn.in_atomic_block:
                continue
            if conn.vendor != "postgresql":
                return True
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('transaction_isolation')")
                level = cur.fetchone()[0]
            if level != "read committed":
                return True
        return False

    def _warn_once(self, key, text):
        if key in self._warned:
            return
        with self._lock:
            if len(self._warned) < _WARNED_MAX:
                self._warned.add(key)
        logger.warning(text)

    @staticmethod
    def _value_of(default):
        return default() if callable(default) else default

    # --- the protocol -------------------------------------------------------------------------

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """Returns key's cached value, or computes default (a value or a callable) and stores it
        through the lease protocol.  The value computed is returned whether or not it was
        stored; it is stored only while this call's lease still stands."""
        full_key = self.make_and_validate_key(key, version=version)
        lease = self.lease_key(full_key)
        cache = self._cache
        client = cache.get_client(full_key, write=True)
        if lease is None or self._snapshot_may_predate_lease():
            if lease is None:
                self._warn_once(full_key, f"pgfanout_django: cache key {full_key!r} has a '}}' but no"
                                          " valid {hash tag}: no lease name shares its Redis Cluster slot,"
                                          " so get_or_set reads through without filling it; give the key a {tag}")
            value = client.get(full_key)
            if value is not None:
                self._count("hit")
                return cache._serializer.loads(value)
            self._count("no_lease" if lease is None else "not_stored")
            return self._value_of(default)

        scripts = self._scripts_for(client)
        token = leases.new_token()
        answer = scripts.get(keys=[full_key, lease], args=[token, self.lease_ttl_ms], client=client)
        if answer[0] == leases.HIT:
            self._count("hit")
            return cache._serializer.loads(answer[1])
        if answer[0] == leases.GRANTED:
            return self._fill(client, scripts, full_key, lease, token, default, timeout)
        return self._wait_or_read_through(client, full_key, default)

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """get_or_set for async code, run in Django's sync thread (Django's own aget_or_set is
        aget, aadd, aget, which would skip the lease; and default usually reads the ORM)."""
        return await sync_to_async(self.get_or_set, thread_sensitive=True)(key, default, timeout, version)

    def _fill(self, client, scripts, full_key, lease, token, default, timeout):
        """We hold the lease: compute, then store only while the token still holds it."""
        try:
            value = self._value_of(default)
        except BaseException:
            scripts.release(keys=[lease], args=[token], client=client)
            self._count("released")
            raise
        backend_timeout = self.get_backend_timeout(timeout)
        if backend_timeout == 0:   # Django: a timeout of 0 or less stores nothing
            scripts.release(keys=[lease], args=[token], client=client)
            self._count("not_stored")
            return value
        ttl_ms = 0 if backend_timeout is None else backend_timeout * 1000
        stored = scripts.fill(keys=[full_key, lease],
                              args=[token, self._cache._serializer.dumps(value), ttl_ms], client=client)
        self._count("filled" if stored == 1 else "refused")
        return value

    def _wait_or_read_through(self, client, full_key, default):
        """Someone else holds the lease: poll for their value briefly, else read through."""
        deadline = time.monotonic() + self.lease_wait_ms / 1000.0
        poll = self.lease_poll_ms / 1000.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(poll, left))
            value = client.get(full_key)
            if value is not None:
                self._count("waited")
                return self._cache._serializer.loads(value)
        self._count("read_through")
        return self._value_of(default)
