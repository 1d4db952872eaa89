"""Shared fixtures for the integration suites: the binary, and the harness on sys.path."""
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, HERE)

import runner  # noqa: E402
from pgcluster import PgCluster  # noqa: E402,F401  (re-exported for the suites)


@pytest.fixture(scope="session")
def pgfanout():
    """The pgfanout binary's path; the suite fails (not skips) when it is missing."""
    path = runner.pgfanout_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"pgfanout binary not found or not executable at {path}"
                    " (build it, or set PGFANOUT_BIN)")
    return path


def start_cluster(**kw):
    """Starts a PgCluster; the caller stops it."""
    return PgCluster(**kw).start()


@pytest.fixture(scope="module")
def cluster(request):
    """A PostgreSQL 15 cluster for the module, with the module's PG_CONF settings if it has
    any; a suite that needs more than settings defines its own."""
    c = PgCluster(extra_conf=getattr(request.module, "PG_CONF", None))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    """A superuser connection to the module's cluster."""
    conn = runner.connect(cluster.dsn())
    yield conn
    conn.close()


@pytest.fixture
def db(cluster):
    """A fresh connection per test (a PostgreSQL restart breaks older ones)."""
    conn = runner.connect(cluster.dsn())
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def broker():
    """A Kafka broker (KRaft, one node) for the module, stopped by its own handle afterwards;
    a suite with needs of its own defines its own."""
    from kafkabroker import KafkaBroker
    b = KafkaBroker()
    b.start()
    yield b
    b.cleanup()


@pytest.fixture(scope="module")
def pb2():
    """The generated pgfanout.v1 protobuf classes (the Kafka suites decode records with them)."""
    import kafka_replay
    return kafka_replay.event_pb2()


@pytest.fixture
def rserver():
    """A redis-server of the test's own, stopped by pid afterwards (thawed first if a test
    left it SIGSTOPped)."""
    from redisserver import RedisServer
    server = RedisServer().start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.cleanup()


@pytest.fixture
def rs(rserver):
    """The same redis-server under the short name the fault and service suites use."""
    return rserver
