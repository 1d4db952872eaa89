"""--create-publication and tables without a replica identity, against a real PostgreSQL 15.

Once a publication that publishes updates and deletes carries a table with no replica
identity (no primary key under REPLICA IDENTITY DEFAULT, or NOTHING), PostgreSQL rejects the
application's UPDATE and DELETE on that table.  So:
- --create-publication refuses such a publication, listing the tables and the fixes, and
  leaves nothing behind (no publication, no slot), unless --allow-missing-replica-identity;
- every start warns about published tables in that state;
- a role that may not create the publication gets a hint: FOR ALL TABLES needs a superuser,
  or name the tables with --tables.

Each test of the refusal fails against the behaviour before the fix, which created the
publication and so broke the application's UPDATE."""
import psycopg
import pytest

import runner
from runner import wait_for


@pytest.fixture
def appdb(cluster, admin, request):
    """A database of the test's own (FOR ALL TABLES covers every table of a database), with
    tables in each replica identity state; yields (dsn, connection)."""
    name = "pub_" + request.node.name.removeprefix("test_")[:50]
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(dbname=name)
    conn = runner.connect(dsn)
    conn.execute("""
        CREATE TABLE with_pk (id int PRIMARY KEY, v text);
        CREATE TABLE no_pk (id int, v text);
        CREATE TABLE full_no_pk (id int, v text);
        ALTER TABLE full_no_pk REPLICA IDENTITY FULL;
        CREATE TABLE nothing_pk (id int PRIMARY KEY, v text);
        ALTER TABLE nothing_pk REPLICA IDENTITY NOTHING;
        CREATE TABLE by_index (id int NOT NULL, v text);
        CREATE UNIQUE INDEX by_index_id ON by_index (id);
        ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_id;
        CREATE TABLE parted (id int, v text) PARTITION BY RANGE (id);
        CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
        CREATE UNLOGGED TABLE unlogged_no_pk (id int);
        INSERT INTO with_pk VALUES (1, 'a'); INSERT INTO no_pk VALUES (1, 'a');
        INSERT INTO full_no_pk VALUES (1, 'a'); INSERT INTO nothing_pk VALUES (1, 'a');
        INSERT INTO by_index VALUES (1, 'a'); INSERT INTO parted VALUES (1, 'a');
    """)
    yield dsn, conn
    conn.close()
    for slot in runner.server_objects(admin)[0]:
        info = runner.slot_info(admin, slot)
        if info and info["active"] is False and slot.startswith("pubt_"):
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


MISSING = ["public.no_pk", "public.nothing_pk", "public.parted_1"]
FINE = ["public.with_pk", "public.full_no_pk", "public.by_index", "public.unlogged_no_pk"]


def publications(conn):
    return [r[0] for r in conn.execute("SELECT pubname FROM pg_publication ORDER BY 1").fetchall()]


def app_updates_work(conn):
    """The application's UPDATE and DELETE on every table, as it would run them; returns the
    errors PostgreSQL gave, by table."""
    errors = {}
    for t in ["with_pk", "no_pk", "full_no_pk", "nothing_pk", "by_index", "parted"]:
        try:
            conn.execute(f"UPDATE {t} SET v = 'b' WHERE id = 1")
            conn.execute(f"DELETE FROM {t} WHERE id = 99")
        except psycopg.Error as e:
            errors[t] = str(e).strip()
    return errors


def test_refuses_all_tables_publication_that_breaks_updates(pgfanout, appdb):
    dsn, conn = appdb
    r = runner.run_pgfanout(["--dsn", dsn, "--slot", "pubt_refuse", "--publication", "p_all",
                             "--create-slot", "--snapshot", "never", "--create-publication"], timeout=30)
    assert r.returncode == 1, r.describe()
    err = r.stderr
    assert 'refusing to create publication "p_all": 3 tables it would publish have no replica identity' in err, \
        r.describe()
    for t in MISSING:
        assert t in err, (t, r.describe())
    for t in FINE:
        assert t not in err, (t, r.describe())
    for fix in ["PRIMARY KEY", "REPLICA IDENTITY FULL", "REPLICA IDENTITY USING INDEX", "--tables",
                "--allow-missing-replica-identity"]:
        assert fix in err, (fix, r.describe())
    assert publications(conn) == [], "the refused publication was left behind"
    assert runner.slot_info(conn, "pubt_refuse") is None, "a slot was created though the setup was refused"
    assert app_updates_work(conn) == {}


def test_tables_list_is_checked_too(pgfanout, appdb):
    dsn, conn = appdb
    r = runner.run_pgfanout(["--dsn", dsn, "--slot", "pubt_list", "--publication", "p_list",
                             "--create-slot", "--snapshot", "never", "--create-publication", "--tables", "with_pk,parted,full_no_pk"],
                            timeout=30)
    assert r.returncode == 1, r.describe()
    assert "1 table it would publish has no replica identity" in r.stderr and "public.parted_1" in r.stderr, \
        r.describe()
    assert "public.no_pk" not in r.stderr and "public.nothing_pk" not in r.stderr, r.describe()
    assert publications(conn) == []


def test_tables_that_all_have_an_identity_are_published(pgfanout, appdb, tmp_path):
    dsn, conn = appdb
    with runner.Worker(["--dsn", dsn, "--slot", "pubt_ok", "--publication", "p_ok", "--create-slot", "--snapshot", "never",
                        "--create-publication", "--tables", "with_pk,full_no_pk,by_index",
                        "-o", str(tmp_path / "ok.out")], stderr_path=str(tmp_path / "ok.err")) as w:
        assert wait_for(lambda: "streaming slot" in w.stderr_text() or not w.running(), 30), w.stderr_text()
        text = w.stderr_text()
        assert 'created publication "p_ok"' in text and "replica identity" not in text, text
        assert app_updates_work(conn) == {}
        assert w.terminate() == 0


def test_override_creates_it_and_warns(pgfanout, appdb, tmp_path):
    dsn, conn = appdb
    with runner.Worker(["--dsn", dsn, "--slot", "pubt_override", "--publication", "p_over", "--create-slot", "--snapshot", "never",
                        "--create-publication", "--allow-missing-replica-identity",
                        "-o", str(tmp_path / "o.out")], stderr_path=str(tmp_path / "o.err")) as w:
        assert wait_for(lambda: "streaming slot" in w.stderr_text() or not w.running(), 30), w.stderr_text()
        text = w.stderr_text()
        assert publications(conn) == ["p_over"]
        assert "warn" in text and "--allow-missing-replica-identity although 3 tables have no replica identity" \
            in text, text
        for t in MISSING:
            assert t in text
        errors = app_updates_work(conn)
        assert sorted(errors) == ["no_pk", "nothing_pk", "parted"], errors
        assert w.terminate() == 0


def test_every_start_warns_about_published_tables_without_identity(pgfanout, appdb, tmp_path):
    dsn, conn = appdb
    conn.execute("CREATE PUBLICATION p_warn FOR TABLE with_pk, no_pk")
    conn.execute("CREATE PUBLICATION p_inserts FOR TABLE no_pk WITH (publish = 'insert')")
    for pub, warned in [("p_warn", True), ("p_inserts", False)]:
        slot = "pubt_" + pub
        with runner.Worker(["--dsn", dsn, "--slot", slot, "--publication", pub, "--create-slot", "--snapshot", "never",
                            "-o", str(tmp_path / f"{pub}.out")], stderr_path=str(tmp_path / f"{pub}.err")) as w:
            assert wait_for(lambda: "streaming slot" in w.stderr_text() or not w.running(), 30), w.stderr_text()
            text = w.stderr_text()
            assert w.terminate() == 0
        line = f'publication "{pub}" carries 1 table without a replica identity: public.no_pk'
        assert (line in text) == warned, (pub, text)
        if warned:
            assert "PRIMARY KEY" in text and "REPLICA IDENTITY FULL" in text, text


def test_permission_denied_gets_a_hint(pgfanout, cluster, appdb, admin):
    dsn, conn = appdb
    dbname = conn.info.dbname
    admin.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pub_app') THEN "
                  "CREATE ROLE pub_app LOGIN REPLICATION; END IF; END $$")
    admin.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO pub_app')
    app_dsn = cluster.dsn(dbname=dbname, user="pub_app")
    r = runner.run_pgfanout(["--dsn", app_dsn, "--slot", "pubt_perm", "--publication", "p_perm",
                             "--create-slot", "--snapshot", "never", "--create-publication"], timeout=30)
    assert r.returncode == 1, r.describe()
    assert "must be superuser" in r.stderr, r.describe()
    assert "FOR ALL TABLES needs a superuser" in r.stderr and "--tables" in r.stderr, r.describe()
    r = runner.run_pgfanout(["--dsn", app_dsn, "--slot", "pubt_perm", "--publication", "p_perm",
                             "--create-slot", "--snapshot", "never", "--create-publication", "--tables", "with_pk"], timeout=30)
    assert r.returncode == 1, r.describe()
    assert "must be owner" in r.stderr and "owns every table in --tables" in r.stderr, r.describe()
    assert publications(conn) == []
    admin.execute(f'REVOKE CREATE ON DATABASE "{dbname}" FROM pub_app')
