"""pgfanout's cache fill protocol (contrib/redis/*.lua), as an application would use it:
shared by tests/integration/test_leases.py, the staleness scenario (tests/harness/staleness.py)
and bench/bench_staleness.py."""
import os
import secrets
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LUA_DIR = os.path.join(HERE, "..", "..", "contrib", "redis")
SUFFIX = ":lease"
LEASE_TTL_MS = 3000


def lua(name):
    """The text of one of contrib/redis's scripts."""
    with open(os.path.join(LUA_DIR, name)) as f:
        return f.read()


class LeaseCache:
    """Cache-aside through contrib/redis's scripts (redis-py Script objects: EVALSHA, and
    SCRIPT LOAD again on NOSCRIPT)."""

    def __init__(self, client, lease_of=lambda k: k + SUFFIX, lease_ttl_ms=LEASE_TTL_MS):
        self.client = client
        self.lease_of = lease_of
        self.lease_ttl_ms = lease_ttl_ms
        self.get_script = client.register_script(lua("lease_get.lua"))
        self.fill_script = client.register_script(lua("lease_fill.lua"))
        self.release_script = client.register_script(lua("lease_release.lua"))

    def take(self, key):
        """lease_get.lua: ('hit', value), ('lease', token) or ('busy', pttl)."""
        token = secrets.token_hex(16)
        r = self.get_script(keys=[key, self.lease_of(key)], args=[token, self.lease_ttl_ms])
        if r[0] == 1:
            return "hit", r[1]
        if r[0] == 2:
            return "lease", token
        return "busy", r[1]

    def fill(self, key, token, value, ttl_ms=0):
        """lease_fill.lua: True when stored."""
        return self.fill_script(keys=[key, self.lease_of(key)], args=[token, value, ttl_ms]) == 1

    def get_or_fill(self, key, load, wait_s=0.1, poll_s=0.005, between=None):
        """The README's protocol: a hit returns the value; the lease holder loads and fills;
        a concurrent misser polls for up to wait_s, then reads through without filling.
        Returns (value, how) with how in hit, filled, refused, waited, read_through."""
        kind, x = self.take(key)
        if kind == "hit":
            return x, "hit"
        if kind == "lease":
            value = load()
            if between:
                between()
            try:
                return value, "filled" if self.fill(key, x, value) else "refused"
            except Exception:
                self.release_script(keys=[self.lease_of(key)], args=[x])
                raise
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(poll_s)
            v = self.client.get(key)
            if v is not None:
                return v, "waited"
        return load(), "read_through"
