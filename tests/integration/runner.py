"""Running pgfanout and talking to the test server: shared by every integration suite.

Everything here is sink-agnostic: a later Kafka or Redis suite runs the same binary with
another --sink and reuses the LSN, slot and session helpers."""
import os
import re
import signal
import subprocess
import time

import psycopg

DEFAULT_BIN = "/work/main/build/pgfanout"

# The walsender session's settings (see the CLI contract); a comparison session uses the
# same ones so that `col::text` is byte-for-byte what pgfanout was sent.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "3",
}

LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


def pgfanout_bin():
    """Returns the binary's path from PGFANOUT_BIN (or the default build path)."""
    return os.path.abspath(os.environ.get("PGFANOUT_BIN", DEFAULT_BIN))


def lsn_to_int(text):
    """Parses 'X/X' into a 64-bit integer."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value):
    """Formats a 64-bit integer as PostgreSQL prints an LSN ('%X/%X')."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def connect(dsn, autocommit=True):
    """Opens a psycopg connection with the walsender's formatting settings."""
    conn = psycopg.connect(dsn, autocommit=autocommit)
    with conn.cursor() as cur:
        for name, value in SESSION_SETTINGS.items():
            cur.execute(f"SET {name} = '{value}'")
    return conn


def scalar(conn, sql, params=None):
    """Runs sql and returns the first column of the first row (or None)."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return None if row is None else row[0]


def current_lsn(conn):
    """Returns pg_current_wal_lsn() as 'X/X' text."""
    return scalar(conn, "SELECT pg_current_wal_lsn()::text")


def slot_info(conn, slot):
    """Returns the slot's row from pg_replication_slots as a dict, or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT slot_name, plugin, slot_type, active, active_pid,"
                    " confirmed_flush_lsn::text, restart_lsn::text"
                    " FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
        if row is None:
            return None
        names = [d.name for d in cur.description]
        return dict(zip(names, row))


def wait_slot_inactive(conn, slot, timeout=15):
    """Waits until no walsender holds the slot (after pgfanout exits); returns its info."""
    deadline = time.time() + timeout
    while True:
        info = slot_info(conn, slot)
        if info is None or not info["active"]:
            return info
        if time.time() > deadline:
            raise AssertionError(f"slot {slot} still active {timeout}s after pgfanout exited: {info}")
        time.sleep(0.05)


def server_objects(conn):
    """Returns (slot names, publication names) on the server: to show nothing was created."""
    with conn.cursor() as cur:
        cur.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1")
        slots = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT pubname FROM pg_publication ORDER BY 1")
        pubs = [r[0] for r in cur.fetchall()]
    return slots, pubs


class RunResult:
    """What one finished pgfanout run left: exit code, stderr text, stdout text."""

    def __init__(self, argv, returncode, stdout, stderr, timed_out):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out

    def describe(self):
        """A short text for assertion messages."""
        tail = self.stderr[-3000:]
        return (f"argv={self.argv!r}\nreturncode={self.returncode} timed_out={self.timed_out}\n"
                f"stderr (tail):\n{tail}")


# The harness's own variables (where the binary and the test jars are): not pgfanout's settings,
# so they are kept from it, which would warn about them as unknown PGFANOUT_* variables.
HARNESS_VARS = ("PGFANOUT_BIN", "PGFANOUT_PYPROTO", "PGFANOUT_KAFKA_CLASSPATH", "PGFANOUT_FLINK_CLASSPATH",
                "PGFANOUT_SRC")


def pgfanout_env(env=None):
    """The environment pgfanout runs with: ours without the harness's variables, plus env."""
    full = {k: v for k, v in os.environ.items() if k not in HARNESS_VARS}
    if env is not None:
        full.update(env)
    return full


def run_pgfanout(args, timeout=60, env=None, stdout_path=None):
    """Runs pgfanout to completion (killing it after timeout s) and returns a RunResult.

    stdout goes to stdout_path when given (large outputs), else is captured as text."""
    argv = [pgfanout_bin()] + list(args)
    full_env = pgfanout_env(env)
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=full_env,
                            stdin=subprocess.DEVNULL)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        stdout, stderr = proc.communicate()
    finally:
        if stdout_path:
            out.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if stdout_path:
        with open(stdout_path, "rb") as f:
            stdout = f.read()
    return RunResult(argv, proc.returncode, (stdout or b"").decode("utf-8", "replace"),
                     (stderr or b"").decode("utf-8", "replace"), timed_out)


class Worker:
    """A pgfanout running in the background; use as a context manager so that it is
    always killed (by its own Popen handle) when the test ends.  wrap is a command prefix
    that execs the binary (e.g. unshare for a private /tmp): the process is still ours."""

    def __init__(self, args, stdout_path=None, stderr_path=None, env=None, wrap=()):
        self.argv = list(wrap) + [pgfanout_bin()] + list(args)
        full_env = pgfanout_env(env)
        self._out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=self._err,
                                     env=full_env, stdin=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    def running(self):
        return self.proc.poll() is None

    def terminate(self, sig=signal.SIGTERM, timeout=30):
        """Sends sig and waits for the exit; returns the exit code, or None if it hung
        (then it has been killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def wait(self, timeout):
        """Waits for exit; returns the exit code, or None if still running (then killed)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self._out, self._err):
            if hasattr(f, "close"):
                f.close()

    def stderr_text(self):
        if not self.stderr_path:
            return ""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def wait_for(predicate, timeout, interval=0.05):
    """Polls predicate() until it returns a true value or timeout s pass; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def healthz_ms(port):
    """Milliseconds one GET /healthz on 127.0.0.1:port took, or None when it failed."""
    import http.client
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        if conn.getresponse().status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return (time.monotonic() - t0) * 1000


def scrape_metrics(port):
    """GET /metrics on 127.0.0.1:port: {sample name with its labels: value text}."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))


def rss_kb(pid):
    """VmRSS of a live process in kB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def is_asan_binary(path):
    """True for a binary built with AddressSanitizer (it then needs larger memory bounds)."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()
