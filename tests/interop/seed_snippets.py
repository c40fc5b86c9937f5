"""The confluent-kafka producer and consumer snippets of the seed texts (shared/seeds/), run
against `weir serve` as written: nothing changed but `bootstrap.servers`, with their indentation
restored (the seed text lost it), a stub for the handler they call (`process_order_event`) and a
bounded loop where the consumer had `while True`. Each snippet is the body of a function so the
harness can run the producer several times and then the consumer once. Run by the `weir` crate's
interop tests as `python seed_snippets.py BOOTSTRAP`; exits non-zero with a message on any
failure."""

import contextlib
import io
import sys
import time

BOOTSTRAP = sys.argv[1]
RECORDS = 5
KEY = b'order-12345'
VALUE = b'{"event": "order_created", "amount": 99.99}'

processed = []


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def process_order_event(value):
    """Stub for the handler the consumer snippet calls."""
    processed.append(value)


def seed_producer():
    # From shared/seeds/003_c1b182f17b2d2fd9.txt ("Kafka producer example using confluent-kafka").
    # --- seed snippet begins ---
    # Kafka producer example using confluent-kafka
    from confluent_kafka import Producer
    conf = {
        'bootstrap.servers': BOOTSTRAP,
        'acks': 'all', # Wait for all replicas to acknowledge
        'enable.idempotence': True, # Prevent duplicate messages on retries
        'retries': 5,
        'retry.backoff.ms': 100,
    }
    producer = Producer(conf)
    def delivery_callback(err, msg):
        if err:
            print(f"Delivery failed: {err}")
        else:
            print(f"Delivered to {msg.topic()} [{msg.partition()}] @ {msg.offset()}")
    # Partition key ensures all events for the same order go to the same partition
    producer.produce(
        topic='order-events',
        key=b'order-12345',
        value=b'{"event": "order_created", "amount": 99.99}',
        callback=delivery_callback
    )
    producer.flush()
    # --- seed snippet ends ---


def seed_consumer(deadline):
    # From shared/seeds/003_c1b182f17b2d2fd9.txt ("Kafka consumer example"); `while True:`
    # became a loop bounded by the record count and a deadline.
    # --- seed snippet begins ---
    # Kafka consumer example
    from confluent_kafka import Consumer
    conf = {
        'bootstrap.servers': BOOTSTRAP,
        'group.id': 'order-processing-group',
        'auto.offset.reset': 'earliest',
        'enable.auto.commit': False, # Manual commit for at-least-once delivery
    }
    consumer = Consumer(conf)
    consumer.subscribe(['order-events'])
    while len(processed) < RECORDS and time.time() < deadline:
        msg = consumer.poll(timeout=1.0)
        if msg is None:
            continue
        if msg.error():
            print(f"Consumer error: {msg.error()}")
            continue
        # Process the message
        process_order_event(msg.value())
        # Commit offset only after successful processing
        consumer.commit(msg)
    # --- seed snippet ends ---
    return consumer


def main():
    from confluent_kafka import Consumer, TopicPartition

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for _ in range(RECORDS):
            seed_producer()
    lines = out.getvalue().splitlines()
    want = [f"Delivered to order-events [0] @ {i}" for i in range(RECORDS)]
    check(lines == want, f"producer snippet printed {lines}, expected {want}")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        consumer = seed_consumer(time.time() + 30)
    check(out.getvalue() == "", f"consumer snippet printed {out.getvalue()!r}")
    check(processed == [VALUE] * RECORDS,
          f"the handler got {len(processed)} of {RECORDS} records: {processed}")
    consumer.close()

    # The snippet's manual commits (consumer.commit(msg), asynchronous) reached the group.
    reader = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'order-processing-group'})
    committed = reader.committed([TopicPartition('order-events', 0)], timeout=10)
    reader.close()
    check(committed[0].offset == RECORDS,
          f"committed offset {committed[0].offset} after the snippet's {RECORDS} commits "
          f"(consumer.commit(msg): asynchronous, pipelined on one connection), expected {RECORDS}")

    # And the records are where the snippet put them, key and all.
    check_reader = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'seed-check',
                             'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    check_reader.assign([TopicPartition('order-events', 0, 0)])
    got = []
    deadline = time.time() + 20
    while len(got) < RECORDS and time.time() < deadline:
        for m in check_reader.consume(RECORDS, 0.5):
            check(m.error() is None, f"consume error {m.error()}")
            got.append((m.offset(), m.key(), m.value()))
    check_reader.close()
    check(got == [(i, KEY, VALUE) for i in range(RECORDS)], f"records on the topic: {got}")
    print("seed snippets: ok")


main()
