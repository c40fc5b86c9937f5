"""kafka-python (pure Python, its own protocol code) against `weir serve`: KafkaAdminClient
creates topics, lists and describes consumer groups and reads their committed offsets; an
acks=all KafkaProducer sends keyed records and records with explicit timestamps;
KafkaConsumer.offsets_for_times finds the first offset at or after a timestamp; a consumer group
reads everything, commits, and the committed offsets read back. Run by the `weir` crate's interop
tests as `python kafka_python_clients.py BOOTSTRAP`; exits non-zero with a message on any
failure."""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

BOOTSTRAP = sys.argv[1]
EVENTS, EVENT_PARTITIONS = "kp-events", 4
TIMES, TIME_PARTITIONS = "kp-times", 2
GROUP = "kp-group"
MESSAGES = 2_000
# Old, explicit CreateTime timestamps (2021-01-01T00:00:00Z), 1 s apart, per partition.
BASE_MS = 1_609_459_200_000
STAMPED = 10


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def admin_create(admin):
    admin.create_topics({
        EVENTS: {"num_partitions": EVENT_PARTITIONS, "replication_factor": 1},
        TIMES: {"num_partitions": TIME_PARTITIONS, "replication_factor": 1},
    }, timeout_ms=10_000)
    topics = admin.list_topics()
    check(EVENTS in topics and TIMES in topics, f"list_topics shows the new topics: {topics}")
    described = {t["name"]: t for t in admin.describe_topics([EVENTS, TIMES])}
    for name, n in ((EVENTS, EVENT_PARTITIONS), (TIMES, TIME_PARTITIONS)):
        t = described.get(name)
        check(t is not None and t["error_code"] == 0, f"describe_topics {name}: {t}")
        check(len(t["partitions"]) == n, f"{name} has {len(t['partitions'])} of {n} partitions")


def produce(producer):
    futures = []
    for i in range(MESSAGES):
        futures.append((f"key-{i % 50}", producer.send(EVENTS, key=f"key-{i % 50}".encode(),
                                                       value=f"value-{i}".encode())))
    # Explicit timestamps on explicit partitions: partition p gets STAMPED records at
    # BASE_MS + p * 100 + i * 1000.
    for p in range(TIME_PARTITIONS):
        for i in range(STAMPED):
            futures.append((None, producer.send(TIMES, key=f"t{i}".encode(), value=b"x",
                                                partition=p,
                                                timestamp_ms=BASE_MS + p * 100 + i * 1000)))
    producer.flush(timeout=30)
    where = {}
    offsets = set()
    for key, f in futures:
        md = f.get(timeout=30)
        offsets.add((md.topic, md.partition, md.offset))
        if key is not None:
            check(where.setdefault(key, md.partition) == md.partition,
                  f"{key} went to partitions {where[key]} and {md.partition}")
        else:
            check(md.timestamp == BASE_MS + md.partition * 100 + md.offset * 1000,
                  f"record metadata timestamp {md.timestamp} at {md.partition}/{md.offset}")
    check(len(offsets) == len(futures), f"{len(offsets)} distinct offsets for {len(futures)} sends")
    check(len(set(where.values())) > 1, "keys spread over more than one partition")


def offsets_for_times():
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10_000)
    tps = [TopicPartition(TIMES, p) for p in range(TIME_PARTITIONS)]
    end = c.end_offsets(tps)
    check(all(end[tp] == STAMPED for tp in tps), f"end offsets {end}")
    begin = c.beginning_offsets(tps)
    check(all(begin[tp] == 0 for tp in tps), f"beginning offsets {begin}")
    for p in range(TIME_PARTITIONS):
        tp = TopicPartition(TIMES, p)
        first = BASE_MS + p * 100
        cases = [
            (0, 0),                    # before everything: the first record
            (first, 0),                # exactly the first
            (first + 1, 1),            # just after the first: the next
            (first + 2_500, 3),        # between 2 and 3
            (first + 7_000, 7),        # exactly a record's timestamp
            (first + (STAMPED - 1) * 1000, STAMPED - 1),
            (first + STAMPED * 1000, None),  # after the last: none
        ]
        for ts, want in cases:
            got = c.offsets_for_times({tp: ts}, timeout_ms=10_000)[tp]
            if want is None:
                check(got is None, f"offsets_for_times({tp}, {ts}) = {got}, expected None")
            else:
                check(got is not None and got.offset == want
                      and got.timestamp == first + want * 1000,
                      f"offsets_for_times({tp}, {ts}) = {got}, expected offset {want} "
                      f"at {first + want * 1000}")
    # Both partitions in one request.
    both = c.offsets_for_times({tp: BASE_MS + 4_050 for tp in tps}, timeout_ms=10_000)
    check([both[tp].offset for tp in tps] == [5, 4], f"two-partition lookup {both}")
    c.close()


def consume_group(admin):
    c = KafkaConsumer(EVENTS, bootstrap_servers=BOOTSTRAP, group_id=GROUP,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
                      request_timeout_ms=15_000)
    seen = {}
    deadline = time.time() + 40
    while len(seen) < MESSAGES and time.time() < deadline:
        for tp, records in c.poll(timeout_ms=500).items():
            for r in records:
                seen[(tp.partition, r.offset)] = (r.key, r.value)
            c.commit()
    check(len(seen) == MESSAGES, f"group saw {len(seen)} of {MESSAGES}")
    values = sorted(int(v.decode().split("-")[1]) for _, v in seen.values())
    check(values == list(range(MESSAGES)), "every value exactly once")
    c.commit()
    tps = [TopicPartition(EVENTS, p) for p in range(EVENT_PARTITIONS)]
    check(c.assignment() == set(tps), f"the only member owns every partition: {c.assignment()}")
    end = c.end_offsets(tps)
    committed = {tp: c.committed(tp, timeout_ms=10_000) for tp in tps}
    check(committed == end, f"committed {committed} equal the end offsets {end}")

    # While the member is in the group, the admin client sees it.
    listed = admin.list_groups()
    check(any(g["group_id"] == GROUP for g in listed), f"list_groups has {GROUP}: {listed}")
    desc = admin.describe_groups([GROUP])[GROUP]
    check(desc["error"] is None, f"describe_groups error {desc['error']}")
    check(desc["group_state"] == "Stable", f"group state {desc['group_state']}")
    check(desc["protocol_type"] == "consumer", f"protocol type {desc['protocol_type']}")
    check(len(desc["members"]) == 1, f"members {desc['members']}")
    assignment = desc["members"][0]["member_assignment"]
    owned = {(t["topic"], p) for t in assignment["assigned_partitions"] for p in t["partitions"]}
    check(owned == {(EVENTS, p) for p in range(EVENT_PARTITIONS)}, f"described assignment {owned}")
    c.close(autocommit=False)

    # After the member leaves: an empty group whose offsets remain, readable by the admin
    # client and by a new consumer of the same group.
    desc = admin.describe_groups([GROUP])[GROUP]
    check(desc["group_state"] == "Empty" and not desc["members"],
          f"after close: state {desc['group_state']}, members {desc['members']}")
    offsets = admin.list_group_offsets({GROUP: None})[GROUP]
    check({tp: om.offset for tp, om in offsets.items()} == end,
          f"admin list_group_offsets {offsets} equal the end offsets {end}")
    again = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=GROUP, enable_auto_commit=False)
    check({tp: again.committed(tp, timeout_ms=10_000) for tp in tps} == end,
          "a new consumer of the group reads the committed offsets")
    again.close(autocommit=False)


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="weir-interop-admin",
                             request_timeout_ms=15_000)
    admin_create(admin)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5,
                             compression_type=None)
    produce(producer)
    producer.close(timeout=10)
    offsets_for_times()
    consume_group(admin)
    admin.close()
    print("kafka-python: ok")


main()
