// kafkajs (pure JavaScript, its own protocol code) against `weir serve`: the admin client
// creates a topic, an acks=-1 producer sends keyed messages in batches, a consumer group reads
// them all with consumer.run/eachMessage (committing as it goes), the group's committed offsets
// read back through the admin client, and everything disconnects. Run by the `weir` crate's
// interop tests as `node kafkajs_clients.js BOOTSTRAP` with kafkajs on NODE_PATH (scripts/setup.sh
// installs it under $WEIR_CACHE/node); exits non-zero with a message on any failure.

'use strict';

const { Kafka, Partitioners, logLevel } = require('kafkajs');

const BOOTSTRAP = process.argv[2];
const TOPIC = 'kjs-events';
const PARTITIONS = 3;
const GROUP = 'kjs-group';
const MESSAGES = 3000;
const BATCH = 100;

function fail(what) {
  console.error(`FAILED: ${what}`);
  process.exit(1);
}

function check(cond, what) {
  if (!cond) fail(what);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function createTopic(admin) {
  const created = await admin.createTopics({
    topics: [{ topic: TOPIC, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 10000,
  });
  check(created === true, `createTopics returned ${created}`);
  const topics = await admin.listTopics();
  check(topics.includes(TOPIC), `listTopics has ${TOPIC}: ${topics}`);
  const meta = await admin.fetchTopicMetadata({ topics: [TOPIC] });
  const parts = meta.topics[0].partitions;
  check(parts.length === PARTITIONS, `${TOPIC} has ${parts.length} of ${PARTITIONS} partitions`);
}

async function produce(kafka) {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const offsets = new Set();
  for (let start = 0; start < MESSAGES; start += BATCH) {
    const messages = [];
    for (let i = start; i < start + BATCH; i++) {
      messages.push({ key: `key-${i % 40}`, value: `value-${i}` });
    }
    const acks = await producer.send({ topic: TOPIC, acks: -1, messages });
    for (const a of acks) {
      check(a.errorCode === 0, `produce error ${JSON.stringify(a)}`);
      offsets.add(`${a.partition}/${a.baseOffset}`);
    }
  }
  await producer.disconnect();
  check(offsets.size > 1, 'batches went to more than one partition');
}

async function consumeGroup(kafka) {
  const consumer = kafka.consumer({ groupId: GROUP, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topics: [TOPIC], fromBeginning: true });
  const seen = new Map(); // value -> {key, partition, offset}
  const keyPartition = new Map();
  const lastOffset = new Map();
  let problem = null;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const key = message.key.toString();
      const value = message.value.toString();
      const offset = Number(message.offset);
      if (topic !== TOPIC) problem = problem || `message from topic ${topic}`;
      if (seen.has(value)) problem = problem || `${value} delivered twice`;
      if (keyPartition.has(key) && keyPartition.get(key) !== partition) {
        problem = problem || `${key} in partitions ${keyPartition.get(key)} and ${partition}`;
      }
      if (lastOffset.has(partition) && lastOffset.get(partition) >= offset) {
        problem = problem || `partition ${partition}: offset ${offset} after ${lastOffset.get(partition)}`;
      }
      keyPartition.set(key, partition);
      lastOffset.set(partition, offset);
      seen.set(value, { key, partition, offset });
      if (seen.size === MESSAGES || problem) resolveDone();
    },
  });
  await withTimeout(done, 40000, `consuming ${MESSAGES} messages (saw ${seen.size})`);
  check(problem === null, problem);
  for (let i = 0; i < MESSAGES; i++) {
    const m = seen.get(`value-${i}`);
    check(m !== undefined, `value-${i} not consumed`);
    check(m.key === `key-${i % 40}`, `value-${i} has key ${m.key}`);
  }
  // disconnect() stops the run loop, commits what eachMessage resolved, and leaves the group.
  await consumer.disconnect();
  const ends = new Map();
  for (const [partition, offset] of lastOffset) ends.set(partition, offset + 1);
  return ends;
}

async function checkCommitted(admin, ends) {
  const fetched = await admin.fetchOffsets({ groupId: GROUP, topics: [TOPIC] });
  const committed = new Map(fetched[0].partitions.map((p) => [p.partition, Number(p.offset)]));
  const latest = await admin.fetchTopicOffsets(TOPIC);
  for (const p of latest) {
    const want = ends.get(p.partition) || 0;
    check(Number(p.high) === want, `partition ${p.partition}: high water ${p.high}, consumed to ${want}`);
    check(committed.get(p.partition) === want,
      `partition ${p.partition}: committed ${committed.get(p.partition)}, expected ${want}`);
  }
  const { groups } = await admin.listGroups();
  check(groups.some((g) => g.groupId === GROUP), `listGroups has ${GROUP}: ${JSON.stringify(groups)}`);
  const described = await admin.describeGroups([GROUP]);
  const group = described.groups[0];
  check(group.state === 'Empty' && group.members.length === 0,
    `after disconnect the group is ${group.state} with ${group.members.length} members`);
}

async function main() {
  check(BOOTSTRAP, 'usage: node kafkajs_clients.js BOOTSTRAP');
  const kafka = new Kafka({
    clientId: 'weir-interop-kafkajs',
    brokers: [BOOTSTRAP],
    // KAFKAJS_LOG_LEVEL=DEBUG (or INFO, WARN) shows the client's own log when debugging.
    logLevel: logLevel[process.env.KAFKAJS_LOG_LEVEL || 'ERROR'] ?? logLevel.ERROR,
    retry: { retries: 3 },
  });
  const admin = kafka.admin();
  await admin.connect();
  await createTopic(admin);
  await produce(kafka);
  const ends = await consumeGroup(kafka);
  await checkCommitted(admin, ends);
  await admin.disconnect();
  console.log('kafkajs: ok');
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
