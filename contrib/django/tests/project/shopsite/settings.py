"""Settings of the test project for pgfanout_django (tests/integration/test_django.py).

The servers come from the environment, which the test harness sets after starting them:
SHOPSITE_PG_HOST, _PG_PORT, _PG_USER, _PG_NAME and SHOPSITE_REDIS_URL.  The only
pgfanout-specific lines are the CACHES backends and their OPTIONS; the application (shop)
uses plain Django: cache.get_or_set and the ORM."""
import os

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET_KEY = "pgfanout-django-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "shopsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
MIDDLEWARE = []

env = os.environ.get
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": env("SHOPSITE_PG_HOST", "127.0.0.1"),
        "PORT": env("SHOPSITE_PG_PORT", "5432"),
        "USER": env("SHOPSITE_PG_USER", "postgres"),
        "NAME": env("SHOPSITE_PG_NAME", "postgres"),
    },
}

REDIS_URL = env("SHOPSITE_REDIS_URL", "redis://127.0.0.1:6379/0")
# pgfanout's redis section must say the same: django: {key_prefix: "shop", version: 1}.
KEY_PREFIX = "shop"
VERSION = 1


def lease_cache(**options):
    return {"BACKEND": "pgfanout_django.cache.LeaseRedisCache", "LOCATION": REDIS_URL,
            "KEY_PREFIX": KEY_PREFIX, "VERSION": VERSION, "TIMEOUT": 300,
            "OPTIONS": {"LEASE_TTL_MS": 3000, "LEASE_WAIT_MS": 100, "LEASE_POLL_MS": 10,
                        "RYW_KEY": "pgfanout:ryw:pgfanout", **options}}


CACHES = {
    # What an application would configure.
    "default": lease_cache(),
    # Django's stock backend on the same keys: the baseline that shows the race.
    "stock": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
              "KEY_PREFIX": KEY_PREFIX, "VERSION": VERSION, "TIMEOUT": 300},
    # pgfanout's redis.lease_layout: cluster.
    "cluster": lease_cache(LEASE_LAYOUT="cluster"),
    # Concurrent missers wait long enough for any fill in the thundering-herd test.
    "herd": lease_cache(LEASE_WAIT_MS=10000, LEASE_POLL_MS=5),
}
