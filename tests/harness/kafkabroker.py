"""A throwaway single-node Apache Kafka broker for tests, in KRaft mode (broker and controller
in one JVM), run from the jars that scripts/fetch-kafka.sh resolves from Maven.

    broker = KafkaBroker().start()        # or: with KafkaBroker() as broker: ...
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    ...
    records = consume_all(broker.bootstrap, ["topic"], timeout=30)
    broker.cleanup()

The broker listens on free 127.0.0.1 ports, keeps its data and log in a temp dir, and is
stopped by its own pid only.  stop()/kill() keep the data; restart() brings the same broker
back on the same ports; cleanup() stops it and removes the temp dir.
"""
import atexit
import base64
import collections
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from ports import free_port  # noqa: F401  (re-exported)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FETCH_SCRIPT = os.path.join(REPO, "scripts", "fetch-kafka.sh")

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""

# Startup-friendly JVM flags: a small heap, C1 only (the broker lives for one test module).
JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Xss512k", "-Djava.awt.headless=true", "-Dlog4j2.shutdownHookEnabled=false"]



def _default_classpath_file():
    return os.environ.get("PGFANOUT_KAFKA_CLASSPATH") or os.path.join(REPO, "build",
                                                                      "kafka.classpath")


def _read_classpath(path):
    """The classpath in the file, or None when the file or one of its jars is missing."""
    try:
        with open(path) as f:
            cp = f.read().strip()
    except FileNotFoundError:
        return None
    jars = [j for j in cp.split(os.pathsep) if j]
    if not jars or not all(os.path.isfile(j) for j in jars):
        return None
    return os.pathsep.join(jars)


def _cds_archive(classpath_file, classpath, java):
    """Where the class-data-sharing archive of this classpath and JVM lives (beside the
    classpath file), or None when PGFANOUT_KAFKA_CDS=0.  A broker started while it is missing
    records one when it stops cleanly; later JVMs map it and start about 1 s faster.  A stale
    or broken archive only makes the JVM warn in the log and load classes the usual way."""
    if os.environ.get("PGFANOUT_KAFKA_CDS", "1") == "0":
        return None
    real = os.path.realpath(shutil.which(java) or java)
    try:
        stamp = f"{real}:{os.stat(real).st_mtime_ns}"
    except OSError:
        return None
    key = hashlib.sha1(f"{classpath}\n{stamp}".encode()).hexdigest()[:12]
    path = os.path.abspath(classpath_file or _default_classpath_file())
    return f"{path}.{key}.jsa"


def fetched_classpath(path, fetch_script):
    """The Java classpath in the file at path, running fetch_script (scripts/fetch-*.sh, which
    resolves a pom through Maven) to write it when it or a jar it names is missing.  One
    fetch at a time (a lock beside the file), e.g. under ctest -j."""
    cp = _read_classpath(path)
    if cp:
        return cp
    os.makedirs(os.path.dirname(path), exist_ok=True)
    name = os.path.relpath(fetch_script, REPO)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cp = _read_classpath(path)
        if cp:
            return cp
        r = subprocess.run(["bash", fetch_script, path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{name} failed ({r.returncode}):\n{r.stdout}")
    cp = _read_classpath(path)
    if not cp:
        raise RuntimeError(f"{name} left no usable classpath in {path}")
    return cp


def load_classpath(classpath_file=None):
    """Returns the broker's Java classpath, running scripts/fetch-kafka.sh to write the
    classpath file when it (or a jar it names) is missing."""
    return fetched_classpath(os.path.abspath(classpath_file or _default_classpath_file()), FETCH_SCRIPT)


class KafkaBroker:
    """One single-node KRaft broker.  start() formats its storage and starts it; stop()/kill()
    end the process (data kept); restart() starts it again, same ports and data; cleanup()
    stops it and removes the temp dir.  Also a context manager (cleanup() on exit)."""

    def __init__(self, classpath_file=None, num_partitions=3, extra_conf=None,
                 start_timeout=60):
        self.classpath_file = classpath_file
        self.num_partitions = num_partitions
        self.extra_conf = dict(extra_conf or {})
        self.start_timeout = start_timeout
        self.java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") \
            if os.environ.get("JAVA_HOME") else "java"
        self.port = None
        self.controller_port = None
        self.root = None
        self.proc = None
        self.cluster_id = None
        self._classpath = None
        self._cds = None
        self._cds_dump = None
        self._formatted = False
        self._atexit_registered = False

    # -- paths and properties -------------------------------------------------------------

    @property
    def bootstrap(self):
        """bootstrap.servers for clients: "127.0.0.1:PORT"."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    @property
    def datadir(self):
        return os.path.join(self.root, "data")

    @property
    def logfile(self):
        """The broker's stdout/stderr (its log4j2 output), appended to across restarts."""
        return os.path.join(self.root, "broker.log")

    @property
    def config_file(self):
        return os.path.join(self.root, "server.properties")

    def log_tail(self, lines=60):
        """The log's ERROR/FATAL lines (the first 20), then its last lines."""
        try:
            with open(self.logfile, errors="replace") as f:
                errors, tail = [], collections.deque(maxlen=lines)
                for line in f:
                    if len(errors) < 20 and (" ERROR " in line or " FATAL " in line):
                        errors.append(line)
                    tail.append(line)
        except (OSError, TypeError):
            return "(no broker log)"
        head = "errors:\n" + "".join(errors) + "last lines:\n" if errors else ""
        return head + "".join(tail)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self):
        """Picks ports, writes the config, formats the storage, starts the broker and returns
        self once a librdkafka client gets metadata from it.  Raises with the log tail if it
        does not come up within start_timeout seconds."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("broker already running")
        if self._classpath is None:
            self._classpath = load_classpath(self.classpath_file)
            self._cds = _cds_archive(self.classpath_file, self._classpath, self.java)
        fresh = self.root is None
        try:
            if fresh:
                self.root = tempfile.mkdtemp(prefix="pgfanout-kafka-")
                self.port = free_port()
                self.controller_port = free_port()
                while self.controller_port == self.port:
                    self.controller_port = free_port()
                self._write_config()
            if not self._formatted:
                self._format()
            self._spawn()
        except BaseException:
            if fresh:  # the error carries the log tail; leave no temp dir behind
                self.cleanup()
            raise
        return self

    def restart(self):
        """Stops the broker if it runs, then starts it again: same ports, same data."""
        if self.root is None:
            raise RuntimeError("broker was never started")
        self.stop()
        self._spawn()
        return self

    def stop(self, timeout=30):
        """SIGTERM to our broker's pid (a clean shutdown), SIGKILL after timeout seconds.
        Keeps the data dir."""
        p = self.proc
        clean = False
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
                clean = True
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.proc = None
        self._keep_cds_dump(clean)

    def kill(self):
        """SIGKILL to our broker's pid: a crash.  Keeps the data dir."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        self.proc = None
        self._keep_cds_dump(False)

    def cleanup(self):
        """Stops the broker and removes its temp dir."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self._formatted = False

    def create_topics(self, *names, partitions=None, timeout=30):
        """Creates topics (num_partitions each unless partitions is given) and waits until
        they exist.  Optional: topics are auto-created on first use too, but librdkafka then
        spends about 1 s before its first produce to one."""
        from confluent_kafka.admin import AdminClient, NewTopic
        from confluent_kafka import KafkaError
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(n, partitions or self.num_partitions, 1) for n in names],
            operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout)
            except Exception as e:  # KafkaException carrying a KafkaError
                err = e.args[0] if e.args else None
                if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # -- internals ------------------------------------------------------------------------

    def _write_config(self):
        conf = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},"
                          f"CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.datadir,
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the restarted broker cannot register until the controller has
            # fenced its old incarnation: 9 s by default, ~3 s with these.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "log.flush.interval.messages": "9223372036854775807",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
        }
        conf.update({k: str(v) for k, v in self.extra_conf.items()})
        with open(self.config_file, "w") as f:
            for k, v in conf.items():
                f.write(f"{k}={v}\n")
        with open(os.path.join(self.root, "log4j2.properties"), "w") as f:
            f.write(LOG4J2_PROPERTIES)

    def _java(self, main, *args, record_cds=False):
        cds = []
        if self._cds and os.path.isfile(self._cds):
            cds = [f"-XX:SharedArchiveFile={self._cds}"]
        elif self._cds and record_cds:
            self._cds_dump = os.path.join(self.root, "classes.jsa")
            cds = [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]
        return [self.java, *JVM_OPTS, *cds,
                f"-Dlog4j2.configurationFile={os.path.join(self.root, 'log4j2.properties')}",
                "-cp", self._classpath, main, *args]

    def _format(self):
        """kafka.tools.StorageTool format with a random cluster id (static quorum, so no
        --standalone)."""
        self.cluster_id = _random_cluster_id()
        r = subprocess.run(self._java("kafka.tools.StorageTool", "format",
                                      f"--cluster-id={self.cluster_id}",
                                      f"--config={self.config_file}"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(self.logfile, "a") as f:
            f.write(r.stdout)
        if r.returncode != 0:
            raise RuntimeError(f"kafka storage format failed ({r.returncode}):\n{r.stdout}")
        self._formatted = True

    def _spawn(self):
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", self.config_file,
                                                    record_cds=True),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, cwd=self.root)
        if not self._atexit_registered:
            atexit.register(self.kill)  # never leave a broker behind a crashed test run
            self._atexit_registered = True
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _keep_cds_dump(self, clean):
        """Moves the archive a cleanly stopped JVM wrote into place (atomically; when two
        brokers race, either archive is as good)."""
        dump, self._cds_dump = self._cds_dump, None
        if dump is None:
            return
        try:
            if clean and os.path.getsize(dump) > 0:
                os.replace(dump, self._cds)
            else:
                os.unlink(dump)
        except OSError:
            pass

    def _wait_ready(self):
        """Waits for the port to accept connections, then for metadata naming our broker."""
        from confluent_kafka.admin import AdminClient
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.start_timeout

        def check_alive():
            if self.proc.poll() is not None:
                raise RuntimeError(f"kafka exited with {self.proc.returncode} at start; "
                                   f"broker log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kafka did not get ready in {self.start_timeout} s; "
                                   f"broker log:\n{self.log_tail()}")

        while True:
            check_alive()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        admin = AdminClient({"bootstrap.servers": self.bootstrap,
                             "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
                             "log_level": 0})
        while True:
            check_alive()
            try:
                md = admin.list_topics(timeout=2)
                if 1 in md.brokers:
                    break
            except KafkaException:
                pass
            time.sleep(0.05)
        self._warm_idempotence(deadline)

    def _warm_idempotence(self, deadline):
        """The broker allocates producer ids on the first InitProducerId after it starts, and
        answers that one with COORDINATOR_LOAD_IN_PROGRESS, which costs an idempotent
        producer a 0.5-1 s retry.  One throwaway producer takes that hit here, only until the
        broker has seen its request; best effort."""
        import logging
        from confluent_kafka import Producer

        seen = []

        class Catch(logging.Handler):
            def emit(self, record):
                msg = record.getMessage()
                if "Acquired PID" in msg or "Failed to acquire PID" in msg:
                    seen.append(msg)

        logger = logging.getLogger(f"pgfanout.kafkabroker.warm.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = Catch()
        logger.addHandler(handler)
        try:
            p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                          "debug": "eos", "logger": logger, "log_level": 7})
            until = min(deadline, time.monotonic() + 5)
            while not seen and time.monotonic() < until:
                p.poll(0.02)
            if seen and "Failed" in seen[0]:
                time.sleep(0.05)  # the allocation is local to this JVM: milliseconds
            del p
        finally:
            logger.removeHandler(handler)


def _random_cluster_id():
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars), not
    starting with '-' (as Kafka's own Uuid.randomUuid() ensures)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


Record = collections.namedtuple(
    "Record", "topic partition offset key value headers timestamp")
Record.__doc__ = """One consumed message.  key/value are bytes or None; headers is a list of
(name, bytes-or-None) pairs in their order ([] when none); timestamp is (type, ms)."""


def consume_all(bootstrap, topics, timeout=30, config=None):
    """Returns every message of the given topics, from the beginning up to the high watermarks
    read when the call starts, as Records sorted by (topic, partition, offset).

    Uses a confluent_kafka.Consumer with a unique group id that commits nothing and is
    assigned all partitions directly.  A topic that does not exist yields no records.
    Raises TimeoutError if the end of some partition is not reached within timeout seconds.
    Reads committed data only (librdkafka's default isolation.level=read_committed)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    if isinstance(topics, str):
        topics = [topics]
    deadline = time.monotonic() + timeout
    conf = {"bootstrap.servers": bootstrap,
            "group.id": f"pgfanout-test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "reconnect.backoff.max.ms": 500}
    conf.update(config or {})
    consumer = Consumer(conf)
    try:
        # Partitions and their high watermarks, retried while a new topic gets its leaders.
        ends = {}
        for topic in topics:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"consume_all: no metadata/watermarks for {topic!r}")
                try:
                    md = consumer.list_topics(topic, timeout=min(left, 5))
                    tmd = md.topics.get(topic)
                    if tmd is None or (tmd.error is not None and tmd.error.code() in (
                            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)):
                        break  # no such topic: nothing to read
                    if tmd.error is not None:
                        raise KafkaException(tmd.error)
                    for p in tmd.partitions:
                        lo, hi = consumer.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=min(left, 5))
                        ends[(topic, p)] = (lo, hi)
                    break
                except KafkaException:
                    time.sleep(0.1)
        pending = {tp for tp, (lo, hi) in ends.items() if hi > lo}
        if not pending:
            return []
        consumer.assign([TopicPartition(t, p, ends[(t, p)][0]) for t, p in sorted(pending)])
        records = []
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"consume_all: did not reach the end of {sorted(pending)} in {timeout} s "
                    f"({len(records)} records read)")
            msg = consumer.poll(min(left, 0.5))
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if tp in pending and msg.offset() >= ends[tp][1]:
                        pending.discard(tp)
                    continue
                if err.retriable() or err.code() in (KafkaError._TRANSPORT,
                                                     KafkaError._ALL_BROKERS_DOWN):
                    continue
                raise KafkaException(err)
            if tp not in ends or msg.offset() >= ends[tp][1]:
                continue  # written after we started: not ours to return
            records.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                  msg.value(), list(msg.headers() or []), msg.timestamp()))
            if msg.offset() >= ends[tp][1] - 1:
                pending.discard(tp)
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records
    finally:
        consumer.close()
