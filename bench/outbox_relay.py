#!/usr/bin/python3
"""The relay of a trigger-based transactional outbox, the baseline `bench/offload.py` compares
pgfanout with: it polls the outbox table, deletes what it reads, produces it to Kafka and
commits only once Kafka acknowledged every record (at-least-once, as a real outbox relay must:
a crash before the commit leaves the rows in the outbox to be sent again).

One loop, one transaction per batch:

  DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT n
                                  FOR UPDATE SKIP LOCKED)
  RETURNING id, tbl, op, key, payload::text
  -> produce each row (in id order) to the topic, keyed by table:key; flush; COMMIT

An empty batch sleeps --poll-ms before the next.  SIGTERM/SIGINT: finish the batch, exit 0.
A delivery error rolls the batch back and exits 1.  Producer settings match pgfanout's
defaults (linger.ms=10, lz4, idempotent, acks=all).  Started by bench/offload.py; run with
Debian's python3 (python3-psycopg, python3-confluent-kafka)."""
import argparse
import signal
import sys
import time

import psycopg
from confluent_kafka import Producer

stop = False


def on_signal(sig, frame):
    global stop
    stop = True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--poll-ms", type=float, default=50)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 10,
                         "compression.codec": "lz4", "enable.idempotence": True,
                         "acks": "all"})
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)

    sql = ("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT %s "
           "FOR UPDATE SKIP LOCKED) RETURNING id, tbl, op, key, payload::text")
    sent = 0
    with psycopg.connect(args.dsn, application_name="outbox-relay") as conn:
        while not stop:
            with conn.transaction():
                rows = conn.execute(sql, (args.batch,)).fetchall()
                rows.sort()  # RETURNING gives no order; the outbox's order is its id
                for rid, tbl, op, key, payload in rows:
                    value = f'{{"id":{rid},"table":"{tbl}","op":"{op}","row":{payload}}}'
                    while True:
                        try:
                            producer.produce(args.topic, value=value, key=f"{tbl}:{key}",
                                             on_delivery=on_delivery)
                            break
                        except BufferError:  # local queue full: let deliveries drain
                            producer.poll(0.05)
                if rows:
                    producer.flush()
                    if failed:
                        raise SystemExit(f"outbox relay: delivery failed: {failed[0]}")
            sent += len(rows)
            if not rows:
                time.sleep(args.poll_ms / 1000.0)
    print(f"outbox relay: {sent} records sent", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
