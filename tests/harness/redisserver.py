"""A throwaway redis-server for tests (Debian's /usr/bin/redis-server).

    server = RedisServer(password="s3cret").start()
    client = server.client()          # a redis.Redis connected as the admin user
    server.kill(); ...; server.restart()
    server.cleanup()

It listens on a free 127.0.0.1 port, with no persistence (a restarted server starts empty,
which is what a cache does), and is stopped by its own pid only.  restart() brings it back
on the same port with the same settings.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import redis

from ports import free_port  # noqa: F401  (re-exported)

REDIS_SERVER = os.environ.get("PGFANOUT_REDIS_SERVER", "/usr/bin/redis-server")



class RedisServer:
    def __init__(self, password=None, acl_user=None, acl_password=None, port=None):
        self.port = port or free_port()
        self.password = password
        self.acl_user = acl_user
        self.acl_password = acl_password
        self.dir = tempfile.mkdtemp(prefix="pgfanout-redis-")
        self.proc = None

    def _args(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log"), "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.acl_user:
            # redis-server joins the words after --user into one ACL rule.
            args += ["--user", self.acl_user, "on", f">{self.acl_password}", "~*", "&*", "+@all"]
        return args

    def start(self, timeout=20):
        """Starts the server and waits until it answers PING; returns self."""
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log")
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within %ss" % timeout)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def client(self, db=0):
        """A redis-py client with admin rights."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, db=db,
                           socket_timeout=10)

    def kill(self):
        """SIGKILLs the server (its data is gone: no persistence)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        """SIGTERMs the server and waits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self):
        """Starts the server again on the same port."""
        self.stop()
        return self.start()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
