"""The Kafka test broker itself: Debian's librdkafka (the one pgfanout links) produces to it
with pgfanout's producer settings (acks=all, idempotence), consume_all reads exactly what was
written, and data outlives a stop/restart and a SIGKILL/restart."""
import os
import time
import uuid

import pytest
from confluent_kafka import KafkaError, Producer

from kafkabroker import KafkaBroker, consume_all

# What pgfanout's producer will use.
PRODUCER_CONF = {"acks": "all", "enable.idempotence": True}


@pytest.fixture(scope="module")
def broker():
    b = KafkaBroker()
    t0 = time.monotonic()
    b.start()
    print(f"kafka broker up at {b.bootstrap} in {time.monotonic() - t0:.2f} s")
    yield b
    root = b.root
    b.cleanup()
    assert not os.path.exists(root)


def produce(bootstrap, topic, messages, **conf):
    """Produces (key, value, headers) triples with one producer; returns the delivery reports
    as (error, partition, offset, key, value, headers) in produce order, and the producer."""
    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF, **conf})
    return send(p, topic, messages), p


def send(p, topic, messages, flush_timeout=30):
    reports = []

    def on_delivery(headers):
        # Delivery reports carry no headers, so remember the ones produced.
        return lambda err, msg: reports.append(
            (err, msg.partition(), msg.offset(), msg.key(), msg.value(), headers))

    for key, value, headers in messages:
        p.produce(topic, key=key, value=value, headers=headers,
                  on_delivery=on_delivery(headers))
    remaining = p.flush(flush_timeout)
    assert remaining == 0, f"{remaining} messages not delivered in {flush_timeout} s"
    assert len(reports) == len(messages)
    return reports


def expected_records(topic, reports):
    """What consume_all should return for these successful deliveries."""
    assert all(r[0] is None for r in reports), [r[0] for r in reports]
    return sorted((topic, part, off, key, value, headers)
                  for _, part, off, key, value, headers in reports)


def got(records):
    return [(r.topic, r.partition, r.offset, r.key, r.value, r.headers) for r in records]


MESSAGES = [
    (b"k1", b'{"op":"c","n":1}', [("pgfanout-lsn", b"0/16B3748"), ("table", b"public.t")]),
    (b"k2", b"\x00\x01\xff binary", [("h", b"a"), ("h", b"b")]),  # repeated header name
    (b"k3", None, [("tombstone", b"1")]),                           # null value
    (None, b"no key", []),                                          # null key, no headers
    (b"k1", b'{"op":"u","n":2}', [("pgfanout-lsn", b"0/16B3800")]),
]


def test_bootstrap_is_loopback(broker):
    host, port = broker.bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) == broker.port
    assert broker.pid is not None and broker.proc.poll() is None


def test_idempotent_produce_then_consume_all(broker):
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    reports, _ = produce(broker.bootstrap, topic, MESSAGES)
    want = expected_records(topic, reports)
    # The same key lands on the same partition, in produce order.
    k1 = [(part, off) for _, part, off, key, _, _ in reports if key == b"k1"]
    assert k1[0][0] == k1[1][0] and k1[0][1] < k1[1][1]
    records = consume_all(broker.bootstrap, [topic], timeout=30)
    assert got(records) == want
    by_key = {r.key: r for r in records if r.key != b"k1"}
    assert by_key[b"k2"].value == b"\x00\x01\xff binary"
    assert by_key[b"k2"].headers == [("h", b"a"), ("h", b"b")]
    assert by_key[b"k3"].value is None
    assert by_key[None].headers == []
    # Reading again gives the same (a fresh group each time, nothing committed).
    assert got(consume_all(broker.bootstrap, topic, timeout=30)) == want


def test_consume_all_of_a_missing_topic_is_empty(broker):
    assert consume_all(broker.bootstrap, [f"absent-{uuid.uuid4().hex[:8]}"], timeout=10) == []


def test_create_topics_then_produce(broker):
    topic = f"created-{uuid.uuid4().hex[:8]}"
    broker.create_topics(topic, partitions=2)
    broker.create_topics(topic)  # already there: no error
    reports, _ = produce(broker.bootstrap, topic, [(b"k%d" % i, b"v", []) for i in range(20)])
    assert {part for _, part, *_ in reports} == {0, 1}
    assert got(consume_all(broker.bootstrap, topic, timeout=30)) == expected_records(topic,
                                                                                     reports)


def test_stop_fails_produce_and_restart_keeps_data(broker):
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    broker.create_topics(topic)
    before, long_lived = produce(broker.bootstrap, topic, MESSAGES[:3])
    want_before = expected_records(topic, before)
    port, pid = broker.port, broker.pid

    broker.stop()
    assert broker.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # With the broker down a produce fails once message.timeout.ms runs out.
    failed, _ = produce(broker.bootstrap, topic, [(b"lost", b"x", [])],
                        **{"message.timeout.ms": 1500})
    assert failed[0][0] is not None
    assert failed[0][0].code() == KafkaError._MSG_TIMED_OUT, failed[0][0]

    t0 = time.monotonic()
    broker.restart()
    print(f"kafka broker restarted in {time.monotonic() - t0:.2f} s")
    assert broker.port == port and broker.pid != pid
    assert got(consume_all(broker.bootstrap, [topic], timeout=30)) == want_before

    # A new producer, and the one that lived through the restart, both deliver.
    after, _ = produce(broker.bootstrap, topic, MESSAGES[3:])
    again = send(long_lived, topic, [(b"k9", b"after restart", [("h", b"9")])])
    want = sorted(want_before + expected_records(topic, after) + expected_records(topic, again))
    assert got(consume_all(broker.bootstrap, [topic], timeout=30)) == want


def test_kill_and_restart_recovers(broker):
    topic = f"kill-{uuid.uuid4().hex[:8]}"
    broker.create_topics(topic)
    reports, _ = produce(broker.bootstrap, topic, MESSAGES)
    want = expected_records(topic, reports)
    broker.kill()  # acks=all on one broker: acknowledged means in the log, even after SIGKILL
    assert broker.proc is None
    broker.restart()
    assert got(consume_all(broker.bootstrap, [topic], timeout=30)) == want

