"""Read-your-writes: wait until pgfanout has invalidated everything up to one's own commit.

pgfanout sets a Redis key (redis.ryw_key, default "pgfanout:ryw:<slot name>"; no Django prefix)
to the LSN, as a decimal (hi << 32) | lo, through which every invalidation is done.  A view that
has just written takes commit_lsn() after its commit and waits until that key reaches it:

    obj.save()                                   # autocommit: committed here
    lsn = commit_lsn()                           # SELECT pg_current_wal_insert_lsn()
    if wait_for_invalidation(lsn, timeout=1.0):  # the cache no longer holds pre-write values
        ...
"""
import time

from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.transaction import TransactionManagementError

from .cache import DEFAULT_RYW_KEY


def parse_lsn(lsn):
    """An LSN as an int: an int is returned as is, a PostgreSQL 'X/Y' string (hex) becomes
    (X << 32) | Y, a decimal string (as pgfanout stores it) its value."""
    if isinstance(lsn, int) and not isinstance(lsn, bool):
        if lsn < 0:
            raise ValueError(f"an LSN is not negative: {lsn}")
        return lsn
    if isinstance(lsn, bytes):
        lsn = lsn.decode("ascii")
    if isinstance(lsn, str):
        if "/" in lsn:
            hi, lo = lsn.split("/")
            hi, lo = int(hi, 16), int(lo, 16)
            if hi > 0xFFFFFFFF or lo > 0xFFFFFFFF or hi < 0 or lo < 0:
                raise ValueError(f"not an LSN: {lsn!r}")
            return (hi << 32) | lo
        if lsn.isdigit():
            return int(lsn)
    raise ValueError(f"not an LSN: {lsn!r} (expected an int, 'X/Y' or a decimal string)")


def commit_lsn(using=DEFAULT_DB_ALIAS):
    """The WAL insert position right after the connection's last commit, as an int: at least the
    end of that commit's record, whatever synchronous_commit says.  Refuses inside atomic() (or
    with autocommit off), where the commit has not happened yet: use
    transaction.on_commit(lambda: ...) there."""
    conn = connections[using]
    if conn.in_atomic_block or not conn.get_autocommit():
        raise TransactionManagementError(
            "commit_lsn() must run after the commit, outside atomic(); inside atomic() call it from"
            " transaction.on_commit()")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        return parse_lsn(cur.fetchone()[0])


def wait_for_invalidation(lsn, timeout=1.0, cache="default", key=None):
    """Polls pgfanout's read-your-writes key until its value is >= lsn (an int or 'X/Y').
    Returns True then, or False once timeout seconds have passed.  The key is the cache's
    OPTIONS RYW_KEY (LeaseRedisCache), or key, or "pgfanout:ryw:pgfanout"; it is read on the
    cache's write server (a Redis replica could lag behind it).  Polls after 2 ms, doubling up
    to 50 ms."""
    want = parse_lsn(lsn)
    backend = caches[cache]
    name = key or getattr(backend, "ryw_key", None) or DEFAULT_RYW_KEY
    client = backend._cache.get_client(name, write=True)
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        value = client.get(name)
        if value is not None and parse_lsn(value) >= want:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
