"""A throwaway PostgreSQL 15 cluster for tests: initdb in a temp dir, wal_level=logical,
a free 127.0.0.1 port, stopped by its own pid.  Runs the server as the `postgres` user when
we are root, because initdb refuses to run as root."""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from ports import free_port  # noqa: F401  (re-exported)

PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")



def append_conf(datadir, conf):
    """Appends settings to a data directory's postgresql.auto.conf (later lines win)."""
    with open(os.path.join(datadir, "postgresql.auto.conf"), "a") as f:
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")


class PgCluster:
    """One cluster; start() then stop().  dsn() gives a libpq DSN for a database and user."""

    def __init__(self, wal_level="logical", extra_conf=None):
        self.wal_level = wal_level
        self.extra_conf = extra_conf or {}
        self.port = free_port()
        self.proc = None
        self.root = tempfile.mkdtemp(prefix="pgfanout-pg-")
        self.datadir = os.path.join(self.root, "data")
        self.logfile = os.path.join(self.root, "server.log")
        self._user = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o755)
        self.superuser = self._user or pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, argv, **kw):
        return subprocess.run(argv, user=self._user, check=True, **kw)

    def start(self):
        """Runs initdb and starts the server; returns once it accepts connections."""
        self._run([f"{PGBIN}/initdb", "-D", self.datadir, "-A", "trust", "-U",
                   self.superuser, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": self.wal_level,
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "128MB",
            "logging_collector": "off",
        }
        conf.update(self.extra_conf)
        append_conf(self.datadir, conf)
        self._spawn()
        return self

    def dsn(self, dbname="postgres", user=None, **extra):
        """Returns a key=value DSN for 127.0.0.1 on this cluster's port."""
        parts = {"host": "127.0.0.1", "port": str(self.port), "dbname": dbname,
                 "user": user or self.superuser}
        parts.update({k: str(v) for k, v in extra.items()})
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def restart(self):
        """Stops the server by its pid (fast shutdown) and starts it again, same data."""
        self.stop(remove=False)
        self._spawn()

    def _spawn(self):
        """Starts postgres in its own session and waits until it accepts connections."""
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen([f"{PGBIN}/postgres", "-D", self.datadir],
                                     user=self._user, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start:\n" + open(self.logfile).read())
            r = subprocess.run([f"{PGBIN}/pg_isready", "-q", "-h", "127.0.0.1",
                                "-p", str(self.port)])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start in 60 s")

    def stop(self, remove=True):
        """Stops the server we started, by its pid, then removes its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


class PgStandby(PgCluster):
    """A streaming hot standby of a running PgCluster: `pg_basebackup -R -X stream` from the
    primary into a data directory of its own, then started on its own port and socket
    directory, by its own pid (stop() as for a PgCluster).  With slot, pg_basebackup also
    creates that physical slot on the primary (-C -S), so the primary keeps the WAL the
    standby has not received.  promote() makes it a primary of its own (a failover).
    With application_name, the standby's primary_conninfo (written by -R) carries it, so the
    primary's pg_stat_replication shows the standby under that name."""

    def __init__(self, primary, slot=None, extra_conf=None, application_name=None):
        super().__init__(wal_level=primary.wal_level, extra_conf=extra_conf)
        self.primary = primary
        self.slot = slot
        self.application_name = application_name

    def start(self):
        """Takes the base backup and starts the standby; returns once it accepts (read-only)
        connections."""
        argv = [f"{PGBIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                "-U", self.primary.superuser, "-D", self.datadir, "-R", "-X", "stream",
                "-c", "fast", "--no-sync"]
        if self.slot:
            argv += ["-C", "-S", self.slot]
        if self.application_name:
            # -R copies the connection's options into primary_conninfo, application_name too.
            argv += ["-d", f"application_name={self.application_name}"]
        r = subprocess.run(argv, user=self._user, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed ({r.returncode}):\n{r.stdout}")
        # The copy carries the primary's postgresql.auto.conf (its port and socket directory)
        # and -R's primary_conninfo: the lines appended here come later, so they win.
        conf = {"port": str(self.port), "unix_socket_directories": f"'{self.root}'",
                "hot_standby": "on"}
        conf.update(self.extra_conf)
        append_conf(self.datadir, conf)
        self._spawn()
        return self

    def _sql(self, sql):
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return conn.execute(sql).fetchone()[0]

    def replay_lsn(self):
        """pg_last_wal_replay_lsn() as 'X/X' text (None before anything was replayed)."""
        return self._sql("SELECT pg_last_wal_replay_lsn()::text")

    def wait_replayed(self, lsn, timeout=60):
        """Waits until the standby has replayed the primary's WAL up to lsn ('X/X')."""
        def as_int(text):
            hi, lo = text.split("/")
            return (int(hi, 16) << 32) | int(lo, 16)
        want = as_int(lsn)
        deadline = time.time() + timeout
        while True:
            got = self.replay_lsn()
            if got is not None and as_int(got) >= want:
                return got
            if time.time() > deadline:
                raise RuntimeError(f"standby replayed only up to {got}, not {lsn}, in {timeout} s")
            time.sleep(0.05)

    def promote(self, timeout=60):
        """SELECT pg_promote(): ends recovery and waits until the standby takes writes;
        returns the LSN where its new timeline starts to be written ('X/X')."""
        if not self._sql(f"SELECT pg_promote(true, {int(timeout)})"):
            raise RuntimeError(f"standby was not promoted within {timeout} s")
        if self._sql("SELECT pg_is_in_recovery()"):
            raise RuntimeError("standby still in recovery after pg_promote()")
        return self._sql("SELECT pg_current_wal_lsn()::text")
