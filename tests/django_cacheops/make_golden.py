"""Regenerates tests/fixtures/cacheops_rows.json, the golden file of the C unit test
test_redis_cacheops: rows written to a real PostgreSQL, each column's text as pgfanout's session
sees it (DateStyle ISO, IntervalStyle postgres, extra_float_digits 3, TimeZone UTC: the
options of cdc/pgconn.c), and what django-cacheops 7.2 itself sends for the row once Django
5.2 has loaded it: json.dumps(get_obj_dict(...), default=str), and in insideout mode
json.dumps(walk_values(str, ...)), as cacheops.invalidation.invalidate_dict does.  The dict is
put in the table's column order (get_obj_dict iterates a set) so the bytes are comparable.

Run with the test venv's python (scripts/fetch-pyenv.sh):
    build/venv/bin/python tests/django_cacheops/make_golden.py
It starts a throwaway cluster of its own with tests/harness."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
OUT = os.path.join(HERE, "..", "fixtures", "cacheops_rows.json")
PG_OPTIONS = "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c TimeZone=UTC"

# The NOT NULL columns' values where a row does not say (Django's defaults are not the table's).
BASE = {"slug": "''", "active": "true", "price": "0", "rating": "0", "stock": "0", "qty": "0", "note": "'n'"}
# Rows as SQL literals per column (missing ones are BASE's, else NULL); chosen for the edges
# of each conversion: decimal exponents, float repr, timedelta normalization, escapes, NULL.
ROWS = [
    {"name": "'plain'", "active": "true", "price": "1.50", "ratio": "0.0000001200", "rating": "0.1",
     "released": "'2024-05-01'", "updated": "'2024-05-01 12:00:00.5+00'", "opens": "'08:30:00'",
     "ttl": "'1 day 02:03:04.5'", "uid": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "stock": "123456789012345678",
     "qty": "-7", "ip": "'192.168.0.1'", "label": "'x'"},
    {"name": "'a&b=c:d \"q\" \\ é ✓ 😀'", "active": "false", "price": "-2.00", "ratio": "0.0000000000",
     "rating": "1e16", "released": "'0999-01-02'", "updated": "'2024-12-31 23:59:59+00'",
     "opens": "'23:59:59.000001'", "ttl": "'-01:00:00'", "stock": "0", "label": "NULL"},
    {"name": "'tab\tnl\nctl\x01'", "price": "100", "ratio": "123.4560000000", "rating": "1e-05",
     "ttl": "'-1 days +00:00:00.000001'", "updated": "'1999-01-01 00:00:00.000123+00'", "stock": "-9223372036854775808"},
    {"name": "'floats'", "rating": "123456789.123", "ratio": "-0.0000010000", "ttl": "'3 days'", "price": "0.00"},
    {"name": "'more floats'", "rating": "1e15", "ttl": "'00:00:00'", "ratio": "NULL"},
    {"name": "'neg'", "rating": "-0.000123", "ttl": "'-3 days -04:00:00'"},
    {"name": "'neg zero'", "rating": "'-0'", "ttl": "'100 days 25:00:00'"},
    {"name": "'big'", "rating": "1.7976931348623157e308", "price": "12345678.90"},
    {"name": "'tiny'", "rating": "5e-324", "opens": "'00:00:00'"},
]


def main():
    from pgcluster import PgCluster
    cluster = PgCluster().start()
    try:
        os.environ.update(COTEST_PG_PORT=str(cluster.port), COTEST_PG_USER=cluster.superuser,
                          DJANGO_SETTINGS_MODULE="cotest.settings")
        import django
        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from funcy import walk_values
        from cacheops.invalidation import get_obj_dict
        from shop.models import Product
        import psycopg
        call_command("migrate", verbosity=0)
        ids = []
        with connection.cursor() as cur:
            for row in ROWS:
                row = {**BASE, **row}
                cols = ", ".join(row)
                cur.execute(f"INSERT INTO shop_product ({cols}) VALUES ({', '.join(row.values())}) RETURNING id"
                            .replace("%", "%%"))
                ids.append(cur.fetchone()[0])
        pg = psycopg.connect(cluster.dsn(), options=PG_OPTIONS, autocommit=True)
        columns = pg.execute("SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = 'shop_product'::regclass"
                             " AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()
        # Each column as its type's output function writes it, as pgoutput sends it (a ::text
        # cast would differ: true for t, an inet's /32).
        from psycopg.adapt import Loader

        class Raw(Loader):
            def load(self, data):
                return bytes(data).decode()
        for _, oid in columns:
            pg.adapters.register_loader(oid, Raw)
        select = ", ".join(name for name, _ in columns)
        # The table's column order, which is the order pgfanout sees (attnames are the columns).
        fields = [name for name, _ in columns]
        cases = []
        for pk in ids:
            texts = pg.execute(f"SELECT {select} FROM shop_product WHERE id = %s", (pk,)).fetchone()
            obj = get_obj_dict(Product, Product.objects.nocache().get(pk=pk))
            ordered = {k: obj[k] for k in fields if k in obj}
            cases.append({
                "columns": [{"name": n, "type": oid, "text": t} for (n, oid), t in zip(columns, texts)],
                "plain": json.dumps(ordered, default=str),
                "insideout": json.dumps(walk_values(str, ordered)),
            })
        with open(OUT, "w") as f:
            json.dump({"table": "shop_product", "made_by": "tests/django_cacheops/make_golden.py (Django %s, "
                       "django-cacheops 7.2, psycopg %s)" % (django.get_version(), psycopg.__version__),
                       "rows": cases}, f, indent=1, ensure_ascii=True)
            f.write("\n")
        print(f"wrote {len(cases)} rows to {os.path.normpath(OUT)}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
