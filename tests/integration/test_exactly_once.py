"""Exactly-once into Kafka (kafka.exactly_once): a transactional producer whose every Kafka
transaction also writes its checkpoint (the end LSN of the last whole PostgreSQL transaction in
it, and for a split one how many of its changes) to the state topic; a restart skips what the
checkpoint covers.  A read_committed consumer must then find every change exactly once.
Against a real PostgreSQL 15, a real Kafka broker (KRaft) and a reference test_decoding slot:

- 20 x kill -9 at random points during 500k changes over 4 tables, with multi-statement
  transactions and one 100k-row transaction split over several Kafka transactions:
  0 missing, 0 duplicates (the seed is printed);
- the same run with exactly-once off shows duplicates, so the counting can fail;
- a broker restart in the middle of a transaction: pgfanout rides it out (or stops without
  confirming and is restarted, as a service manager would), nothing lost or doubled;
- two instances started at once on one slot: the one holding the slot is frozen (a zombie),
  the other takes the slot over and fences it; the zombie, woken, exits saying it was fenced,
  and nothing is duplicated."""
import os
import random
import signal
import time

import pytest

import kafka_replay
import runner
from churn import Churn
from kafka_replay import Decoded, compare_with_reference, reference_transactions, unique_events
from kafkabroker import consume_all
from runner import is_asan_binary, wait_for

SEED = int(os.environ.get("PGFANOUT_EO_SEED", "20261130"))
# wal_sender_timeout: a frozen instance loses its slot within seconds (the fencing test).
PG_CONF = {"wal_sender_timeout": "3s"}


def args_for(cluster, broker, name, exactly_once, *extra, max_records=20000):
    args = ["--dsn", cluster.dsn(), "--slot", f"{name}_slot", "--publication", f"{name}_pub",
            "--sink", "kafka", "--kafka-brokers", broker.bootstrap, "--topic-prefix", name,
            "--status-interval", "0.5", "--state-topic", f"{name}.state",
            # a fifth of a second of records in flight, so kills hit them
            "--kafka-conf", "linger.ms=200", *extra]
    if exactly_once:
        args += ["--exactly-once", "--transaction-max-records", str(max_records)]
    return args


def make_tables(admin, name, churns):
    for c in churns:
        c.create(admin)
    tables = [t for c in churns for t in c.tables]
    admin.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE "
                  + ", ".join(f"{s}.{t}" for s, t in tables))
    admin.execute(f"SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')")
    admin.execute(f"SELECT pg_create_logical_replication_slot('{name}_ref', 'test_decoding')")
    return tables


def count(admin, broker, name, tables):
    """Reads every table topic with read_committed and compares it with the reference slot:
    returns (changes in the reference, missing changes, duplicate records, problems)."""
    ref = reference_transactions(admin, f"{name}_ref", tables)
    records = consume_all(broker.bootstrap, [f"{name}.{s}.{t}" for s, t in tables], timeout=300)
    decoded = Decoded(records)
    assert not decoded.problems, "\n".join(decoded.problems[:10])
    events, dups, conflicts = unique_events(decoded.records)
    assert not conflicts, conflicts[:2]
    n_ref = kafka_replay.count_changes(ref)
    got = sum(1 for e in events if e["op"] in ("insert", "update", "delete"))
    problems = compare_with_reference(ref, events)
    return n_ref, n_ref - got, dups, problems


def catch_up_and_count(admin, broker, args, name, tables):
    """A last --endpos run to the server's current position (exit 0), then count()."""
    end = runner.current_lsn(admin)
    final = runner.run_pgfanout(args + ["--endpos", end], timeout=600)
    assert not final.timed_out and final.returncode == 0, final.describe()
    return count(admin, broker, name, tables)


def assert_once(missing, dups, problems):
    """Every change of the reference is in Kafka, exactly once."""
    assert missing == 0 and not problems, "\n".join(problems[:20])
    assert dups == 0, f"{dups} duplicates with exactly-once"


def drop(admin, name):
    for slot in (f"{name}_slot", f"{name}_ref"):
        if runner.slot_info(admin, slot) is not None:
            runner.wait_slot_inactive(admin, slot, timeout=30)
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly_once", "at_least_once"])
def test_kill9_exactly_once(pgfanout, cluster, admin, broker, pb2, tmp_path, exactly_once):
    """kill -9 at random points while 500k changes stream (a 100k-row transaction first, so the
    early kills land inside it and its split Kafka transactions); after a final catch-up run a
    read_committed consumer finds each change exactly once.  Without exactly-once the same
    run must show duplicates (fewer kills and changes there: they only need to show)."""
    name = "eo" if exactly_once else "alo"
    kills_wanted, per_churn = (20, 200_000) if exactly_once else (6, 40_000)
    big = 100_000 if exactly_once else 20_000
    delays, pause = (0.5, 3.0), 0.0
    if is_asan_binary(pgfanout):
        # The sanitizer build runs the same kills over a fifth of the changes (about 5x
        # slower, it would take the suite past its time), with longer runs between kills
        # (it starts slower) and the writers paced so that changes still flow for most of
        # the kills; the plain build runs them all.
        per_churn, big, delays = per_churn // 5, big // 5, (2.0, 6.0)
        pause = 0.05 if exactly_once else 0.2
        kills_wanted = min(kills_wanted, 10)
    rng = random.Random(SEED)
    churns = [Churn(cluster.dsn(), f"{name}1", SEED, per_churn, threads=2, pause=pause, max_seconds=400),
              Churn(cluster.dsn(), f"{name}2", SEED + 1, per_churn, threads=2, pause=pause, max_seconds=400)]
    tables = make_tables(admin, name, churns)
    # The big one: 100k inserts in one transaction, before anything else.
    admin.execute(f"INSERT INTO {name}1_b SELECT -g, 'big' FROM generate_series(1, {big}) g")
    print(f"\n{name}: seed {SEED}; one {big}-row transaction, then 2 x {per_churn} changes in "
          f"multi-statement transactions over {len(tables)} tables; {kills_wanted} kills")
    # The big transaction is split into five Kafka transactions.
    args = args_for(cluster, broker, name, exactly_once, max_records=big // 5)
    kills, log, resumed_partial = 0, [], 0
    try:
        for c in churns:
            c.start()
        while kills < kills_wanted:
            err = str(tmp_path / f"run{kills}.err")
            with runner.Worker(args, stderr_path=err) as w:
                delay = rng.uniform(*delays)
                time.sleep(delay)
                assert w.running(), (f"pgfanout exited by itself ({w.proc.returncode}) before kill "
                                     f"{kills + 1}:\n{w.stderr_text()[-3000:]}")
                w.proc.send_signal(signal.SIGKILL)
                w.proc.wait()
                resumed_partial += '"partial":{' in w.stderr_text()
            kills += 1
            runner.wait_slot_inactive(admin, f"{name}_slot", timeout=30)
            log.append((round(delay, 2), runner.slot_info(admin, f"{name}_slot")["confirmed_flush_lsn"],
                        sum(c.changes for c in churns)))
        for c in churns:
            assert c.join(timeout=400), "workload did not finish"
            assert c.fatal is None, c.fatal
        n_ref, missing, dups, problems = catch_up_and_count(admin, broker, args, name, tables)
        print(f"{name}: {kills} kills (delay s, confirmed, changes committed): {log}")
        print(f"{name}: {n_ref} changes; missing {missing}, duplicates {dups}; "
              f"{resumed_partial} restarts resumed inside a split transaction")
        assert n_ref >= big + 2 * per_churn
        assert missing == 0 and not problems, "\n".join(problems[:20])
        if exactly_once:
            assert dups == 0, f"{dups} duplicates with exactly-once"
            assert len({c for _, c, _ in log}) > 2, f"the slot barely advanced: {log}"
        else:
            assert dups > 0, "no duplicates without exactly-once: the test could not tell"
    finally:
        for c in churns:
            c.stop()
            c.join(timeout=60)
        drop(admin, name)


def supervise(args, tmp_path, until, label, timeout=300):
    """Runs pgfanout again whenever it exits (as a service manager would) until until() is
    true; returns the exit codes and the last stderr."""
    codes, n = [], 0
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        err = str(tmp_path / f"{label}{n}.err")
        with runner.Worker(args, stderr_path=err) as w:
            while w.running() and not until() and time.monotonic() < deadline:
                time.sleep(0.2)
            code = w.terminate() if w.running() else w.proc.returncode
            codes.append(code)
            if code not in (0, None):
                print(f"{label}: pgfanout exited {code}: {w.stderr_text().strip().splitlines()[-1][:300]}")
        n += 1
    return codes


def test_broker_restart_mid_transaction(pgfanout, cluster, admin, broker, pb2, tmp_path):
    """The broker is restarted while pgfanout is inside Kafka transactions; whatever pgfanout
    does (wait, or stop without confirming and be restarted), a read_committed consumer ends
    with every change exactly once."""
    name = "ebr"
    churn = Churn(cluster.dsn(), name, SEED + 7, 20_000 if is_asan_binary(pgfanout) else 60_000, threads=2,
                  max_seconds=300)
    tables = make_tables(admin, name, [churn])
    args = args_for(cluster, broker, name, True)
    churn.start()
    restarted = []

    def restart_broker_once():
        if not restarted and churn.changes > 5_000:
            restarted.append(churn.changes)  # the changes made when the restart began
            broker.restart()
        return churn.done() and not churn.alive()

    try:
        codes = supervise(args, tmp_path, restart_broker_once, "ebr", timeout=400)
        assert restarted, "the broker was not restarted"
        assert churn.join(timeout=300) and churn.fatal is None, churn.fatal
        n_ref, missing, dups, problems = catch_up_and_count(admin, broker, args, name, tables)
        print(f"\nbroker restart after {restarted[0]} changes; pgfanout exits {codes}; {n_ref} changes, "
              f"missing {missing}, duplicates {dups}")
        assert_once(missing, dups, problems)
    finally:
        churn.stop()
        churn.join(timeout=60)
        drop(admin, name)


def test_two_instances_one_is_fenced(pgfanout, cluster, admin, broker, pb2, tmp_path):
    """Two instances start at once on one slot.  The one holding the slot is frozen (SIGSTOP)
    mid-stream, a zombie; the server drops its walsender, the other takes the slot and, by the
    shared transactional.id, fences the zombie's producer.  Woken (SIGCONT), the zombie exits
    saying it was fenced; the consumer finds every change exactly once."""
    name = "efz"
    churn = Churn(cluster.dsn(), name, SEED + 11, 40_000, threads=2, pause=0.002, max_seconds=300)
    tables = make_tables(admin, name, [churn])
    args = args_for(cluster, broker, name, True)
    churn.start()
    try:
        with runner.Worker(args, stderr_path=str(tmp_path / "a.err")) as a, \
                runner.Worker(args, stderr_path=str(tmp_path / "b.err")) as b:
            slot = lambda: runner.slot_info(admin, f"{name}_slot")  # noqa: E731
            assert wait_for(lambda: slot()["active"], 60)
            assert wait_for(lambda: any("streaming slot" in w.stderr_text() for w in (a, b)), 60)
            first = a if "streaming slot" in a.stderr_text() else b
            other = b if first is a else a
            time.sleep(1.0)  # records and Kafka transactions under way
            first.proc.send_signal(signal.SIGSTOP)
            assert wait_for(lambda: "streaming slot" in other.stderr_text(), 60), other.stderr_text()[-2000:]
            time.sleep(1.0)
            first.proc.send_signal(signal.SIGCONT)
            code = first.wait(timeout=90)
            text = first.stderr_text()
            print(f"\nzombie exited {code}: {[l for l in text.splitlines() if 'fenced' in l][:1]}")
            assert code == 1, text[-3000:]
            assert "fenced" in text and "pgfanout-efz_slot" in text, text[-3000:]
            assert other.running(), other.stderr_text()[-3000:]
            assert churn.join(timeout=300) and churn.fatal is None, churn.fatal
            assert other.terminate() == 0, other.stderr_text()[-3000:]
        n_ref, missing, dups, problems = catch_up_and_count(admin, broker, args, name, tables)
        print(f"two instances: {n_ref} changes, missing {missing}, duplicates {dups}")
        assert_once(missing, dups, problems)
    finally:
        churn.stop()
        churn.join(timeout=60)
        drop(admin, name)


def test_commit_right_after_a_message(pgfanout, cluster, admin, broker, pb2):
    """A non-transactional message written last inside a transaction: the commit record starts
    exactly where the message's record ends (the message's LSN).  The transaction must not be
    taken for one Kafka already holds (nor confirmed past): its row reaches Kafka once, and a
    second run adds nothing."""
    name = "emsg"
    admin.execute(f"CREATE TABLE {name} (id int8 PRIMARY KEY, v text)")
    admin.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE {name}")
    admin.execute(f"SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')")
    admin.execute(f"SELECT pg_create_logical_replication_slot('{name}_ref', 'test_decoding')")
    try:
        with runner.connect(cluster.dsn(), autocommit=False) as conn:
            for i in range(1, 4):
                conn.execute(f"INSERT INTO {name} VALUES (%s, 'x')", (i,))
                msg = conn.execute("SELECT pg_logical_emit_message(false, 'emsg', 'between')::text").fetchone()[0]
                conn.commit()
        args = args_for(cluster, broker, name, True)
        for _ in range(2):
            end = runner.current_lsn(admin)
            run = runner.run_pgfanout(args + ["--endpos", end], timeout=120)
            assert run.returncode == 0, run.describe()
        n_ref, missing, dups, problems = count(admin, broker, name, [("public", name)])
        commits = {r.ev["commit_lsn"] for r in Decoded(consume_all(
            broker.bootstrap, [f"{name}.public.{name}"], timeout=60)).records if r.ev}
        print(f"\nmessage then commit: {n_ref} changes, missing {missing}, duplicates {dups}; the last commit "
              f"record starts at the message's end {msg}: {msg in commits}")
        assert msg in commits, f"no commit starts at the message's end {msg}: {commits}"
        assert n_ref == 3 and missing == 0 and dups == 0 and not problems, problems
    finally:
        drop(admin, name)
