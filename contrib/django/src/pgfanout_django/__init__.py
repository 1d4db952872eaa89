"""pgfanout's Django integration: a cache backend whose get_or_set takes leases
(pgfanout_django.cache.LeaseRedisCache), a cached(...) decorator, and read-your-writes
(commit_lsn, wait_for_invalidation).  See the package's README."""
import functools
import inspect

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from .ryw import commit_lsn, parse_lsn, wait_for_invalidation

__all__ = ["cached", "commit_lsn", "parse_lsn", "wait_for_invalidation"]
__version__ = "0.1.0"


class cached:
    """get_or_set through the named cache, keyed by a template.

    As a decorator, the template is formatted with the function's bound arguments (defaults
    applied):

        @cached("product:{pk}", timeout=300)
        def product(pk): return Product.objects.get(pk=pk)

    The wrapped function gets .key(*args, **kwargs), the key a call would use.  There is no
    invalidate(): pgfanout deletes the key when the rows change.  Without a function,
    cached("k").get(fn) is caches[cache].get_or_set("k", fn)."""

    def __init__(self, key_template, timeout=DEFAULT_TIMEOUT, version=None, cache="default"):
        self.key_template = key_template
        self.timeout = timeout
        self.version = version
        self.cache = cache

    def get(self, default, **fmt):
        """get_or_set(key_template.format(**fmt), default)."""
        return caches[self.cache].get_or_set(self.key_template.format(**fmt), default,
                                             timeout=self.timeout, version=self.version)

    def __call__(self, fn):
        signature = inspect.signature(fn)

        def key(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return self.key_template.format(**bound.arguments)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return caches[self.cache].get_or_set(key(*args, **kwargs), lambda: fn(*args, **kwargs),
                                                 timeout=self.timeout, version=self.version)

        wrapper.key = key
        return wrapper
