"""Joins consumer group GROUP on TOPIC with confluent-kafka, prints `assigned N` once the
group gave it partitions, and keeps polling for SECONDS (so another process can look at the
live group), then leaves. Usage: hold_group.py BOOTSTRAP TOPIC GROUP SECONDS"""

import sys
import time

from confluent_kafka import Consumer

BOOTSTRAP, TOPIC, GROUP, SECONDS = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "client.id": "holder",
              "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
c.subscribe([TOPIC])
announced = False
end = time.time() + SECONDS
while time.time() < end:
    c.poll(0.1)
    if not announced and c.assignment():
        print(f"assigned {len(c.assignment())}", flush=True)
        announced = True
c.close()
