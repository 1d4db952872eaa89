"""The configuration system: settings from a YAML file (--config or PGFANOUT_CONFIG), from
PGFANOUT_* environment variables and from flags, with flags > environment > file > defaults;
`--check-config` printing the effective settings with where each came from, secrets redacted;
errors that name the key, the line (or the variable or flag) and what is allowed; and two
real runs configured by a file alone and by the environment alone.

Every pgfanout here runs with an environment stripped of PGFANOUT_* and PG* variables, so
that what the test sets is all pgfanout sees.  Expected values are written out from the
README, --help and pgfanout.example.yaml, never read back from pgfanout."""
import json
import os
import re
import socket
import subprocess

import pytest

import runner
from ports import free_port

try:
    import yaml
except ImportError:  # the example test falls back to a regex
    yaml = None

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(REPO, "pgfanout.example.yaml")


# --- running pgfanout -------------------------------------------------------------------

def clean_env(extra=None):
    """The test process's environment without PGFANOUT_* and PG* variables, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGFANOUT_", "PG"))}
    env.update(extra or {})
    return env


def run(args, env=None, timeout=30):
    """Runs pgfanout with exactly the given PGFANOUT_*/PG* variables; returns a RunResult."""
    argv = [runner.pgfanout_bin()] + list(args)
    try:
        p = subprocess.run(argv, env=clean_env(env), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
        return runner.RunResult(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
                                p.stderr.decode("utf-8", "replace"), False)
    except subprocess.TimeoutExpired as e:
        return runner.RunResult(argv, None, (e.stdout or b"").decode("utf-8", "replace"),
                                (e.stderr or b"").decode("utf-8", "replace"), True)


def closed_port():
    return free_port()


def write(tmp_path, text, name="pgfanout.yaml"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def build_yaml(settings):
    """YAML text for {"source.slot": raw, "sinks": raw, ...}; raw is written verbatim."""
    sections, top = {}, []
    for key, raw in settings.items():
        if "." in key:
            sec, sub = key.split(".", 1)
            sections.setdefault(sec, []).append(f"  {sub}: {raw}")
        else:
            top.append(f"{key}: {raw}")
    lines = ["# written by test_config.py"]
    for sec, body in sections.items():
        lines.append(f"{sec}:")
        lines.extend(body)
    lines.extend(top)
    return "\n".join(lines) + "\n"


def line_of(text, marker):
    """The 1-based line of the only line of text containing marker."""
    found = [n for n, line in enumerate(text.split("\n"), 1) if marker in line]
    assert len(found) == 1, (marker, found)
    return found[0]


# --- reading --check-config output -------------------------------------------------------

ENTRY_RE = re.compile(r'^(?P<indent> *)(?P<key>[a-z_]+):(?: (?P<value>.*?))?(?:  # (?P<source>[^"]*))?$')
ITEM_RE = re.compile(r'^    - (?P<item>".*")$')


def scalar(raw):
    """Decodes one printed value: null, true/false, "quoted" (only \\" and \\\\ escaped),
    [a, b], integers and decimals; anything else stays text (django: on)."""
    if raw is None or raw == "":
        return None
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return json.loads(raw)
    if raw.startswith("[") and raw.endswith("]"):
        return [w.strip() for w in raw[1:-1].split(",") if w.strip()]
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d*(e[+-]?\d+)?|-?\d+e[+-]?\d+", raw):
        return float(raw)
    return raw


class Effective:
    """--check-config's output: path -> (value, source comment or None); kafka.conf a list."""

    def __init__(self, text):
        self.text = text
        self.entries = {}
        self.conf = None
        section = None
        for line in text.split("\n"):
            if not line or line.startswith("#"):
                continue
            m = ITEM_RE.match(line)
            if m and section == "kafka":
                self.conf.append(json.loads(m.group("item")))
                continue
            m = ENTRY_RE.match(line)
            assert m, f"unexpected line in --check-config output: {line!r}"
            key, value, source = m.group("key"), m.group("value"), m.group("source")
            if not m.group("indent"):
                if value is None:
                    section = key
                    continue
                section = None
                path = key
            else:
                assert section, f"indented line outside a section: {line!r}"
                path = f"{section}.{key}"
                if path == "kafka.conf":
                    assert value is None and source is None, line
                    self.conf = []
                    continue
            assert path not in self.entries, f"{path} printed twice"
            self.entries[path] = (scalar(value), source)

    def value(self, path):
        assert path in self.entries, f"{path} missing from --check-config output:\n{self.text}"
        return self.entries[path][0]

    def source(self, path):
        assert path in self.entries, f"{path} missing from --check-config output:\n{self.text}"
        return self.entries[path][1]


def check(args=(), env=None):
    """Runs --check-config expecting success; returns Effective."""
    res = run(list(args) + ["--check-config"], env=env)
    assert not res.timed_out and res.returncode == 0, res.describe()
    return Effective(res.stdout)


def check_fails(args=(), env=None, code=2):
    """Runs --check-config expecting exit 2 and nothing on stdout; returns the stderr text."""
    res = run(list(args) + ["--check-config"], env=env)
    assert not res.timed_out, res.describe()
    assert res.returncode == code, res.describe()
    assert res.stdout == "", "an invalid configuration still printed settings:\n" + res.stdout
    assert res.stderr.strip(), res.describe()
    return res.stderr


def redis_keys_printed(text):
    """The keys of the printed redis: section, in order."""
    keys, inside = [], False
    for line in text.split("\n"):
        if not line.startswith(" "):
            inside = line == "redis:"
            continue
        if inside:
            keys.append(line.strip().split(":", 1)[0])
    return keys


def dsn_parts(printed):
    """The printed (redacted) DSN as {keyword: value}."""
    return dict(tok.split("=", 1) for tok in printed.split())


def parse_bytes(text):
    """max_inflight_bytes' syntax per --help: a count with an optional k, M or G suffix (the
    suffix in either case)."""
    mult = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}
    return int(text[:-1]) * mult[text[-1]] if text[-1] in mult else int(text)


def norm_lsn(text):
    return runner.int_to_lsn(runner.lsn_to_int(text))


# --- 1. --check-config: no connection, defaults, precedence -------------------------------

def test_check_config_connects_to_nothing(pgfanout, tmp_path):
    """A DSN at a listening socket (from file, environment and flag in turn): --check-config
    exits 0 at once and the socket never sees a connection; at a closed port, nothing fails."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        dsn = f"host=127.0.0.1 port={port} dbname=app user=alice connect_timeout=3"
        cfg = write(tmp_path, build_yaml({"source.dsn": json.dumps(dsn)}))
        for args, env in ((["--config", cfg], None), ([], {"PGFANOUT_SOURCE_DSN": dsn}),
                          (["--dsn", dsn], None)):
            res = run(args + ["--check-config"], env=env, timeout=10)
            assert res.returncode == 0 and not res.timed_out, res.describe()
            assert f"port={port}" in res.stdout, res.stdout
            with pytest.raises(BlockingIOError):
                conn, _ = listener.accept()
                conn.close()
                pytest.fail(f"--check-config connected to the DSN's server ({args}, {env})")
    dead = f"host=127.0.0.1 port={closed_port()} dbname=app connect_timeout=3"
    res = run(["--dsn", dead, "--check-config"], timeout=10)
    assert res.returncode == 0, res.describe()
    assert "connect" not in res.stderr.lower(), res.stderr


DEFAULTS = {
    "source.dsn": "",
    "source.slot": "pgfanout",
    "source.publication": "pgfanout",
    "source.tables": None,
    "source.create_slot": False,
    "source.create_publication": False,
    "source.temporary_slot": False,
    "source.allow_missing_replica_identity": False,
    "source.drop_slot_on_exit": False,
    "source.status_interval": 10,
    "source.heartbeat_interval": None,
    "source.endpos": None,
    "sinks": ["stdout"],
    "stdout.output": None,
    "kafka.brokers": None,
    "kafka.topic_template": "{prefix}.{schema}.{table}",
    "kafka.topic_prefix": "pgfanout",
    "kafka.message_topic": "{prefix}.messages",
    "kafka.on_oversize": "fail",
    "kafka.dead_letter_topic": "{prefix}.dead_letter",
    "kafka.state_topic": "pgfanout.state",
    "kafka.key_columns": None,
    "kafka.exactly_once": False,
    "kafka.transaction_max_records": 100000,
    "kafka.transaction_max_bytes": 64 * 1024 * 1024,
    "kafka.transaction_max_ms": 100,
    "kafka.tombstones": True,
    "kafka.format": "protobuf",
    "kafka.debezium_name": None,
    "kafka.debezium_decimal_handling_mode": "precise",
    "kafka.debezium_time_precision_mode": "adaptive",
    "kafka.debezium_binary_handling_mode": "bytes",
    "kafka.debezium_truncates": "skip",
    "http.listen": None,
    "log.level": "info",
    "log.format": "text",
    "log.progress_interval": 60,
    "max_inflight_bytes": 8 * 1024 * 1024,
    "shutdown_timeout": 20,
    "snapshot": None,
    "snapshot_chunk_size": 10000,
    "state_dir": None,
    "on_slot_loss": "stop",
}

# The redis section's scalars, in the order --check-config prints them, each with a
# '# <source>' comment (flag --redis, environment, config file or default).
REDIS_SCALARS = {
    "redis.host": "127.0.0.1", "redis.port": 6379, "redis.db": 0, "redis.username": None,
    "redis.password_file": None, "redis.tls": False, "redis.window": 64, "redis.linger_ms": 0,
    "redis.command_timeout_ms": 10000, "redis.message_prefix": "pgfanout.invalidate", "redis.on_read": "ignore",
    "redis.leases": True, "redis.lease_suffix": ":lease", "redis.lease_layout": "suffix",
    "redis.ryw_key": None, "redis.replicas": None, "redis.replica_names": None, "redis.replica_poll_ms": 50,
    "redis.second_pass": False, "redis.second_pass_delay_ms": 100, "redis.replica_max_wait": 30,
}
# Then the password (redacted; the comment says where it came from), the presets and the
# number of rules.
REDIS_DEFAULTS = dict(REDIS_SCALARS, **{
    "redis.password": None, "redis.django": "off", "redis.cachalot": "off", "redis.cacheops": "off", "redis.rules": 0,
})
REDIS_ORDER = [p.split(".", 1)[1] for p in REDIS_DEFAULTS]


def test_defaults_with_nothing_set(pgfanout):
    """No file, no variables, no flags: every setting is its documented default, marked
    '# default'; the output is YAML that parses to the same values."""
    eff = check()
    for path, want in DEFAULTS.items():
        assert eff.value(path) == want, (path, eff.text)
        assert eff.source(path) == "default", (path, eff.text)
    for path, want in REDIS_DEFAULTS.items():
        assert eff.value(path) == want, (path, eff.text)
    for path in REDIS_SCALARS:
        assert eff.source(path) == "default", (path, eff.text)
    assert eff.source("redis.password") == "none", eff.text
    assert eff.conf == [], eff.text
    assert set(eff.entries) == set(DEFAULTS) | set(REDIS_DEFAULTS), eff.text
    assert redis_keys_printed(eff.text) == REDIS_ORDER, eff.text
    if yaml is not None:
        doc = yaml.safe_load(eff.text)
        assert doc["source"]["slot"] == "pgfanout" and doc["max_inflight_bytes"] == 8 << 20, doc
        assert doc["sinks"] == ["stdout"] and doc["redis"]["port"] == 6379, doc


# Per setting: the file's raw YAML, the environment's text, the flag, and the value each
# layer must give (default, file, environment, flag), worked out from the documentation.
PRECEDENCE = [
    ("source.slot", '"file_slot"', "env_slot", ["--slot", "flag_slot"],
     ("pgfanout", "file_slot", "env_slot", "flag_slot")),
    ("source.publication", "file_pub", "env_pub", ["--publication", "flag_pub"],
     ("pgfanout", "file_pub", "env_pub", "flag_pub")),
    ("stdout.output", '"/tmp/file out.jsonl"', "/tmp/env.jsonl", ["-o", "/tmp/flag.jsonl"],
     (None, "/tmp/file out.jsonl", "/tmp/env.jsonl", "/tmp/flag.jsonl")),
    ("kafka.brokers", '"f1:9092,f2:9092"', "e1:9092", ["--kafka-brokers", "g1:9092"],
     (None, "f1:9092,f2:9092", "e1:9092", "g1:9092")),
    ("kafka.topic_template", '"file.{table}"', "env.{schema}.{table}", ["--topic-template", "flag.{table}"],
     ("{prefix}.{schema}.{table}", "file.{table}", "env.{schema}.{table}", "flag.{table}")),
    ("kafka.topic_prefix", "fp", "ep", ["--topic-prefix", "gp"], ("pgfanout", "fp", "ep", "gp")),
    ("kafka.message_topic", '"f.msgs"', "e.msgs", ["--message-topic", "g.msgs"],
     ("{prefix}.messages", "f.msgs", "e.msgs", "g.msgs")),
    ("http.listen", '"127.0.0.1:9101"', "9102", ["--http-listen", "127.0.0.1:9103"],
     (None, "127.0.0.1:9101", "9102", "127.0.0.1:9103")),
    ("source.create_slot", "yes", "off", ["--create-slot"], (False, True, False, True)),
    ("source.create_publication", "true", "no", ["--create-publication"], (False, True, False, True)),
    ("source.temporary_slot", "on", "false", ["--temporary-slot"], (False, True, False, True)),
    ("source.drop_slot_on_exit", "true", "no", ["--drop-slot-on-exit"], (False, True, False, True)),
    ("source.allow_missing_replica_identity", "yes", "no", ["--allow-missing-replica-identity"],
     (False, True, False, True)),
    ("kafka.on_oversize", "dead_letter", "skip", ["--kafka-on-oversize", "fail"],
     ("fail", "dead_letter", "skip", "fail")),
    ("kafka.dead_letter_topic", '"f.dl"', "e.dl", ["--dead-letter-topic", "g.dl"],
     ("{prefix}.dead_letter", "f.dl", "e.dl", "g.dl")),
    ("kafka.tombstones", "no", "true", ["--no-tombstones"], (True, False, True, False)),
    ("source.status_interval", "2.5", "7", ["--status-interval", "0.25"], (10, 2.5, 7, 0.25)),
    ("source.heartbeat_interval", "3", "4.5", ["--heartbeat-interval", "60"], (None, 3, 4.5, 60)),
    ("shutdown_timeout", "45", "1.5", ["--shutdown-timeout", "86400"], (20, 45, 1.5, 86400)),
    ("max_inflight_bytes", "4k", "2M", ["--max-inflight-bytes", "1G"],
     (parse_bytes("8M"), parse_bytes("4k"), parse_bytes("2M"), parse_bytes("1G"))),
    ("sinks", "[redis]", "stdout,redis", ["--sink", "stdout"],
     (["stdout"], ["redis"], ["stdout", "redis"], ["stdout"])),
    ("source.endpos", '"a/00b374d8"', "0/16b3748", ["--endpos", "FFFFFFFF/0"],
     (None, norm_lsn("A/B374D8"), norm_lsn("0/16B3748"), "FFFFFFFF/0")),
    ("log.level", "warn", "error", ["--log-level", "debug"], ("info", "warn", "error", "debug")),
    ("log.format", "json", "logfmt", ["--log-format", "text"], ("text", "json", "logfmt", "text")),
]

# (scenario, which layers are given, which one must win)
SCENARIOS = [
    ("none", (), "default"),
    ("file", ("file",), "config file"),
    ("env", ("env",), "environment"),
    ("flag", ("flag",), "flag"),
    ("file+env", ("file", "env"), "environment"),
    ("file+flag", ("file", "flag"), "flag"),
    ("env+flag", ("env", "flag"), "flag"),
    ("file+env+flag", ("file", "env", "flag"), "flag"),
]
LAYER_INDEX = {"default": 0, "config file": 1, "environment": 2, "flag": 3}


def env_name(key):
    return "PGFANOUT_" + key.upper().replace(".", "_")


@pytest.mark.parametrize("scenario,layers,winner", SCENARIOS, ids=[s[0] for s in SCENARIOS])
@pytest.mark.parametrize("key,file_raw,env_value,flag,expected", PRECEDENCE, ids=[p[0] for p in PRECEDENCE])
def test_precedence(pgfanout, tmp_path, key, file_raw, env_value, flag, expected, scenario, layers, winner):
    """flags > environment > file > defaults, setting by setting, with the source comment."""
    args, env = [], {}
    if "file" in layers:
        args += ["--config", write(tmp_path, build_yaml({key: file_raw}))]
    if "env" in layers:
        env[env_name(key)] = env_value
    if "flag" in layers:
        args += flag
    eff = check(args, env)
    assert eff.value(key) == expected[LAYER_INDEX[winner]], (key, scenario, eff.text)
    assert eff.source(key) == winner, (key, scenario, eff.text)
    # Nothing else moved: every other setting stays at its default.
    for other, want in DEFAULTS.items():
        if other != key:
            assert eff.value(other) == want and eff.source(other) == "default", (other, eff.text)


def test_precedence_of_the_dsn(pgfanout, tmp_path):
    """source.dsn: file < PGFANOUT_SOURCE_DSN < --dsn (the database tells which won)."""
    base = f"host=127.0.0.1 port={closed_port()} user=alice"
    cfg = write(tmp_path, build_yaml({"source.dsn": json.dumps(base + " dbname=filedb")}))
    cases = [
        (["--config", cfg], {}, "filedb", "config file"),
        (["--config", cfg], {"PGFANOUT_SOURCE_DSN": base + " dbname=envdb"}, "envdb", "environment"),
        (["--config", cfg, "--dsn", base + " dbname=flagdb"], {"PGFANOUT_SOURCE_DSN": base + " dbname=envdb"},
         "flagdb", "flag"),
        (["--config", cfg, "-d", base + " dbname=shortdb"], {}, "shortdb", "flag"),
    ]
    for args, env, db, source in cases:
        eff = check(args, env)
        assert dsn_parts(eff.value("source.dsn"))["dbname"] == db, eff.text
        assert eff.source("source.dsn") == source, eff.text


def test_many_settings_at_once(pgfanout, tmp_path):
    """One file setting many keys, some overridden by the environment and some by flags:
    each setting reports its own winner."""
    cfg = write(tmp_path, build_yaml({
        "source.slot": "fslot", "source.publication": "fpub", "source.status_interval": "20",
        "source.endpos": '"0/100"', "kafka.topic_prefix": "fpre", "kafka.tombstones": "false",
        "log.level": "warn", "log.format": "json", "max_inflight_bytes": "8M",
        "shutdown_timeout": "5", "sinks": "[stdout, redis]",
    }))
    env = {"PGFANOUT_SOURCE_PUBLICATION": "epub", "PGFANOUT_SOURCE_ENDPOS": "0/200",
           "PGFANOUT_LOG_FORMAT": "logfmt", "PGFANOUT_SHUTDOWN_TIMEOUT": "6",
           "PGFANOUT_SOURCE_TEMPORARY_SLOT": "yes"}
    eff = check(["--config", cfg, "--slot", "gslot", "--endpos", "0/300", "--log-level", "error"], env)
    want = {
        "source.slot": ("gslot", "flag"), "source.publication": ("epub", "environment"),
        "source.status_interval": (20, "config file"), "source.endpos": ("0/300", "flag"),
        "source.temporary_slot": (True, "environment"), "kafka.topic_prefix": ("fpre", "config file"),
        "kafka.tombstones": (False, "config file"), "log.level": ("error", "flag"),
        "log.format": ("logfmt", "environment"), "max_inflight_bytes": (8 << 20, "config file"),
        "shutdown_timeout": (6, "environment"), "sinks": (["stdout", "redis"], "config file"),
        "source.create_slot": (False, "default"), "kafka.message_topic": ("{prefix}.messages", "default"),
    }
    for path, (value, source) in want.items():
        assert (eff.value(path), eff.source(path)) == (value, source), (path, eff.text)


def test_kafka_conf_from_file_environment_and_flags(pgfanout, tmp_path):
    """kafka.conf: the file's entries, then PGFANOUT_KAFKA_CONF_<KEY> (KEY in capitals, '_'
    for '.'), then --kafka-conf, in that order, so that for one key the flag's value is
    applied last and wins over the environment's, which wins over the file's."""
    cfg = write(tmp_path, 'kafka:\n  conf: ["client.id=fromfile", "linger.ms=5"]\n')
    env = {"PGFANOUT_KAFKA_CONF_CLIENT_ID": "fromenv", "PGFANOUT_KAFKA_CONF_QUEUE_BUFFERING_MAX_MS": "7"}
    eff = check(["--config", cfg, "--kafka-conf", "client.id=fromflag", "--kafka-conf", "acks=1"], env)
    conf = eff.conf
    assert conf[:2] == ["client.id=fromfile", "linger.ms=5"], conf
    assert sorted(conf[2:4]) == ["client.id=fromenv", "queue.buffering.max.ms=7"], conf
    assert conf[4:] == ["client.id=fromflag", "acks=1"], conf
    client_ids = [c.split("=", 1)[1] for c in conf if c.startswith("client.id=")]
    assert client_ids[-1] == "fromflag", conf
    # Without the flag the environment's is the last; with the file alone, the file's.
    assert [c for c in check(["--config", cfg], env).conf if c.startswith("client.id=")][-1] == "client.id=fromenv"
    assert check(["--config", cfg]).conf == ["client.id=fromfile", "linger.ms=5"]


def test_kafka_sink_brokers_from_any_layer(pgfanout, tmp_path):
    """--sink kafka needs brokers: kafka.brokers in the file, PGFANOUT_KAFKA_BROKERS or
    bootstrap.servers in kafka.conf all satisfy it; none of them is exit 2 naming all three."""
    err = check_fails(["--sink", "kafka"])
    for name in ("--kafka-brokers", "PGFANOUT_KAFKA_BROKERS", "kafka.brokers"):
        assert name in err, err
    cfg = write(tmp_path, build_yaml({"kafka.brokers": '"127.0.0.1:9"', "sinks": "[kafka]"}))
    eff = check(["--config", cfg])
    assert eff.value("sinks") == ["kafka"] and eff.value("kafka.brokers") == "127.0.0.1:9", eff.text
    eff = check(["--sink", "stdout,kafka"], {"PGFANOUT_KAFKA_BROKERS": "127.0.0.1:9"})
    assert eff.value("sinks") == ["stdout", "kafka"] and eff.source("kafka.brokers") == "environment"
    eff = check(["--sink", "kafka"], {"PGFANOUT_KAFKA_CONF_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert "bootstrap.servers=127.0.0.1:9" in eff.conf, eff.text


def test_redis_host_and_port_precedence(pgfanout, tmp_path):
    """redis.port/host: file < PGFANOUT_REDIS_PORT/HOST < --redis HOST:PORT."""
    cfg = write(tmp_path, "redis:\n  host: filehost\n  port: 6380\n  db: 3\n")
    eff = check(["--config", cfg])
    assert (eff.value("redis.host"), eff.value("redis.port"), eff.value("redis.db")) == ("filehost", 6380, 3)
    eff = check(["--config", cfg], {"PGFANOUT_REDIS_PORT": "6390", "PGFANOUT_REDIS_HOST": "envhost"})
    assert (eff.value("redis.host"), eff.value("redis.port"), eff.value("redis.db")) == ("envhost", 6390, 3)
    eff = check(["--config", cfg, "--redis", "flaghost:6400"],
                {"PGFANOUT_REDIS_PORT": "6390", "PGFANOUT_REDIS_HOST": "envhost"})
    assert (eff.value("redis.host"), eff.value("redis.port")) == ("flaghost", 6400), eff.text
    eff = check([], {"PGFANOUT_REDIS_PORT": "6391", "PGFANOUT_REDIS_DB": "2", "PGFANOUT_REDIS_WINDOW": "8",
                     "PGFANOUT_REDIS_MESSAGE_PREFIX": "app.inval"})
    assert (eff.value("redis.port"), eff.value("redis.db"), eff.value("redis.window"),
            eff.value("redis.message_prefix")) == (6391, 2, 8, "app.inval"), eff.text


# Per redis scalar: the file's raw YAML (None: not tested from the file here), the
# environment's text, and the value (default, file, environment).  Only host and port have
# a flag (--redis HOST:PORT).  {tmp} is the test's directory (password files must exist).
# Values of 0/false from the file are in test_redis_zero_values_from_the_file_show_their_source.
REDIS_PRECEDENCE = [
    ("redis.host", "filehost", "envhost", ("127.0.0.1", "filehost", "envhost")),
    ("redis.port", "6380", "6390", (6379, 6380, 6390)),
    ("redis.db", "3", "2", (0, 3, 2)),
    ("redis.username", "fileuser", "envuser", (None, "fileuser", "envuser")),
    ("redis.password_file", "{tmp}/file-pw", "{tmp}/env-pw", (None, "{tmp}/file-pw", "{tmp}/env-pw")),
    ("redis.tls", None, "no", (False, None, False)),
    ("redis.window", "16", "8", (64, 16, 8)),
    ("redis.linger_ms", "5", "7", (0, 5, 7)),
    ("redis.command_timeout_ms", "2000", "3000", (10000, 2000, 3000)),
    ("redis.message_prefix", "file.inval", "env.inval", ("pgfanout.invalidate", "file.inval", "env.inval")),
]
REDIS_SCENARIOS = [
    ("none", (), "default"),
    ("file", ("file",), "config file"),
    ("env", ("env",), "environment"),
    ("file+env", ("file", "env"), "environment"),
    ("flag", ("flag",), "flag --redis"),
    ("file+env+flag", ("file", "env", "flag"), "flag --redis"),
]

REDIS_CASES = [(p, s) for p in REDIS_PRECEDENCE for s in REDIS_SCENARIOS
               if not ("flag" in s[1] and p[0] not in ("redis.host", "redis.port"))
               and not ("file" in s[1] and p[1] is None)]


@pytest.mark.parametrize("setting,scenario", REDIS_CASES, ids=[f"{p[0]}-{s[0]}" for p, s in REDIS_CASES])
def test_redis_settings_show_their_source(pgfanout, tmp_path, setting, scenario):
    """Every scalar of the redis section is printed with '# <source>': --redis > PGFANOUT_REDIS_*
    > the file > the default; the others stay '# default'."""
    def in_tmp(v):
        return v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v

    key, file_raw, env_value, expected = setting
    file_raw, env_value, expected = in_tmp(file_raw), in_tmp(env_value), tuple(map(in_tmp, expected))
    scenario, layers, winner = scenario
    sub = key.split(".", 1)[1]
    for name in ("file-pw", "env-pw"):
        write(tmp_path, "pw\n", name)
    args, env = [], {}
    if key == "redis.username":
        env["PGFANOUT_REDIS_PASSWORD"] = PW  # a username needs a password
    if "file" in layers:
        args += ["--config", write(tmp_path, f"# redis\nlog:\n  level: info\nredis:\n  {sub}: {file_raw}\n")]
    if "env" in layers:
        env["PGFANOUT_REDIS_" + sub.upper()] = env_value
    if "flag" in layers:
        args += ["--redis", "flaghost:6400"]
    eff = check(args, env)
    if "flag" in layers:
        want = "flaghost" if key == "redis.host" else 6400
    else:
        want = expected[{"default": 0, "config file": 1, "environment": 2}[winner]]
    assert (eff.value(key), eff.source(key)) == (want, winner), (key, scenario, eff.text)
    for other, default in REDIS_SCALARS.items():
        if other == key or ("flag" in layers and other in ("redis.host", "redis.port")):
            continue
        assert (eff.value(other), eff.source(other)) == (default, "default"), (other, scenario, eff.text)
    assert redis_keys_printed(eff.text) == REDIS_ORDER, eff.text
    if key == "redis.password_file" and winner != "default":
        assert (eff.value("redis.password"), eff.source("redis.password")) == ("*****", "password_file"), eff.text
    if key == "redis.username":
        assert (eff.value("redis.password"), eff.source("redis.password")) == (
            "*****", "environment PGFANOUT_REDIS_PASSWORD"), eff.text


def test_redis_unix_socket_flag_shows_its_source(pgfanout):
    eff = check(["--redis", "/tmp/pgfanout-test.sock"], {"PGFANOUT_REDIS_HOST": "envhost"})
    assert (eff.value("redis.host"), eff.source("redis.host")) == ("/tmp/pgfanout-test.sock", "flag --redis")
    assert eff.source("redis.db") == "default", eff.text


def test_redis_zero_values_from_the_file_show_their_source(pgfanout):
    eff = check(["--config", EXAMPLE])
    for sub in ("host", "port", "db", "tls", "window", "linger_ms", "command_timeout_ms", "message_prefix"):
        assert eff.source("redis." + sub) == "config file", (sub, eff.text)


def test_redis_presets_and_rules_show_their_source(pgfanout):
    eff = check()
    for path in ("redis.django", "redis.cachalot", "redis.cacheops", "redis.rules"):
        assert eff.source(path) == "default", (path, eff.text)


def test_redis_tls_from_the_environment(pgfanout):
    """PGFANOUT_REDIS_TLS takes true/false and yes/no.  true and yes are refused later when
    hiredis has no TLS (Debian 12's 0.14), with that reason, not as an invalid value."""
    for value in ("false", "no"):
        eff = check([], {"PGFANOUT_REDIS_TLS": value})
        assert (eff.value("redis.tls"), eff.source("redis.tls")) == (False, "environment"), eff.text
    for value in ("true", "yes"):
        res = run(["--check-config"], {"PGFANOUT_REDIS_TLS": value})
        if res.returncode == 0:
            eff = Effective(res.stdout)
            assert (eff.value("redis.tls"), eff.source("redis.tls")) == (True, "environment"), eff.text
        else:
            assert res.returncode == 2 and "redis.tls is set" in res.stderr and "hiredis" in res.stderr, \
                res.describe()
            assert "invalid value" not in res.stderr, res.describe()
    for value in ("maybe", "YES", "1"):
        err = check_fails([], {"PGFANOUT_REDIS_TLS": value})
        assert "PGFANOUT_REDIS_TLS" in err and f"'{value}'" in err, err
        for word in ("true", "false", "yes", "no"):
            assert word in err, (word, err)


@pytest.mark.parametrize("where", ["file", "env"])
def test_redis_port_out_of_range_is_refused(pgfanout, tmp_path, where):
    """A port above 65535 is refused from the file and the environment as from --redis;
    65535 itself is fine."""
    assert "expected HOST:PORT" in check_fails(["--redis", "127.0.0.1:70000"])
    for port in ("70000", "65536"):
        if where == "file":
            err = check_fails(["--config", write(tmp_path, f"redis:\n  port: {port}\n")])
        else:
            err = check_fails([], {"PGFANOUT_REDIS_PORT": port})
        assert "redis.port" in err and port in err and "65535" in err, err
    if where == "file":
        eff = check(["--config", write(tmp_path, "redis:\n  port: 65535\n")])
    else:
        eff = check([], {"PGFANOUT_REDIS_PORT": "65535"})
    assert eff.value("redis.port") == 65535, eff.text


def test_redis_port_out_of_range_names_where_it_came_from(pgfanout, tmp_path):
    assert "PGFANOUT_REDIS_PORT" in check_fails([], {"PGFANOUT_REDIS_PORT": "70000"})
    text = HEADER + "redis:\n  host: h\n  port: 70000\n"
    path = write(tmp_path, text)
    assert f"config file {path}, line {line_of(text, '70000')}" in check_fails(["--config", path])


@pytest.mark.parametrize("where", ["file", "env"])
def test_redis_port_zero_is_refused(pgfanout, tmp_path, where):
    assert "expected HOST:PORT" in check_fails(["--redis", "127.0.0.1:0"])
    if where == "file":
        check_fails(["--config", write(tmp_path, "redis:\n  port: 0\n")])
    else:
        check_fails([], {"PGFANOUT_REDIS_PORT": "0"})


# --- 2. secrets ---------------------------------------------------------------------------

PW = "Pw7hunter2Zq"


def dsn_forms(port):
    return {
        "keyvalue": f"host=127.0.0.1 port={port} user=alice password={PW} dbname=app connect_timeout=2",
        "quoted": f"host=127.0.0.1 port={port} user=alice password='{PW} x\\'y' dbname=app connect_timeout=2",
        "uri": f"postgresql://alice:{PW}@127.0.0.1:{port}/app?connect_timeout=2",
    }


@pytest.mark.parametrize("where", ["file", "env", "flag"])
@pytest.mark.parametrize("form", ["keyvalue", "quoted", "uri"])
def test_dsn_password_redacted(pgfanout, tmp_path, form, where):
    port = closed_port()
    dsn = dsn_forms(port)[form]
    args, env = [], {}
    if where == "file":
        args = ["--config", write(tmp_path, build_yaml({"source.dsn": json.dumps(dsn)}))]
    elif where == "env":
        env = {"PGFANOUT_SOURCE_DSN": dsn}
    else:
        args = ["--dsn", dsn]
    res = run(args + ["--check-config"], env)
    assert res.returncode == 0, res.describe()
    assert PW not in res.stdout and PW not in res.stderr, res.stdout + res.stderr
    parts = dsn_parts(Effective(res.stdout).value("source.dsn"))
    assert parts["password"] == "*****", parts
    assert (parts["user"], parts["dbname"], parts["host"], parts["port"]) == ("alice", "app", "127.0.0.1",
                                                                             str(port)), parts


@pytest.mark.parametrize("where", ["file", "env", "flag"])
def test_kafka_secrets_redacted(pgfanout, tmp_path, where):
    """sasl.password (and other librdkafka secrets this librdkafka build supports) from any
    layer: the key stays, the value is *****; ordinary settings are shown."""
    args, env = ["--kafka-conf", "client.id=visible-id"], {}
    secrets = {"sasl.password": PW + "a", "ssl.key.password": PW + "b", "ssl.keystore.password": PW + "c",
               "sasl.oauthbearer.config": PW + "d", "ssl.key.pem": PW + "e"}
    if where == "file":
        items = ", ".join(json.dumps(f"{k}={v}") for k, v in secrets.items())
        args += ["--config", write(tmp_path, f"kafka:\n  conf: [{items}]\n")]
    elif where == "env":
        env = {"PGFANOUT_KAFKA_CONF_" + k.upper().replace(".", "_"): v for k, v in secrets.items()}
    else:
        for k, v in secrets.items():
            args += ["--kafka-conf", f"{k}={v}"]
    res = run(args + ["--check-config"], env)
    assert res.returncode == 0, res.describe()
    assert PW not in res.stdout + res.stderr, res.stdout + res.stderr
    conf = Effective(res.stdout).conf
    assert sorted(conf) == sorted([f"{k}=*****" for k in secrets] + ["client.id=visible-id"]), conf


def test_redis_password_redacted(pgfanout, tmp_path):
    pwfile = write(tmp_path, PW + "f\n", "redis-password")
    res = run(["--check-config"], {"PGFANOUT_REDIS_PASSWORD": PW, "PGFANOUT_REDIS_USERNAME": "cdc"})
    assert res.returncode == 0, res.describe()
    assert PW not in res.stdout + res.stderr
    assert re.search(r'^  password: "\*+"  # environment PGFANOUT_REDIS_PASSWORD$', res.stdout, re.M), res.stdout
    assert Effective(res.stdout).value("redis.username") == "cdc"
    cfg = write(tmp_path, f"redis:\n  username: cdc\n  password_file: {pwfile}\n")
    res = run(["--config", cfg, "--check-config"])
    assert res.returncode == 0, res.describe()
    assert PW not in res.stdout + res.stderr
    assert re.search(r'^  password: "\*+"  # password_file$', res.stdout, re.M), res.stdout


def secret_setup(tmp_path, port, extra_yaml=""):
    """A file and environment carrying every kind of secret: the DSN's password (file),
    sasl.password (file, environment), the Redis password (environment)."""
    text = (f'source:\n  dsn: "host=127.0.0.1 port={port} user=alice password={PW}1 connect_timeout=2"\n'
            f'kafka:\n  conf: ["sasl.password={PW}2"]\n' + extra_yaml)
    env = {"PGFANOUT_KAFKA_CONF_SASL_PASSWORD": PW + "3", "PGFANOUT_REDIS_PASSWORD": PW + "4"}
    return write(tmp_path, text, "secrets.yaml"), env


# (id, extra YAML for the file, extra environment, flags, expected exit code, text in stderr)
SECRET_ERRORS = [
    ("valid", "log:\n  level: info\nstdout:\n  output: null\n", {}, ["--slot", "x"], 0, None),
    ("file-bad-value", "shutdown_timeout: forever\n", {}, [], 2, "shutdown_timeout"),
    ("file-unknown-key", "passwrd: x\n", {}, [], 2, "passwrd"),
    ("env-bad-seconds", "", {"PGFANOUT_SOURCE_STATUS_INTERVAL": "-3"}, [], 2, "PGFANOUT_SOURCE_STATUS_INTERVAL"),
    ("flag-bad-format", "", {}, ["--log-format", "xml"], 2, "--log-format"),
    ("env-redis-port", "", {"PGFANOUT_REDIS_PORT": "abc"}, [], 2, "PGFANOUT_REDIS_PORT"),
    ("flag-redis", "", {}, ["--redis", "h:abc"], 2, "--redis"),
    ("flag-kafka-conf", "", {}, ["--kafka-conf", "sasl.password" + PW], 2, "--kafka-conf"),
    ("kafka-no-brokers", "", {}, ["--sink", "kafka"], 2, "brokers"),
    ("tables-alone", "", {}, ["--tables", "a"], 2, "--tables"),
    ("unknown-flag", "", {}, ["--pasword", PW], 2, "--pasword"),
    ("redis-user-no-password", "redis:\n  username: cdc\n", {"PGFANOUT_REDIS_PASSWORD": None}, [], 2, "username"),
]


@pytest.mark.parametrize("case", SECRET_ERRORS, ids=[c[0] for c in SECRET_ERRORS])
def test_secrets_absent_from_errors(pgfanout, tmp_path, case):
    """Whatever goes wrong with --check-config, no secret appears on stdout or stderr."""
    _, extra_yaml, extra_env, flags, code, text = case
    cfg, env = secret_setup(tmp_path, closed_port(), extra_yaml)
    env.update(extra_env)
    env = {k: v for k, v in env.items() if v is not None}
    res = run(["--config", cfg] + flags + ["--check-config"], env)
    assert res.returncode == code, res.describe()
    if text:
        assert text in res.stderr, res.describe()
    assert PW not in res.stdout and PW not in res.stderr, res.stdout + res.stderr


@pytest.mark.parametrize("form", ["keyvalue", "quoted", "uri"])
@pytest.mark.parametrize("level", ["info", "debug"])
def test_secrets_absent_when_the_connection_fails(pgfanout, tmp_path, form, level):
    """A real run against a closed port with every secret set: exit 1, 'Connection
    refused', and no secret in anything pgfanout printed, even at --log-level debug."""
    port = closed_port()
    cfg, env = secret_setup(tmp_path, port)
    env["PGFANOUT_SOURCE_DSN"] = dsn_forms(port)[form]
    res = run(["--config", cfg, "--log-level", level, "--kafka-conf", f"sasl.password={PW}5"], env, timeout=30)
    assert res.returncode == 1, res.describe()
    assert "Connection refused" in res.stderr and str(port) in res.stderr, res.describe()
    assert PW not in res.stdout and PW not in res.stderr, res.stderr


def dsn_layers(tmp_path, dsn):
    """(name, args, env) giving dsn from the file, the environment and --dsn in turn."""
    return [("file", ["--config", write(tmp_path, build_yaml({"source.dsn": json.dumps(dsn)}))], {}),
            ("env", [], {"PGFANOUT_SOURCE_DSN": dsn}),
            ("flag", ["--dsn", dsn], {})]


def test_malformed_uri_password_not_in_error(pgfanout, tmp_path):
    """A URI libpq cannot parse, with a password in it: the real run stops before connecting
    (exit 2) and the error does not quote the URI."""
    dsn = f"postgresql://alice:{PW}@[::1"
    for name, args, env in dsn_layers(tmp_path, dsn):
        res = run(args + ["--slot", "s"], env, timeout=30)
        assert res.returncode == 2, (name, res.describe())
        assert "source.dsn" in res.stderr, res.describe()
        assert PW not in res.stdout + res.stderr and "[::1" not in res.stderr, res.stderr


INVALID_DSNS = ["host=127.0.0.1 junk", "postgresql://a@[::1",
                f"host=127.0.0.1 password='{PW}", f"host=127.0.0.1 password={PW} junk",
                f"postgresql://alice:{PW}@[::1/app"]


@pytest.mark.parametrize("dsn", INVALID_DSNS)
def test_check_config_rejects_an_invalid_dsn(pgfanout, tmp_path, dsn):
    """A DSN libpq cannot parse fails --check-config (exit 2) from any layer, naming
    source.dsn without quoting the DSN (nor any part of it)."""
    for name, args, env in dsn_layers(tmp_path, dsn):
        err = check_fails(args, env)
        assert "source.dsn" in err and "not valid" in err, (name, err)
        for part in (dsn, PW, "junk", "bogus_option", "[::1"):
            assert part not in err, (name, part, err)


@pytest.mark.parametrize("dsn", [f"host=x password={PW} bogus_option=1", f"host=x password='{PW} x' bogus_option=1",
                                 f"postgresql://alice:{PW}@h/app?bogus_option=1"])
def test_invalid_dsn_names_its_unknown_keyword_never_a_value(pgfanout, tmp_path, dsn):
    """A keyword libpq does not know is named, so the typo can be found; no value is."""
    for name, args, env in dsn_layers(tmp_path, dsn):
        err = check_fails(args, env)
        assert "source.dsn" in err and "unknown keyword 'bogus_option'" in err, (name, err)
        for part in (dsn, PW, "=1", "host=x", "alice"):
            assert part not in err, (name, part, err)


def test_invalid_dsn_error_names_where_it_came_from(pgfanout, tmp_path):
    dsn = "host=127.0.0.1 junk"
    text = HEADER + f"source:\n  slot: s\n  dsn: {json.dumps(dsn)}\n"
    path = write(tmp_path, text)
    assert f"config file {path}, line {line_of(text, 'dsn:')}" in check_fails(["--config", path])
    assert "PGFANOUT_SOURCE_DSN" in check_fails([], {"PGFANOUT_SOURCE_DSN": dsn})
    assert "--dsn" in check_fails(["--dsn", dsn])


@pytest.mark.parametrize("dsn", ["host=127.0.0.1 port=abc", "host=127.0.0.1 sslmode=bogus"])
def test_check_config_rejects_invalid_dsn_values(pgfanout, dsn):
    err = check_fails(["--dsn", dsn])
    assert "source.dsn" in err, err


@pytest.mark.parametrize("keyword", ["password", "sslpassword"])
def test_dsn_sslpassword_redacted(pgfanout, tmp_path, keyword):
    """Every DSN keyword holding a password (password, sslpassword: the client key's
    passphrase) is printed as *****, in key=value and URI form, from any layer."""
    port = closed_port()
    for dsn in (f"host=127.0.0.1 port={port} user=alice {keyword}={PW}",
                f"postgresql://alice@127.0.0.1:{port}/app?{keyword}={PW}"):
        for name, args, env in dsn_layers(tmp_path, dsn):
            res = run(args + ["--check-config"], env)
            assert res.returncode == 0, res.describe()
            assert PW not in res.stdout + res.stderr, res.stdout
            parts = dsn_parts(Effective(res.stdout).value("source.dsn"))
            assert parts[keyword] == "*****" and parts["user"] == "alice", (name, parts)


@pytest.mark.parametrize("entry", ["sasl.password:{PW}", "sasl.password {PW}", "={PW}"])
def test_file_kafka_conf_without_equals_hides_secret(pgfanout, tmp_path, entry):
    """A file kafka.conf entry that is not key=value is exit 2 naming kafka.conf[0] and its
    line, and what it holds is never printed."""
    text = f'kafka:\n  conf: [{json.dumps(entry.format(PW=PW))}]\n'
    path = write(tmp_path, text)
    res = run(["--config", path, "--check-config"])
    assert PW not in res.stdout + res.stderr, res.stdout + res.stderr
    assert res.returncode == 2 and res.stdout == "", res.describe()
    assert f"kafka.conf[0] (config file {path}, line 2)" in res.stderr and "key=value" in res.stderr, res.stderr


def test_file_kafka_conf_without_equals_is_an_error(pgfanout, tmp_path):
    text = "kafka:\n  conf:\n    - linger.ms=5\n    - client.id\n"
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"kafka.conf[1] (config file {path}, line {line_of(text, '- client.id')})" in err, err
    assert "key=value" in err, err


# (id, key=value, layer): librdkafka settings this librdkafka build refuses, by name or value.
BAD_KAFKA_CONF = [
    ("unknown-flag", "no.such.property", "flag"),
    ("unknown-env", "no.such.property", "env"),
    ("unknown-file", "no.such.property", "file"),
    ("bad-number", "linger.ms", "flag"),
    ("bad-bool", "enable.idempotence", "env"),
]


def kafka_conf_layer(tmp_path, key, value, layer):
    if layer == "flag":
        return ["--kafka-conf", f"{key}={value}"], {}
    if layer == "env":
        return [], {"PGFANOUT_KAFKA_CONF_" + key.upper().replace(".", "_"): value}
    return ["--config", write(tmp_path, f"kafka:\n  conf: [{json.dumps(f'{key}={value}')}]\n")], {}


@pytest.mark.parametrize("with_sink", [True, False], ids=["sink-kafka", "no-kafka-sink"])
@pytest.mark.parametrize("case", BAD_KAFKA_CONF, ids=[c[0] for c in BAD_KAFKA_CONF])
def test_check_config_rejects_unknown_kafka_property(pgfanout, tmp_path, case, with_sink):
    """--check-config checks every librdkafka setting by name and value, with or without the
    Kafka sink: exit 2 naming the key, never echoing the value given."""
    _, key, layer = case
    args, env = kafka_conf_layer(tmp_path, key, PW, layer)
    if with_sink:
        args += ["--sink", "kafka", "--kafka-brokers", "127.0.0.1:9"]
    err = check_fails(args + ["--kafka-conf", f"sasl.password={PW}x"], env)
    assert f"'{key}'" in err and "Kafka setting" in err, err
    assert PW not in err, err


def test_kafka_property_not_in_this_build(pgfanout):
    """A secret property this librdkafka build does not support (Debian's has no OAuth/OIDC:
    sasl.oauthbearer.client.secret) is refused, exit 2, naming it without its value; a build
    that supports it prints it redacted."""
    key = "sasl.oauthbearer.client.secret"
    res = run(["--kafka-conf", f"{key}={PW}", "--check-config"])
    assert PW not in res.stdout + res.stderr, res.stdout + res.stderr
    if res.returncode == 0:
        assert f"{key}=*****" in Effective(res.stdout).conf, res.stdout
    else:
        assert res.returncode == 2 and res.stdout == "", res.describe()
        assert f"'{key}'" in res.stderr and "not supported in this build" in res.stderr, res.describe()


def test_bad_kafka_property_error_names_where_it_came_from(pgfanout, tmp_path):
    assert "--kafka-conf" in check_fails(["--kafka-conf", "no.such.property=1"])
    assert "PGFANOUT_KAFKA_CONF_NO_SUCH_PROPERTY" in check_fails([], {"PGFANOUT_KAFKA_CONF_NO_SUCH_PROPERTY": "1"})
    path = write(tmp_path, 'kafka:\n  conf: ["no.such.property=1"]\n')
    assert f"config file {path}, line 2" in check_fails(["--config", path])


# --- 3. errors: key, line, what is allowed ------------------------------------------------

def example_keys():
    """{section: [keys]} and the top-level keys of pgfanout.example.yaml (uncommented)."""
    with open(EXAMPLE) as f:
        text = f.read()
    if yaml is not None:
        doc = yaml.safe_load(text)
        return list(doc), {k: list(v) for k, v in doc.items() if isinstance(v, dict)}
    top, sections, current = [], {}, None
    for line in text.split("\n"):
        m = re.match(r"^([a-z_]+):", line)
        if m:
            top.append(m.group(1))
            current = m.group(1)
            sections[current] = []
            continue
        m = re.match(r"^  ([a-z_]+):", line)
        if m and current:
            sections[current].append(m.group(1))
    return top, {k: v for k, v in sections.items() if v}


def example_uncommented():
    """The example with its commented-out settings switched on: redis.username,
    password_file, django, cachalot and the sample rule (instead of rules: [])."""
    with open(EXAMPLE) as f:
        lines = f.read().split("\n")
    out, in_block = [], False
    for line in lines:
        if re.match(r"^  # (username|password_file|django|cachalot|cacheops|rules):", line):
            in_block = True
            out.append(line.replace("# ", "", 1))
            continue
        if in_block and re.match(r"^  #   ", line):
            out.append(line.replace("# ", "", 1))
            continue
        in_block = False
        if line.strip() == "rules: []":
            continue
        out.append(line)
    return "\n".join(out)


def allowed_list(err, label):
    m = re.search(re.escape(label) + r"(.*)$", err, re.M)
    assert m, err
    return [w.strip() for w in m.group(1).split(",")]


HEADER = "# pgfanout test config\n\n# a comment line\n"


def test_unknown_top_level_key(pgfanout, tmp_path):
    top, _ = example_keys()
    text = HEADER + "source:\n  slot: a\n\nsourse:\n  slot: b\n"
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"config file {path}, line {line_of(text, 'sourse:')}" in err, err
    assert "(sourse)" in err and "unknown key 'sourse'" in err, err
    assert sorted(allowed_list(err, "allowed keys here: ")) == sorted(top), err


def test_unknown_nested_key(pgfanout, tmp_path):
    _, sections = example_keys()
    text = HEADER + "log:\n  level: info\nsource:\n  slot: a\n  slto: b\n  publication: p\n"
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"line {line_of(text, 'slto')}" in err and "(source.slto)" in err, err
    assert "unknown key 'slto'" in err, err
    assert sorted(allowed_list(err, "allowed keys here: ")) == sorted(sections["source"]), err


def test_unknown_key_in_the_second_rule(pgfanout, tmp_path):
    """redis.rules[1].acton: the path counts rules from 0, the line is the typo's, and the
    allowed keys are those of the example's rule."""
    text = HEADER + ("redis:\n  rules:\n    - table: public.a\n      keys: [\"a:{id}\"]\n"
                     "    - table: public.b\n      keys: [\"b:{id}\"]\n      acton: unlink\n")
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"line {line_of(text, 'acton')}" in err and "(redis.rules[1].acton)" in err, err
    rule = yaml.safe_load(example_uncommented())["redis"]["rules"][0] if yaml else None
    want = sorted(rule) if rule else sorted(["table", "keys", "table_keys", "action", "publish", "generation",
                                             "generation_key"])
    assert sorted(allowed_list(err, "allowed keys here: ")) == want, err


# (id, key path, YAML line with the bad value, the bad text, environment variable, flag,
#  words the message must give as allowed)
BAD_VALUES = [
    ("bool", "source.create_slot", "  create_slot: maybe", "maybe", "PGFANOUT_SOURCE_CREATE_SLOT", None,
     ["true", "false"]),
    ("bool-tombstones", "kafka.tombstones", "  tombstones: maybe", "maybe", "PGFANOUT_KAFKA_TOMBSTONES", None,
     ["true", "false"]),
    ("seconds", "source.status_interval", "  status_interval: 5s", "5s", "PGFANOUT_SOURCE_STATUS_INTERVAL",
     "--status-interval", ["seconds", "86400"]),
    ("seconds-zero", "shutdown_timeout", "shutdown_timeout: 0", "0", "PGFANOUT_SHUTDOWN_TIMEOUT",
     "--shutdown-timeout", ["seconds", "greater than 0"]),
    ("seconds-too-big", "source.heartbeat_interval", "  heartbeat_interval: 86401", "86401",
     "PGFANOUT_SOURCE_HEARTBEAT_INTERVAL", "--heartbeat-interval", ["seconds", "86400"]),
    ("bytes", "max_inflight_bytes", "max_inflight_bytes: 12X", "12X", "PGFANOUT_MAX_INFLIGHT_BYTES",
     "--max-inflight-bytes", ["16M", "k, M, G"]),
    ("bytes-negative", "max_inflight_bytes", "max_inflight_bytes: -1M", "-1M", "PGFANOUT_MAX_INFLIGHT_BYTES",
     "--max-inflight-bytes", ["16M", "k, M, G"]),
    ("sinks", "sinks", "sinks: [stdout, kafak]", "kafak", "PGFANOUT_SINKS", "--sink",
     ["stdout", "kafka", "redis", "null"]),
    ("log-format", "log.format", "  format: xml", "xml", "PGFANOUT_LOG_FORMAT", "--log-format",
     ["text", "logfmt", "json"]),
    ("log-level", "log.level", "  level: loud", "loud", "PGFANOUT_LOG_LEVEL", "--log-level",
     ["debug", "info", "warn", "error"]),
    ("lsn", "source.endpos", "  endpos: 0-16B3748", "0-16B3748", "PGFANOUT_SOURCE_ENDPOS", "--endpos",
     ["0/16B3748"]),
]


def bad_file(key, bad_line):
    """A file with comments, other settings around, and bad_line at the key's place."""
    sec = key.split(".")[0] if "." in key else None
    text = HEADER + "source:\n  slot: s1\n  publication: p1\n"
    if sec == "source":
        text += bad_line + "\n"
    text += "\n# logging\nlog:\n  level: info\n" if sec != "log" else "\nlog:\n" + bad_line + "\n"
    if sec == "kafka":
        text += "kafka:\n  topic_prefix: x\n" + bad_line + "\n"
    if sec is None:
        text += bad_line + "\n"
    return text


@pytest.mark.parametrize("case", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value_in_file(pgfanout, tmp_path, case):
    _, key, bad_line, bad, _, _, allowed = case
    text = bad_file(key, bad_line)
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    first = err.strip().split("\n")[0]
    assert f"config file {path}, line {line_of(text, bad_line)}" in first, (text, err)
    assert key in first and bad in first, err
    for word in allowed:
        assert word in first, (word, err)


@pytest.mark.parametrize("case", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value_in_environment(pgfanout, case):
    _, key, _, bad, var, _, allowed = case
    value = "stdout,kafak" if key == "sinks" else bad
    err = check_fails([], {var: value})
    assert f"environment variable {var}" in err and key in err and bad in err, err
    for word in allowed:
        assert word in err, (word, err)


@pytest.mark.parametrize("case", [c for c in BAD_VALUES if c[5]], ids=[c[0] for c in BAD_VALUES if c[5]])
def test_bad_value_in_flag(pgfanout, tmp_path, case):
    """Also over a valid file and variable: the flag is the one named."""
    _, key, _, bad, var, flag, allowed = case
    value = "stdout,kafak" if key == "sinks" else bad
    cfg = write(tmp_path, "log:\n  level: info\n")
    err = check_fails(["--config", cfg, flag, value], {})
    assert f"flag {flag}" in err and key in err and bad in err, err
    assert "environment" not in err and "config file" not in err, err
    for word in allowed:
        assert word in err, (word, err)


def test_bad_values_of_the_redis_section(pgfanout, tmp_path):
    """redis.* is typed by the schema itself: a word for a number and a bad tls both name
    the key, the line and the allowed values; PGFANOUT_REDIS_* name the variable."""
    text = HEADER + "redis:\n  host: h\n  port: sixty\n"
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"line {line_of(text, 'sixty')}" in err and "redis.port" in err and "non-negative integers" in err
    text = HEADER + "redis:\n  db: 1\n  tls: maybe\n"
    err = check_fails(["--config", write(tmp_path, text)])
    assert f"line {line_of(text, 'maybe')}" in err and "redis.tls" in err, err
    assert "true" in err and "false" in err, err
    for var, value in (("PGFANOUT_REDIS_PORT", "-1"), ("PGFANOUT_REDIS_DB", "x"), ("PGFANOUT_REDIS_TLS", "maybe"),
                       ("PGFANOUT_REDIS_COMMAND_TIMEOUT_MS", "1.5")):
        err = check_fails([], {var: value})
        assert var in err and f"'{value}'" in err, err


# --- 4. PGFANOUT_CONFIG -------------------------------------------------------------------

def test_pgfanout_config_selects_the_file(pgfanout, tmp_path):
    a = write(tmp_path, build_yaml({"source.slot": "slot_a", "log.level": "warn"}), "a.yaml")
    b = write(tmp_path, build_yaml({"source.slot": "slot_b"}), "b.yaml")
    eff = check([], {"PGFANOUT_CONFIG": a})
    assert (eff.value("source.slot"), eff.source("source.slot")) == ("slot_a", "config file"), eff.text
    assert eff.value("log.level") == "warn"
    eff = check(["--config", b], {"PGFANOUT_CONFIG": a})
    assert (eff.value("source.slot"), eff.source("source.slot")) == ("slot_b", "config file"), eff.text
    assert (eff.value("log.level"), eff.source("log.level")) == ("info", "default"), "read both files"
    # Errors name the file that was read; --config keeps a broken PGFANOUT_CONFIG unread.
    broken_text = "source:\n  slto: x\n"
    broken = write(tmp_path, broken_text, "broken.yaml")
    err = check_fails([], {"PGFANOUT_CONFIG": broken})
    assert f"config file {broken}, line 2" in err, err
    eff = check(["--config", b], {"PGFANOUT_CONFIG": broken})
    assert eff.value("source.slot") == "slot_b"
    missing = os.path.join(str(tmp_path), "missing.yaml")
    err = check_fails([], {"PGFANOUT_CONFIG": missing})
    assert missing in err, err
    err = check_fails(["--config", missing], {"PGFANOUT_CONFIG": a})
    assert missing in err, err


def test_empty_file_is_all_defaults(pgfanout, tmp_path):
    eff = check(["--config", write(tmp_path, "# nothing\n")])
    for path, want in DEFAULTS.items():
        assert (eff.value(path), eff.source(path)) == (want, "default"), path


EMPTY_SECTIONS = [
    ("stdout", "# h\nstdout:\n  # output: /tmp/x\nlog:\n  level: warn\n", "stdout:", "stdout", ["output"]),
    ("source", "log:\n  level: warn\nsource:\n", "source:", "source",
     ["dsn", "slot", "publication", "tables", "create_slot", "endpos"]),
    ("redis", HEADER + "redis:\n  # host: x\n  # port: 1\n", "redis:", "redis", ["host", "port", "rules"]),
    ("django", "redis:\n  host: h\n  django:\n    # key_prefix: x\n", "django:", "redis.django",
     ["key_prefix", "version"]),
]


@pytest.mark.parametrize("case", EMPTY_SECTIONS, ids=[c[0] for c in EMPTY_SECTIONS])
def test_empty_section_is_explained(pgfanout, tmp_path, case):
    """A section whose keys are all commented out (YAML null): exit 2, naming the file, the
    section's line and path, saying to remove it or give it keys, and which keys it takes."""
    _, text, marker, path_name, keys = case
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"config file {path}, line {line_of(text, marker)} ({path_name})" in err, err
    assert "a section with no keys; remove it, or give it keys; allowed keys here: " in err, err
    assert set(keys) <= set(allowed_list(err, "allowed keys here: ")), err


def test_empty_sinks_list_in_file_is_refused(pgfanout, tmp_path):
    text = HEADER + "log:\n  level: info\nsinks: []\n"
    path = write(tmp_path, text)
    err = check_fails(["--config", path])
    assert f"config file {path}, line {line_of(text, 'sinks')}" in err and "sinks" in err, err
    for word in ("stdout", "kafka", "redis", "null"):
        assert word in err, err


def test_empty_sinks_from_environment_or_flag_are_refused(pgfanout):
    assert "PGFANOUT_SINKS" in check_fails([], {"PGFANOUT_SINKS": ""})
    assert "--sink" in check_fails(["--sink", ""])


def test_null_sink_alone_and_with_others(pgfanout, tmp_path):
    """null is a sink like the others, from every layer, alone or in a list; a misspelling of
    it is refused with every choice named."""
    assert check(["--sink", "null"]).value("sinks") == ["null"]
    eff = check([], {"PGFANOUT_SINKS": "kafka,null", "PGFANOUT_KAFKA_BROKERS": "127.0.0.1:9"})
    assert eff.value("sinks") == ["kafka", "null"], eff.text
    eff = check(["--config", write(tmp_path, "sinks: [null, stdout, redis]\n")])
    assert eff.value("sinks") == ["stdout", "redis", "null"], eff.text
    err = check_fails(["--sink", "stdout,nul"])
    assert "unknown sink 'nul'; allowed are stdout, kafka, redis, null" in err, err


@pytest.mark.parametrize("text,want", [("2m", 2 << 20), ("1g", 1 << 30), ("3K", 3 << 10), ("5k", 5 << 10),
                                       ("2M", 2 << 20), ("1G", 1 << 30)])
def test_size_suffixes_in_either_case(pgfanout, tmp_path, text, want):
    """max_inflight_bytes takes k, m and g in either case, from every layer."""
    assert parse_bytes(text) == want
    for args, env, source in ((["--config", write(tmp_path, f"max_inflight_bytes: {text}\n")], {}, "config file"),
                              ([], {"PGFANOUT_MAX_INFLIGHT_BYTES": text}, "environment"),
                              (["--max-inflight-bytes", text], {}, "flag")):
        eff = check(args, env)
        assert (eff.value("max_inflight_bytes"), eff.source("max_inflight_bytes")) == (want, source), eff.text
    for bad in ("2mb", "0m", "1t"):
        assert "--max-inflight-bytes" in check_fails(["--max-inflight-bytes", bad])


# --- 5. the example file ------------------------------------------------------------------

def leaf_paths(doc, prefix=""):
    for k, v in doc.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from leaf_paths(v, path + ".")
        else:
            yield path, v


def test_example_file_is_valid_and_complete(pgfanout):
    """pgfanout.example.yaml passes --check-config, every key it sets is printed, and each
    printed value is the one the example writes (the example shows the defaults)."""
    res = run(["--config", EXAMPLE, "--check-config"])
    assert res.returncode == 0, res.describe()
    eff = Effective(res.stdout)
    with open(EXAMPLE) as f:
        text = f.read()
    if yaml is not None:
        leaves = dict(leaf_paths(yaml.safe_load(text)))
    else:
        leaves, section = {}, None
        for line in text.split("\n"):
            m = re.match(r"^(  )?([a-z_]+):(.*?)(\s+#.*)?$", line)
            if not m:
                continue
            if m.group(1) is None:
                section = m.group(2)
                if m.group(3).strip():
                    leaves[section] = m.group(3).strip()
            else:
                leaves[f"{section}.{m.group(2)}"] = m.group(3).strip()
    assert len(leaves) >= 30, leaves
    for path, value in leaves.items():
        if path == "kafka.conf":
            assert eff.conf == (value if isinstance(value, list) else []), eff.text
            continue
        printed = eff.value(path)
        if path == "redis.rules":
            assert printed == 0, eff.text  # the count of rules
        elif path in ("max_inflight_bytes", "kafka.transaction_max_bytes"):
            assert printed == parse_bytes(str(value)), (path, printed)
        elif yaml is not None:
            assert printed == value, (path, value, printed)
        if path in DEFAULTS:
            assert printed == DEFAULTS[path], (path, printed)
            want_source = "default" if value is None else "config file"
            assert eff.source(path) == want_source, (path, eff.text)


def test_example_with_its_commented_settings_switched_on(pgfanout, tmp_path):
    """The example's commented-out settings (username, password_file, django, cachalot, the
    sample rule) are valid too once uncommented."""
    text = example_uncommented()
    pwfile = write(tmp_path, "pw\n", "redis-password")
    text = re.sub(r"password_file: \S+", f"password_file: {pwfile}", text)
    for key in ("username: cdc", "django:", "cachalot:", "cacheops:", "- table: public.users"):
        assert key in text, key
    res = run(["--config", write(tmp_path, text, "example-on.yaml"), "--check-config"])
    assert res.returncode == 0, res.describe()
    eff = Effective(res.stdout)
    assert (eff.value("redis.username"), eff.value("redis.rules")) == ("cdc", 1), eff.text
    assert (eff.value("redis.django"), eff.value("redis.cachalot"), eff.value("redis.cacheops")) == ("on", "on", "on"), eff.text
    assert eff.value("redis.password") == "*****" and eff.source("redis.password") == "password_file"


# --- 6. end to end with a real server ---------------------------------------------------

def workload(admin, table, other):
    """Changes to table (published) and other (not published); returns the expected
    (op, key id, after) list for table, in commit order."""
    admin.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
    admin.execute(f"INSERT INTO {other} VALUES (1)")
    with admin.transaction():
        admin.execute(f"INSERT INTO {table} VALUES (3, 'three')")
        admin.execute(f"UPDATE {table} SET v = 'TWO' WHERE id = 2")
    admin.execute(f"DELETE FROM {table} WHERE id = 1")
    return [("insert", 1, {"id": 1, "v": "one"}), ("insert", 2, {"id": 2, "v": "two"}),
            ("insert", 3, {"id": 3, "v": "three"}), ("update", 2, {"id": 2, "v": "TWO"}),
            ("delete", 1, None)]


def two_runs(cluster, admin, name, start):
    """Runs pgfanout twice through start(endpos) -> RunResult: first to create the slot and
    publication (endpos already passed: it must stop at once), then, after the workload, to
    stream it.  Returns (expected changes, events, RunResults)."""
    admin.execute(f"CREATE TABLE {name}_in (id int4 PRIMARY KEY, v text)")
    admin.execute(f"CREATE TABLE {name}_out (id int4 PRIMARY KEY)")
    first = start(runner.current_lsn(admin))
    assert first.returncode == 0 and not first.timed_out, first.describe()
    runner.wait_slot_inactive(admin, f"{name}_slot")
    info = runner.slot_info(admin, f"{name}_slot")
    assert info is not None and info["plugin"] == "pgoutput", f"the slot was not created: {info}"
    tables = runner.scalar(admin, "SELECT array_agg(schemaname || '.' || tablename)::text FROM pg_publication_tables"
                           " WHERE pubname = %s", (f"{name}_pub",))
    assert tables == "{" + f"public.{name}_in" + "}", f"publication {name}_pub tables: {tables}"
    expected = workload(admin, f"{name}_in", f"{name}_out")
    endpos = runner.current_lsn(admin)
    second = start(endpos)
    assert second.returncode == 0 and not second.timed_out, second.describe()
    assert second.stdout == "", "events went to standard output, not stdout.output"
    info = runner.wait_slot_inactive(admin, f"{name}_slot")
    assert runner.lsn_to_int(info["confirmed_flush_lsn"]) <= runner.lsn_to_int(endpos), info
    return expected, first, second


def check_events(path, expected, name):
    with open(path) as f:
        events = [json.loads(line) for line in f.read().split("\n") if line.strip()]
    rows = [e for e in events if e.get("op") in ("insert", "update", "delete")]
    assert all(e["table"] == f"{name}_in" and e["schema"] == "public" for e in rows), rows
    got = [(e["op"], e["key"]["id"], e.get("after")) for e in rows]
    assert got == expected, got


def test_config_file_alone_streams_to_endpos(pgfanout, cluster, admin, tmp_path):
    """Everything from the file (--config is the only flag): source.dsn/slot/publication/
    create_slot/create_publication/tables/endpos, sinks [stdout], stdout.output."""
    out = os.path.join(str(tmp_path), "file-run.jsonl")
    cfg = os.path.join(str(tmp_path), "run.yaml")

    def start(endpos):
        with open(cfg, "w") as f:
            f.write(f"""# end-to-end config
source:
  dsn: {json.dumps(cluster.dsn())}
  slot: cfg_slot
  publication: cfg_pub
  create_slot: true
  create_publication: yes
  tables: "public.cfg_in"
  status_interval: 1
  endpos: "{endpos}"
sinks: [stdout]
stdout:
  output: {json.dumps(out)}
log:
  level: info
  format: json
shutdown_timeout: 5
""")
        return run(["--config", cfg], timeout=60)

    expected, first, second = two_runs(cluster, admin, "cfg", start)
    check_events(out, expected, "cfg")
    # log.format json from the file: every stderr line is a JSON object.
    for line in (first.stderr + second.stderr).strip().split("\n"):
        assert isinstance(json.loads(line), dict), line


def test_environment_alone_streams_to_endpos(pgfanout, cluster, admin, tmp_path):
    """The same with no arguments at all: every setting from PGFANOUT_* variables."""
    out = os.path.join(str(tmp_path), "env-run.jsonl")

    def start(endpos):
        env = {
            "PGFANOUT_SOURCE_DSN": cluster.dsn(),
            "PGFANOUT_SOURCE_SLOT": "env_slot",
            "PGFANOUT_SOURCE_PUBLICATION": "env_pub",
            "PGFANOUT_SOURCE_CREATE_SLOT": "true",
            "PGFANOUT_SOURCE_CREATE_PUBLICATION": "on",
            "PGFANOUT_SOURCE_TABLES": "env_in",
            "PGFANOUT_SOURCE_STATUS_INTERVAL": "1",
            "PGFANOUT_SOURCE_ENDPOS": endpos,
            "PGFANOUT_SINKS": "stdout",
            "PGFANOUT_STDOUT_OUTPUT": out,
            "PGFANOUT_LOG_FORMAT": "logfmt",
            "PGFANOUT_SHUTDOWN_TIMEOUT": "5",
        }
        return run([], env, timeout=60)

    expected, first, second = two_runs(cluster, admin, "env", start)
    check_events(out, expected, "env")
    for line in (first.stderr + second.stderr).strip().split("\n"):
        assert re.match(r"^\S+=", line), f"not logfmt: {line!r}"


def test_runtime_refuses_unknown_kafka_property_without_leaking(pgfanout):
    """The real run checks the Kafka settings before connecting: a bad librdkafka property
    is exit 2 naming it, the PostgreSQL server never sees a connection, and the sasl.password
    given beside it is never printed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        dsn = f"host=127.0.0.1 port={listener.getsockname()[1]} dbname=app user=alice connect_timeout=3"
        res = run(["--sink", "kafka", "--kafka-brokers", "127.0.0.1:9", "--kafka-conf", f"sasl.password={PW}",
                   "--kafka-conf", "no.such.property=1"],
                  {"PGFANOUT_SOURCE_DSN": dsn, "PGFANOUT_SOURCE_SLOT": "kconf_slot",
                   "PGFANOUT_SOURCE_PUBLICATION": "kconf_pub"}, timeout=60)
        assert res.returncode == 2, res.describe()
        assert "'no.such.property'" in res.stderr, res.describe()
        assert PW not in res.stderr + res.stdout
        with pytest.raises(BlockingIOError):
            conn, _ = listener.accept()
            conn.close()
            pytest.fail("pgfanout connected to PostgreSQL before checking the Kafka settings")


def test_help_lists_each_flag_once(pgfanout):
    """--help names each flag on one line of its own, once (it used to list --config twice, once
    with stale text)."""
    res = run(["--help"])
    assert res.returncode == 0, res.describe()
    flags = re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", res.stdout, re.M)
    assert flags and len(flags) == len(set(flags)), sorted(f for f in flags if flags.count(f) > 1)
    for flag in ("--config", "--progress-interval", "--allow-missing-replica-identity", "--kafka-on-oversize"):
        assert flag in flags, (flag, res.stdout)


@pytest.mark.parametrize("key,flag", [("kafka.topic_template", "--topic-template"),
                                      ("kafka.message_topic", "--message-topic"),
                                      ("kafka.dead_letter_topic", "--dead-letter-topic")])
def test_bad_topic_template_error_names_its_own_origin(pgfanout, key, flag):
    """A bad template is blamed on the setting that holds it, with that setting's origin, never
    on another template (a bad dead_letter_topic used to be reported as kafka.topic_template's)."""
    res = run(["--check-config", "--sink", "kafka", "--kafka-brokers", "127.0.0.1:9", flag, "{bogus}"])
    assert res.returncode == 2, res.describe()
    assert f"({key} from flag {flag})" in res.stderr, res.stderr
    others = {"kafka.topic_template", "kafka.message_topic", "kafka.dead_letter_topic"} - {key}
    assert not any(f"({o} from" in res.stderr for o in others), res.stderr
