"""Settings of the django-cacheops test project (tests/integration/test_cacheops.py and
make_golden.py): PostgreSQL and Redis come from the environment the test sets."""
import os

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "cacheops", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ.get("COTEST_PG_PORT", "5432"),
        "NAME": os.environ.get("COTEST_PG_DB", "postgres"),
        "USER": os.environ.get("COTEST_PG_USER", "postgres"),
    }
}
CACHEOPS_REDIS = f"redis://127.0.0.1:{os.environ.get('COTEST_REDIS_PORT', '6379')}/0"
CACHEOPS = {"shop.*": {"ops": "all", "timeout": 600}}
CACHEOPS_INSIDEOUT = os.environ.get("COTEST_INSIDEOUT") == "1"
