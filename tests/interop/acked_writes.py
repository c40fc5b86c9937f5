"""Writes to `weir serve` with an idempotent acks=all producer until killed, logging every
acknowledged record as `partition offset value` (one line, flushed, as the ack arrives). The
crash test kills the server under this load and checks that every logged record survived.
Usage: acked_writes.py BOOTSTRAP TOPIC ACK_LOG"""

import sys

from confluent_kafka import Producer

BOOTSTRAP, TOPIC, ACK_LOG = sys.argv[1], sys.argv[2], sys.argv[3]

acks = open(ACK_LOG, "w", buffering=1)


def report(err, msg):
    if err is None:
        acks.write(f"{msg.partition()} {msg.offset()} {msg.value().decode()}\n")


p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True,
              "linger.ms": 2, "message.timeout.ms": 30000})
i = 0
while True:
    try:
        p.produce(TOPIC, key=f"k{i % 64}", value=f"v{i}", on_delivery=report)
        i += 1
    except BufferError:
        p.poll(0.01)
    p.poll(0)
