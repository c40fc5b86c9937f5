"""boto3 (PyPI), unmodified, against `weir serve --sqs-listen`: the SQS documentation's flows.

Send, receive, delete; message attributes and their MD5 (computed here by AWS's documented
algorithm); visibility timeout expiry and redelivery; maxReceiveCount to the dead-letter queue
and a redrive back (StartMessageMoveTask); queue and message delays; FIFO order per group
with deduplication; long polling returning as soon as a message arrives; batch calls with
partial failures; SetQueueAttributes acting on the live queue and tags; SQS's errors. With SQS_MODE=auth: SigV4 with the server's credentials, and
SQS's errors for a wrong secret or an unknown key.

Usage: sqs_boto3.py HOST:PORT  (prints "boto3: ok" / "boto3 auth: ok")
"""

import hashlib
import json
import os
import struct
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = "http://" + sys.argv[1]


def client(key="weir", secret="weir"):
    return boto3.client(
        "sqs",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=30),
    )


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise SystemExit("FAILED: the call should have failed")


def attributes_md5(attrs):
    """AWS's documented MD5 of message attributes."""
    buf = b""
    for name in sorted(attrs):
        a = attrs[name]
        data_type = a["DataType"]
        buf += struct.pack(">I", len(name.encode())) + name.encode()
        buf += struct.pack(">I", len(data_type.encode())) + data_type.encode()
        if data_type.startswith("Binary"):
            value = a["BinaryValue"]
            buf += b"\x02" + struct.pack(">I", len(value)) + value
        else:
            value = a["StringValue"].encode()
            buf += b"\x01" + struct.pack(">I", len(value)) + value
    return hashlib.md5(buf).hexdigest()


def receive(sqs, url, **kw):
    return sqs.receive_message(QueueUrl=url, **kw).get("Messages", [])


def basic_flow(sqs):
    url = sqs.create_queue(QueueName="basic", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    check(sqs.create_queue(QueueName="basic", Attributes={"VisibilityTimeout": "1"})["QueueUrl"] == url,
          "CreateQueue is idempotent")
    check(error_code(lambda: sqs.create_queue(QueueName="basic", Attributes={"VisibilityTimeout": "5"}))
          == "QueueAlreadyExists", "different attributes")
    check(sqs.get_queue_url(QueueName="basic")["QueueUrl"] == url, "GetQueueUrl")
    check(url in sqs.list_queues(QueueNamePrefix="ba").get("QueueUrls", []), "ListQueues")
    attrs = {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "n": {"DataType": "Number", "StringValue": "42"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes=attrs)
    check(sent["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest(), "body MD5")
    check(sent["MD5OfMessageAttributes"] == attributes_md5(attrs), "attributes MD5 on send")
    got = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                  MessageAttributeNames=["All"], AttributeNames=["All"])
    check(len(got) == 1 and got[0]["Body"] == "hello", f"received {got}")
    m = got[0]
    check(m["MessageId"] == sent["MessageId"], "message id")
    check(m["MessageAttributes"]["n"] == {"DataType": "Number", "StringValue": "42"}, m)
    check(m["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01\xff", m)
    check(m["MD5OfMessageAttributes"] == attributes_md5(m["MessageAttributes"]), "attributes MD5")
    check(m["Attributes"]["ApproximateReceiveCount"] == "1", m["Attributes"])
    # The 1 s lock runs out: delivered again, counted.
    t = time.time()
    again = receive(sqs, url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])
    check(len(again) == 1 and again[0]["Attributes"]["ApproximateReceiveCount"] == "2", again)
    check(time.time() - t < 4, "redelivered after the visibility timeout")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"])
    check(receive(sqs, url, WaitTimeSeconds=2) == [], "deleted for good")
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    check(a["ApproximateNumberOfMessages"] == "0" and a["VisibilityTimeout"] == "1", a)
    # Visibility changes: extend, then release at once.
    sqs.send_message(QueueUrl=url, MessageBody="again")
    m = receive(sqs, url, WaitTimeSeconds=2)[0]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    m = receive(sqs, url, WaitTimeSeconds=2)[0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Purge.
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"purged {i}")
    sqs.purge_queue(QueueUrl=url)
    check(receive(sqs, url, WaitTimeSeconds=1) == [], "purged")
    check(error_code(lambda: sqs.get_queue_url(QueueName="missing"))
          == "AWS.SimpleQueueService.NonExistentQueue", "missing queue")
    try:
        sqs.get_queue_url(QueueName="missing")
    except sqs.exceptions.QueueDoesNotExist:
        pass
    sqs.delete_queue(QueueUrl=url)
    check(url not in sqs.list_queues().get("QueueUrls", []), "deleted queue")


def dead_letters_and_redrive(sqs):
    dlq = sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    work = sqs.create_queue(QueueName="work", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    got_policy = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["RedrivePolicy"])["Attributes"]
    check(json.loads(got_policy["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn, got_policy)
    sqs.send_message(QueueUrl=work, MessageBody="poison")
    for attempt in range(2):
        m = receive(sqs, work, WaitTimeSeconds=2)
        check(len(m) == 1, f"attempt {attempt}: {m}")
        # The worker fails: it gives the message back at once.
        sqs.change_message_visibility(QueueUrl=work, ReceiptHandle=m[0]["ReceiptHandle"], VisibilityTimeout=0)
    check(receive(sqs, work, WaitTimeSeconds=1) == [], "moved to the DLQ after 2 receives")
    dead = receive(sqs, dlq, WaitTimeSeconds=2)
    check([d["Body"] for d in dead] == ["poison"], dead)
    sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=dead[0]["ReceiptHandle"], VisibilityTimeout=0)
    check(sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [work], "DLQ sources")
    task = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    deadline = time.time() + 10
    while True:
        results = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        mine = [r for r in results if r["TaskHandle"] == task]
        if mine and mine[0]["Status"] == "COMPLETED":
            check(mine[0]["ApproximateNumberOfMessagesMoved"] == 1, mine)
            break
        check(time.time() < deadline and (not mine or mine[0]["Status"] == "RUNNING"), results)
        time.sleep(0.1)
    back = receive(sqs, work, WaitTimeSeconds=2, AttributeNames=["ApproximateReceiveCount"])
    check([b["Body"] for b in back] == ["poison"], back)
    check(back[0]["Attributes"]["ApproximateReceiveCount"] == "1", "redriven messages start over")
    sqs.delete_message(QueueUrl=work, ReceiptHandle=back[0]["ReceiptHandle"])


def delays(sqs):
    url = sqs.create_queue(QueueName="later", Attributes={"DelaySeconds": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="queue delay")
    check(receive(sqs, url) == [], "not before the queue's delay")
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    check(a["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1", a)
    t = time.time()
    got = receive(sqs, url, WaitTimeSeconds=5)
    check([g["Body"] for g in got] == ["queue delay"] and time.time() - t >= 0.5, got)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    sqs.send_message(QueueUrl=url, MessageBody="own delay", DelaySeconds=2)
    check(receive(sqs, url, WaitTimeSeconds=1) == [], "a message's own delay overrides the queue's")
    got = receive(sqs, url, WaitTimeSeconds=5)
    check([g["Body"] for g in got] == ["own delay"], got)


def fifo(sqs):
    url = sqs.create_queue(QueueName="orders.fifo",
                           Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    ids = {}
    for body, group in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("b2", "B")]:
        ids[body] = sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group)["MessageId"]
    dup = sqs.send_message(QueueUrl=url, MessageBody="a1", MessageGroupId="A")
    check(dup["MessageId"] == ids["a1"], "content-based deduplication answers with the first id")
    x = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="C", MessageDeduplicationId="d1")
    y = sqs.send_message(QueueUrl=url, MessageBody="y", MessageGroupId="C", MessageDeduplicationId="d1")
    check(x["MessageId"] == y["MessageId"] and "SequenceNumber" in x, "explicit deduplication id")
    check(error_code(lambda: sqs.send_message(QueueUrl=url, MessageBody="no group"))
          in ("MissingParameter", "InvalidParameterValue"), "FIFO needs a group")
    order = {"A": [], "B": [], "C": []}
    deadline = time.time() + 20
    while sum(len(v) for v in order.values()) < 6 and time.time() < deadline:
        got = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["MessageGroupId"])
        groups = [g["Attributes"]["MessageGroupId"] for g in got]
        check(len(groups) == len(set(groups)), f"one in flight per group: {groups}")
        for g in got:
            order[g["Attributes"]["MessageGroupId"]].append(g["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=g["ReceiptHandle"])
    check(order == {"A": ["a1", "a2", "a3"], "B": ["b1", "b2"], "C": ["x"]}, order)


def long_polling(sqs):
    url = sqs.create_queue(QueueName="waiting")["QueueUrl"]

    def later():
        time.sleep(1)
        client().send_message(QueueUrl=url, MessageBody="arrived")

    threading.Thread(target=later).start()
    t = time.time()
    got = receive(sqs, url, WaitTimeSeconds=15)
    waited = time.time() - t
    check([g["Body"] for g in got] == ["arrived"], got)
    check(0.5 <= waited < 5, f"returned {waited:.2f} s after the call: as the message arrived")
    t = time.time()
    check(receive(sqs, url, WaitTimeSeconds=1) == [] and time.time() - t >= 0.9, "waits the wait time")


def batches(sqs):
    url = sqs.create_queue(QueueName="batched")["QueueUrl"]
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "ok1", "MessageBody": "one"},
        {"Id": "bad", "MessageBody": "nul \u0000 inside"},
        {"Id": "ok2", "MessageBody": "two", "DelaySeconds": 0},
    ])
    check(sorted(s["Id"] for s in r["Successful"]) == ["ok1", "ok2"], r)
    check([(f["Id"], f["Code"], f["SenderFault"]) for f in r["Failed"]]
          == [("bad", "InvalidMessageContents", True)], r["Failed"])
    check(error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "same", "MessageBody": "1"}, {"Id": "same", "MessageBody": "2"}]))
        == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "distinct ids")
    check(error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": f"e{i}", "MessageBody": "x"} for i in range(11)]))
        == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "ten at most")
    got = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    check(sorted(g["Body"] for g in got) == ["one", "two"], got)
    entries = [{"Id": f"m{i}", "ReceiptHandle": g["ReceiptHandle"]} for i, g in enumerate(got)]
    entries.append({"Id": "bogus", "ReceiptHandle": "not-a-receipt"})
    vis = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[dict(e, VisibilityTimeout=60) for e in entries])
    check(len(vis["Successful"]) == 2 and [f["Id"] for f in vis["Failed"]] == ["bogus"], vis)
    d = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    check(len(d["Successful"]) == 2, d)
    check([(f["Id"], f["Code"]) for f in d["Failed"]] == [("bogus", "ReceiptHandleIsInvalid")], d["Failed"])
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                "ApproximateNumberOfMessagesNotVisible"])
    check(a["Attributes"] == {"ApproximateNumberOfMessages": "0",
                              "ApproximateNumberOfMessagesNotVisible": "0"}, a)


def settings_and_tags(sqs):
    dlq = sqs.create_queue(QueueName="tuned-dlq")["QueueUrl"]
    url = sqs.create_queue(QueueName="tuned", Attributes={"VisibilityTimeout": "30"},
                           tags={"team": "ops"})["QueueUrl"]
    check(sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "ops"}, "CreateQueue's tags")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}),
    })
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    check(a["VisibilityTimeout"] == "1" and "RedrivePolicy" in a, a)
    # The new settings act on the live queue: a 1 s lock, then the dead-letter queue.
    sqs.send_message(QueueUrl=url, MessageBody="tuned")
    check([m["Body"] for m in receive(sqs, url)] == ["tuned"], "received")
    time.sleep(1.2)
    check(receive(sqs, url, WaitTimeSeconds=1) == [], "dead-lettered after one receive")
    check([m["Body"] for m in receive(sqs, dlq, WaitTimeSeconds=2)] == ["tuned"], "in the DLQ")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    check("RedrivePolicy" not in a, "an empty RedrivePolicy removes it")
    check(error_code(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "true"}))
          == "InvalidAttributeName", "FifoQueue is set only at creation")
    check(error_code(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "901"}))
          == "InvalidAttributeValue", "out of range")
    sqs.tag_queue(QueueUrl=url, Tags={"env": "dev", "team": "data"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["env"])
    check(sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "data"}, "TagQueue, UntagQueue")


def auth():
    good = client("AKIDWEIR", "s3cret")
    url = good.create_queue(QueueName="signed")["QueueUrl"]
    good.send_message(QueueUrl=url, MessageBody="hi")
    check([m["Body"] for m in receive(good, url, WaitTimeSeconds=2)] == ["hi"], "signed requests work")
    check(error_code(lambda: client("AKIDWEIR", "wrong").list_queues()) == "SignatureDoesNotMatch",
          "a wrong secret is refused")
    check(error_code(lambda: client("NOBODY", "s3cret").list_queues()) == "InvalidClientTokenId",
          "an unknown key is refused")
    print("boto3 auth: ok")


if __name__ == "__main__":
    if os.environ.get("SQS_MODE") == "auth":
        auth()
        sys.exit(0)
    sqs = client()
    basic_flow(sqs)
    dead_letters_and_redrive(sqs)
    delays(sqs)
    fifo(sqs)
    long_polling(sqs)
    batches(sqs)
    settings_and_tags(sqs)
    print("boto3: ok")
