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
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
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
