"""pgfanout's failures: each one exits non-zero with a clear message on stderr and leaves
the server as it was (no slot, no publication created)."""
import pytest

import runner
from pgcluster import PgCluster, free_port

ALL_FLAGS = ["--dsn", "--slot", "--publication", "--create-slot", "--create-publication",
             "--tables", "--sink", "--output", "--endpos", "--status-interval", "--help"]


@pytest.fixture(scope="module")
def admin(admin):
    """conftest's admin connection, with a table and a publication the errors need."""
    admin.execute("CREATE TABLE t (id int4 PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION existing_pub FOR ALL TABLES")
    return admin


@pytest.fixture
def unchanged(admin):
    """Asserts after the test that no slot or publication appeared or vanished."""
    before = runner.server_objects(admin)
    yield
    assert runner.server_objects(admin) == before, "the failed run changed the server"


def run_failing(args, **kw):
    """Runs pgfanout expecting a failure; asserts it ended by itself, non-zero, and said
    something on stderr.  Returns the RunResult."""
    res = runner.run_pgfanout(args, timeout=kw.pop("timeout", 30), **kw)
    assert not res.timed_out, "pgfanout hung instead of failing:\n" + res.describe()
    assert res.returncode != 0, "pgfanout succeeded where it must fail:\n" + res.describe()
    assert res.returncode > 0, "pgfanout died of a signal:\n" + res.describe()
    assert res.stderr.strip(), "no message on stderr:\n" + res.describe()
    return res


def closed_port_dsn(**extra):
    port = free_port()
    parts = f"host=127.0.0.1 port={port} dbname=postgres user=postgres connect_timeout=5"
    for k, v in extra.items():
        parts += f" {k}={v}"
    return port, parts


def test_unreachable_server(pgfanout):
    """A closed port: stderr names host and port and carries libpq's own reason."""
    port, dsn = closed_port_dsn()
    res = run_failing(["--dsn", dsn, "--slot", "s", "--publication", "p", "--create-slot", "--snapshot", "never",
                       "--create-publication"])
    assert "127.0.0.1" in res.stderr, res.describe()
    assert str(port) in res.stderr, res.describe()
    assert "Connection refused" in res.stderr, res.describe()


def test_unreachable_server_from_environment(pgfanout):
    """Without --dsn the PG* variables are used, and the error still names host and port."""
    port = free_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGDATABASE": "postgres",
           "PGUSER": "postgres", "PGCONNECT_TIMEOUT": "5"}
    res = run_failing(["--slot", "s", "--publication", "p"], env=env)
    assert "127.0.0.1" in res.stderr and str(port) in res.stderr, res.describe()
    assert "Connection refused" in res.stderr, res.describe()


def test_password_not_printed_on_connection_failure(pgfanout):
    _, dsn = closed_port_dsn(password="sekrit123")
    res = run_failing(["--dsn", dsn, "--slot", "s", "--publication", "p"])
    assert "sekrit123" not in res.stderr, res.describe()
    assert "sekrit123" not in res.stdout


def test_password_not_printed_on_later_failure(pgfanout, cluster, unchanged):
    """Connected (trust auth ignores the password), then failing on a missing publication."""
    res = run_failing(["--dsn", cluster.dsn(password="sekrit123"), "--slot", "pw_slot",
                       "--publication", "no_such_pub_pw", "--create-slot", "--snapshot", "never"])
    assert "sekrit123" not in res.stderr, res.describe()
    assert "sekrit123" not in res.stdout


def test_wal_level_replica(pgfanout):
    """wal_level=replica: the message says wal_level must be logical and needs a restart;
    nothing is created (CREATE PUBLICATION would succeed there, with only a warning)."""
    c = PgCluster(wal_level="replica")
    c.start()
    try:
        conn = runner.connect(c.dsn())
        before = runner.server_objects(conn)
        res = run_failing(["--dsn", c.dsn(), "--slot", "wl_slot", "--publication", "wl_pub",
                           "--create-slot", "--snapshot", "never", "--create-publication"])
        low = res.stderr.lower()
        for word in ("wal_level", "logical", "restart"):
            assert word in low, f"stderr lacks {word!r}:\n" + res.describe()
        assert runner.server_objects(conn) == before, "the failed run changed the server"
        conn.close()
    finally:
        c.stop()


def test_missing_publication(pgfanout, cluster, unchanged):
    """A missing publication without --create-publication: the message gives the SQL to
    create it, and the slot is not created even though --create-slot was given."""
    res = run_failing(["--dsn", cluster.dsn(), "--slot", "mp_slot", "--publication",
                       "no_such_pub", "--create-slot", "--snapshot", "never"])
    assert "CREATE PUBLICATION" in res.stderr, res.describe()
    assert "no_such_pub" in res.stderr, res.describe()


def test_role_without_replication(pgfanout, cluster, admin, unchanged):
    admin.execute("CREATE ROLE norepl LOGIN")
    try:
        res = run_failing(["--dsn", cluster.dsn(user="norepl"), "--slot", "nr_slot",
                           "--publication", "existing_pub", "--create-slot", "--snapshot", "never",
                           "--create-publication"])
        assert "REPLICATION" in res.stderr, res.describe()
        assert "norepl" in res.stderr, res.describe()
    finally:
        admin.execute("DROP ROLE norepl")


def test_unknown_flag(pgfanout, cluster, unchanged):
    res = run_failing(["--dsn", cluster.dsn(), "--slot", "uf_slot", "--publication", "uf_pub",
                       "--create-slot", "--snapshot", "never", "--create-publication", "--bogus-flag"])
    assert "--bogus-flag" in res.stderr, res.describe()


def test_slot_with_another_plugin(pgfanout, cluster, admin):
    """A slot made for test_decoding: the error names that plugin; the slot is untouched."""
    admin.execute("SELECT pg_create_logical_replication_slot('td_slot', 'test_decoding')")
    try:
        before_objects = runner.server_objects(admin)
        before = runner.slot_info(admin, "td_slot")
        res = run_failing(["--dsn", cluster.dsn(), "--slot", "td_slot", "--publication",
                           "existing_pub", "--create-slot", "--snapshot", "never"])
        assert "test_decoding" in res.stderr, res.describe()
        runner.wait_slot_inactive(admin, "td_slot")
        after = runner.slot_info(admin, "td_slot")
        assert (after["plugin"], after["confirmed_flush_lsn"]) == \
            (before["plugin"], before["confirmed_flush_lsn"])
        assert runner.server_objects(admin) == before_objects
    finally:
        admin.execute("SELECT pg_drop_replication_slot('td_slot')")


@pytest.mark.parametrize("value", ["garbage", "0/XYZ", "0/16B3748zz", "1/2/3", ""])
def test_bad_endpos(pgfanout, cluster, unchanged, value):
    """An --endpos that is not an LSN is refused before anything is done on the server."""
    res = run_failing(["--dsn", cluster.dsn(), "--slot", "be_slot", "--publication", "be_pub",
                       "--create-slot", "--snapshot", "never", "--create-publication", "--endpos", value])
    assert "endpos" in res.stderr.lower(), res.describe()


def test_help(pgfanout):
    res = runner.run_pgfanout(["--help"], timeout=10)
    assert not res.timed_out and res.returncode == 0, res.describe()
    text = res.stdout + res.stderr
    missing = [f for f in ALL_FLAGS if f not in text]
    assert not missing, f"--help does not mention {missing}:\n{text}"
