"""confluent-kafka (librdkafka inside) against `weir serve`: an idempotent acks=all producer
with delivery reports (100,000 lz4-compressed messages), a consumer group of two members that rebalances when one leaves, and
transactions (commit, abort, read_committed, fencing). Run by the `weir` crate's interop tests
as `python confluent_clients.py BOOTSTRAP`; exits non-zero with a message on any failure."""

import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  NewPartitions, NewTopic, ResourceType)

BOOTSTRAP = sys.argv[1]
MESSAGES = 100_000


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def create(admin, name, partitions):
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=10)


def produce_idempotent(topic):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "compression.type": "lz4"})
    delivered, failed = [], []

    def report(err, msg):
        (failed if err else delivered).append(err or (msg.partition(), msg.offset()))

    for i in range(MESSAGES):
        while True:
            try:
                p.produce(topic, key=f"key-{i % 100}", value=f"value-{i}", on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    check(p.flush(30) == 0, "producer flushed everything")
    check(not failed, f"no delivery failed: {failed[:3]}")
    check(len(delivered) == MESSAGES, f"{len(delivered)} delivery reports")
    check(len(set(delivered)) == MESSAGES, "every record has its own offset")


def consumer(group, **extra):
    conf = {"bootstrap.servers": BOOTSTRAP, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000}
    conf.update(extra)
    return Consumer(conf)


def commit(c):
    """A synchronous commit; one that meets a rebalance is retried by the next round, as a
    real application does (Kafka answers REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION)."""
    try:
        c.commit(asynchronous=False)
    except KafkaException as e:
        code = e.args[0].code()
        check(code in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                       KafkaError._NO_OFFSET), f"commit failed: {e}")


def consume_group(topic, group):
    a, b = consumer(group), consumer(group)
    a.subscribe([topic])
    b.subscribe([topic])
    seen = {}
    deadline = time.time() + 60
    while len(seen) < MESSAGES and time.time() < deadline:
        for c, name in ((a, "a"), (b, "b")):
            batch = c.consume(500, 0.2)
            for m in batch:
                check(m.error() is None, f"consume error {m.error()}")
                seen[(m.partition(), m.offset())] = name
            if batch:
                commit(c)
    check(len(seen) == MESSAGES, f"group saw {len(seen)} of {MESSAGES}")
    check(set(seen.values()) == {"a", "b"}, "both members consumed")
    # One member leaves: the other takes over every partition.
    b.close()
    deadline = time.time() + 30
    while len(a.assignment()) < 6 and time.time() < deadline:
        a.consume(100, 0.2)
    check(len(a.assignment()) == 6, f"after a leave the survivor owns {len(a.assignment())} of 6")
    committed = a.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    check(all(tp.offset >= 0 for tp in committed), f"committed offsets {committed}")
    a.close()


def transactions(topic):
    def txn_producer():
        p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": "weir-interop-txn"})
        p.init_transactions(10)
        return p

    p = txn_producer()
    for round_ in range(4):
        p.begin_transaction()
        for i in range(10):
            p.produce(topic, key=f"k{i}", value=f"round-{round_}-{i}")
        if round_ % 2 == 0:
            p.commit_transaction(10)
        else:
            p.abort_transaction(10)
    c = consumer("txn-reader", **{"isolation.level": "read_committed"})
    c.subscribe([topic])
    values = []
    deadline = time.time() + 30
    while len(values) < 20 and time.time() < deadline:
        for m in c.consume(100, 0.5):
            check(m.error() is None, f"consume error {m.error()}")
            values.append(m.value().decode())
    c.close()
    check(sorted(values) == sorted(f"round-{r}-{i}" for r in (0, 2) for i in range(10)),
          f"read_committed sees exactly the committed rounds, got {len(values)}")
    # A second instance with the same transactional.id fences the first.
    q = txn_producer()
    try:
        p.begin_transaction()
        p.produce(topic, value="zombie")
        p.commit_transaction(10)
        check(False, "the fenced producer could commit")
    except KafkaException as e:
        check(e.args[0].fatal() or "fenced" in str(e).lower(), f"fenced error: {e}")
    q.begin_transaction()
    q.produce(topic, value="successor")
    q.commit_transaction(10)


def consume_transform_produce():
    """Exactly-once copy: each input becomes one output, with the consumer's offsets sent to
    the transaction; the first transaction is aborted and its input read again."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    create(admin, "ctp-in", 1)
    create(admin, "ctp-out", 1)
    plain = Producer({"bootstrap.servers": BOOTSTRAP})
    for i in range(30):
        plain.produce("ctp-in", value=f"in-{i}")
    check(plain.flush(10) == 0, "input flushed")
    c = consumer("ctp-group", **{"isolation.level": "read_committed"})
    c.subscribe(["ctp-in"])
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": "weir-ctp"})
    p.init_transactions(10)
    done, aborted_once = 0, False
    deadline = time.time() + 60
    while done < 30 and time.time() < deadline:
        msgs = c.consume(10, 0.5)
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            check(m.error() is None, f"consume error {m.error()}")
            p.produce("ctp-out", value=b"out-" + m.value())
        if not aborted_once:
            p.abort_transaction(10)
            aborted_once = True
            for tp in c.committed(c.assignment(), 10):
                c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            continue
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 10)
        p.commit_transaction(10)
        done += len(msgs)
    c.close()
    check(done == 30, f"copied {done} of 30")
    reader = consumer("ctp-check", **{"isolation.level": "read_committed"})
    reader.subscribe(["ctp-out"])
    out = []
    deadline = time.time() + 30
    while len(out) < 30 and time.time() < deadline:
        out += [m.value().decode() for m in reader.consume(100, 0.5) if m.error() is None]
    # Anything aborted would show up here as a duplicate.
    extra = reader.consume(100, 1.0)
    reader.close()
    check(sorted(out) == sorted(f"out-in-{i}" for i in range(30)) and not extra,
          f"each input copied exactly once, got {len(out)} + {len(extra)}")
    check_committed = consumer("ctp-group")
    committed = check_committed.committed([TopicPartition("ctp-in", 0)], timeout=10)
    check_committed.close()
    check(committed[0].offset == 30, f"the group's committed offset is {committed[0].offset}")


def administration():
    """AdminClient: configs, partitions, delete-records, cluster, groups, topic deletion."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    create(admin, "admin-t", 2)
    res = ConfigResource(ResourceType.TOPIC, "admin-t")
    configs = admin.describe_configs([res])[res].result(10)
    check(configs["retention.ms"].value == "604800000", f"default retention {configs['retention.ms']}")
    change = ConfigResource(ResourceType.TOPIC, "admin-t", incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([change])[change].result(10)
    configs = admin.describe_configs([res])[res].result(10)
    check(configs["retention.ms"].value == "60000", "retention.ms altered")
    bad = ConfigResource(ResourceType.TOPIC, "admin-t", incremental_configs=[
        ConfigEntry("segment.bytes", "1", incremental_operation=AlterConfigOpType.SET)])
    try:
        admin.incremental_alter_configs([bad])[bad].result(10)
        check(False, "an invalid config value was accepted")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.INVALID_CONFIG, f"invalid config error: {e}")
    admin.create_partitions([NewPartitions("admin-t", 4)])["admin-t"].result(10)
    md = admin.list_topics("admin-t", timeout=10)
    check(len(md.topics["admin-t"].partitions) == 4, "grown to 4 partitions")
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    for i in range(10):
        p.produce("admin-t", value=f"v{i}", partition=3)
    check(p.flush(10) == 0, "flushed")
    deleted = admin.delete_records([TopicPartition("admin-t", 3, 6)])
    low = list(deleted.values())[0].result(10)
    check(low.low_watermark == 6, f"delete_records low watermark {low.low_watermark}")
    cluster = admin.describe_cluster().result(10)
    check(len(cluster.nodes) == 1 and cluster.cluster_id, f"cluster {cluster}")
    groups = admin.list_consumer_groups().result(10)
    names = {g.group_id for g in groups.valid}
    check("interop-group" in names, f"groups listed: {names}")
    described = admin.describe_consumer_groups(["interop-group"])["interop-group"].result(10)
    check(described.group_id == "interop-group", f"group described: {described}")
    admin.delete_topics(["admin-t"])["admin-t"].result(10)
    check("admin-t" not in admin.list_topics(timeout=10).topics, "topic deleted")


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    create(admin, "interop-events", 6)
    create(admin, "interop-txn", 1)
    produce_idempotent("interop-events")
    consume_group("interop-events", "interop-group")
    transactions("interop-txn")
    consume_transform_produce()
    administration()
    print("confluent-kafka: ok")


main()
