"""The event loop never blocks: a server that stops answering on one of pgfanout's side
connections holds up neither the stream nor /healthz.

- The heartbeat's backend is frozen (SIGSTOP) for 10 s while changes flow: every change is
  still delivered within a couple of seconds, and /healthz answers within 100 ms throughout.
  Before the loop was made non-blocking, the heartbeat's PQexec held the whole process.
- PostgreSQL accepts the TCP connection but never answers: /healthz keeps answering while
  pgfanout waits, and SIGTERM during that startup wait is a clean exit 0."""
import json
import os
import signal
import socket
import threading
import time

import pytest

import runner
from runner import healthz_ms, wait_for
from pgcluster import free_port


def inserted_ids(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        # Whole lines only: the last one may still be being written.
        return {json.loads(l)["after"]["id"] for l in f if l.endswith("\n") and '"insert"' in l}


def heartbeat_pid(conn):
    """The pid of pgfanout's heartbeat backend: its plain (not walsender) connection."""
    return runner.scalar(conn, "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgfanout'"
                               " AND backend_type = 'client backend'")


def freeze_idle(conn, pid):
    """SIGSTOPs backend pid between two of its heartbeats; returns True once it is stopped idle.
    Stopped mid-statement it could hold a lock everyone needs (WALWriteLock, in a WAL flush),
    which would freeze the whole cluster, not just pgfanout's heartbeat: then it is let go and
    False returned, for the caller to try again."""
    if runner.scalar(conn, "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)) != "idle":
        return False
    os.kill(pid, signal.SIGSTOP)
    if runner.scalar(conn, "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)) == "idle":
        return True
    os.kill(pid, signal.SIGCONT)
    return False


def test_frozen_heartbeat_backend_holds_up_nothing(pgfanout, cluster, admin, tmp_path):
    admin.execute("CREATE TABLE loop_t (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION loop_pub FOR TABLE loop_t")
    port = free_port()
    out = str(tmp_path / "loop.out")
    with runner.Worker(["--dsn", cluster.dsn(), "--slot", "loop_slot", "--create-slot", "--snapshot", "never", "--publication", "loop_pub",
                        "-o", out, "--status-interval", "0.2", "--heartbeat-interval", "0.3",
                        "--http-listen", str(port)], stderr_path=str(tmp_path / "loop.err")) as w:
        assert wait_for(lambda: heartbeat_pid(admin) or not w.running(), 30), w.stderr_text()[-3000:]
        pid = heartbeat_pid(admin)
        assert pid, w.stderr_text()[-3000:]
        assert wait_for(lambda: freeze_idle(admin, pid), 30), "the heartbeat's backend was never idle"
        try:
            worst, late, n = 0.0, [], 0
            t_end = time.monotonic() + 10
            while time.monotonic() < t_end:
                n += 1
                admin.execute("INSERT INTO loop_t VALUES (%s)", (n,))
                t_ins = time.monotonic()
                while n not in inserted_ids(out):
                    ms = healthz_ms(port)
                    assert ms is not None, "/healthz did not answer:\n" + w.stderr_text()[-3000:]
                    worst = max(worst, ms)
                    if time.monotonic() - t_ins > 2:
                        late.append(n)
                        break
                    time.sleep(0.02)
                ms = healthz_ms(port)
                assert ms is not None
                worst = max(worst, ms)
            assert not late, f"changes {late} took over 2 s while the heartbeat's backend was frozen"
            assert worst < 100, f"/healthz took {worst:.0f} ms while the heartbeat's backend was frozen"
            assert n >= 20, n
            assert w.running(), w.stderr_text()[-3000:]
        finally:
            os.kill(pid, signal.SIGCONT)
        admin.execute("INSERT INTO loop_t VALUES (100000)")
        assert wait_for(lambda: 100000 in inserted_ids(out), 10)
        assert w.terminate() == 0


@pytest.fixture
def silent_server():
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


def test_silent_server_holds_up_neither_healthz_nor_sigterm(pgfanout, silent_server, tmp_path):
    port = free_port()
    with runner.Worker(["--dsn", f"host=127.0.0.1 port={silent_server} dbname=x user=x", "--http-listen", str(port)],
                       stderr_path=str(tmp_path / "silent.err")) as w:
        assert wait_for(lambda: healthz_ms(port) is not None or not w.running(), 10), w.stderr_text()
        worst = max(healthz_ms(port) or 1e9 for _ in range(40))
        assert worst < 100, f"/healthz took {worst:.0f} ms while connecting"
        assert w.running()
        assert w.terminate(timeout=5) == 0, w.stderr_text()[-3000:]
        assert "stopped before streaming" in w.stderr_text()
