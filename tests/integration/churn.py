"""A concurrent insert/update/delete workload for the Kafka robustness tests: several threads,
each committing small transactions on its own id range of two tables, while pgfanout runs.

    c = Churn(dsn, "kill", seed=7, target_changes=100_000, threads=3)
    c.create(conn)            # tables <name>_a and <name>_b
    c.start(); ...; c.stop(); c.join()

Every thread keeps going through a lost connection (a server restart): it reconnects and
carries on; a transaction whose commit was in doubt is whatever the server says it is, which
is why the tests compare against a reference test_decoding slot, not against these counters.
Both tables have `id` as their first column, as kafka_replay.reference_transactions() wants."""
import random
import threading
import time

import psycopg

import runner

ID_SPAN = 10**9  # each thread's ids: [t * ID_SPAN + 1, (t + 1) * ID_SPAN)


class Churn:
    def __init__(self, dsn, name, seed, target_changes, threads=3, pause=0.0, payload=1,
                 max_seconds=120):
        self.dsn = dsn
        self.name = name
        self.seed = seed
        self.target = target_changes
        self.nthreads = threads
        self.pause = pause          # seconds between a thread's transactions
        self.payload = payload      # md5 repeats in the payload column (32 chars each)
        self.max_seconds = max_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.changes = 0            # rows changed by transactions whose COMMIT returned
        self.commits = 0
        self.errors = []            # connection errors survived (text)
        self.fatal = None           # an error that ended a thread
        self.commit_times = []      # (monotonic time, xid) of each acknowledged commit
        self._threads = []

    @property
    def tables(self):
        return [("public", f"{self.name}_a"), ("public", f"{self.name}_b")]

    def create(self, conn):
        conn.execute(f"CREATE TABLE {self.name}_a (id int8 PRIMARY KEY, v text, n int8)")
        conn.execute(f"CREATE TABLE {self.name}_b (id int8 PRIMARY KEY, payload text)")

    def start(self):
        self._t0 = time.monotonic()
        for t in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(t,), daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self):
        self.stop_event.set()

    def join(self, timeout=120):
        for th in self._threads:
            th.join(timeout)
        return not self.alive()

    def alive(self):
        return any(th.is_alive() for th in self._threads)

    def done(self):
        with self.lock:
            return self.changes >= self.target

    def _connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                return runner.connect(self.dsn)
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline or self.stop_event.is_set():
                    raise
                with self.lock:
                    self.errors.append(f"connect: {e}".strip())
                time.sleep(0.2)

    def _run(self, t):
        rng = random.Random(self.seed * 1000 + t)
        a, b = f"{self.name}_a", f"{self.name}_b"
        share = (self.target + self.nthreads - 1) // self.nthreads
        next_id = t * ID_SPAN + 1
        live = []
        done = 0
        conn = None
        try:
            while done < share and not self.stop_event.is_set():
                if time.monotonic() - self._t0 > self.max_seconds:
                    raise RuntimeError(f"churn thread {t} ran out of time ({self.max_seconds} s)")
                if conn is None:
                    conn = self._connect()
                n_ins = rng.randint(5, 30)
                upd = rng.sample(live, min(len(live), rng.randint(0, 15)))
                dele = rng.sample(sorted(set(live) - set(upd)), min(len(live) - len(upd),
                                                                    rng.randint(0, 6)))
                n_b = rng.randint(0, 3)
                try:
                    with conn.transaction():
                        with conn.cursor() as cur:
                            n = 0
                            cur.execute(f"INSERT INTO {a} SELECT g, repeat(md5(g::text), %s), 0"
                                        f" FROM generate_series(%s::int8, %s::int8) g",
                                        (self.payload, next_id, next_id + n_ins - 1))
                            n += cur.rowcount
                            if upd:
                                cur.execute(f"UPDATE {a} SET n = n + 1, v = %s"
                                            f" WHERE id = ANY(%s::int8[])",
                                            (f"u{rng.random()}" * self.payload, sorted(upd)))
                                n += cur.rowcount
                            if dele:
                                cur.execute(f"DELETE FROM {a} WHERE id = ANY(%s::int8[])",
                                            (sorted(dele),))
                                n += cur.rowcount
                            if n_b:
                                cur.execute(f"INSERT INTO {b} SELECT g, repeat('b', %s)"
                                            f" FROM generate_series(%s::int8, %s::int8) g",
                                            (rng.randint(1, 200), next_id, next_id + n_b - 1))
                                n += cur.rowcount
                            cur.execute("SELECT pg_current_xact_id()::text")
                            xid = int(cur.fetchone()[0]) & 0xFFFFFFFF
                except psycopg.OperationalError as e:
                    # In doubt: start over on a fresh connection with fresh ids and rows.
                    with self.lock:
                        self.errors.append(str(e).strip())
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                    next_id += ID_SPAN // 1000
                    live = []
                    time.sleep(0.1)
                    continue
                dead = set(dele)
                live = [i for i in live if i not in dead] + list(range(next_id, next_id + n_ins))
                next_id += n_ins
                done += n
                with self.lock:
                    self.changes += n
                    self.commits += 1
                    self.commit_times.append((time.monotonic(), xid))
                if self.pause:
                    time.sleep(self.pause)
        except Exception as e:
            with self.lock:
                self.fatal = f"thread {t}: {e!r}"
        finally:
            if conn is not None:
                conn.close()
