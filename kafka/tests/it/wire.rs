//! The wire protocol against a real server: what a Kafka client sends, with
//! `kafka-protocol`'s encoders, and what comes back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use weir_log::{BatchBuilder, PartitionId, ProducerFields, Record};

use crate::client::{Conn, TestServer};

fn topic(name: &str) -> TopicName {
    TopicName(kafka_protocol::protocol::StrBytes::from_string(name.into()))
}

fn batch(values: &[&str], producer: Option<(i64, i32)>) -> Bytes {
    let mut b = BatchBuilder::with_capacity(256);
    if let Some((id, seq)) = producer {
        b = b.producer(ProducerFields {
            producer_id: id,
            producer_epoch: 0,
            base_sequence: seq,
        });
    }
    for v in values {
        b.push(
            &Record::keyed(v.to_string(), v.to_string()),
            weir_log::Timestamp(1_000),
        );
    }
    Bytes::from(b.finish().as_bytes().to_vec())
}

fn produce(c: &mut Conn, name: &str, records: Bytes, version: i16) -> anyhow::Result<(i16, i64)> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r = c.call(&req, version)?;
    let p = &r.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

fn fetch_req(name: &str, offset: i64, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

#[test]
fn metadata_creates_topics_and_keeps_their_ids() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut c = server.connect()?;
    let ask = |name: &str| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic(name)))
            ]))
            .with_allow_auto_topic_creation(true)
    };
    let r = c.call(&ask("fresh"), 12)?;
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].partitions.len(), 1);
    let id = r.topics[0].topic_id;
    assert!(!id.is_nil());
    assert_eq!(server.log.partition_count("fresh")?, 1);
    assert_eq!(c.call(&ask("fresh"), 12)?.topics[0].topic_id, id);
    // kcat's version: no topic ids, creation still happens.
    let r = c.call(&ask("fresh-v4"), 4)?;
    assert_eq!(r.topics[0].error_code, 0);
    let bad = c.call(&ask("bad name!"), 4)?;
    assert_eq!(bad.topics[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    Ok(())
}

#[test]
fn produced_batches_are_fetched_byte_for_byte() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    server.log.create_topic("t", 1, Default::default())?;
    let mut c = server.connect()?;
    let sent = batch(&["a", "b", "c"], None);
    assert_eq!(produce(&mut c, "t", sent.clone(), 7)?, (0, 0));
    assert_eq!(produce(&mut c, "t", batch(&["d"], None), 9)?, (0, 3));
    let r = c.call(&fetch_req("t", 0, 0), 11)?;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 4);
    let got = p.records.clone().unwrap_or_default();
    // The first stored batch is the client's bytes with the base offset (0) filled in.
    assert_eq!(&got[..sent.len()], &sent[..]);
    let fetched = server
        .log
        .read("t", PartitionId(0), weir_log::Offset(0), 1 << 20)?;
    let values: Vec<_> = fetched
        .records()
        .map(|r| r.map(|r| r.value.map(|v| v.to_vec())))
        .collect::<Result<_, _>>()?;
    assert_eq!(values.len(), 4);
    // Out of range is Kafka's OFFSET_OUT_OF_RANGE with the partition's bounds.
    let r = c.call(&fetch_req("t", 99, 0), 11)?;
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
    Ok(())
}

#[test]
fn idempotent_retries_get_the_original_offsets() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    server.log.create_topic("idem", 1, Default::default())?;
    let mut c = server.connect()?;
    let r = c.call(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
        4,
    )?;
    assert_eq!(r.error_code, 0);
    let pid = r.producer_id.0;
    let first = batch(&["x", "y"], Some((pid, 0)));
    assert_eq!(produce(&mut c, "idem", first.clone(), 7)?, (0, 0));
    assert_eq!(
        produce(&mut c, "idem", first, 7)?,
        (0, 0),
        "a retry is a duplicate"
    );
    let gap = batch(&["z"], Some((pid, 5)));
    assert_eq!(
        produce(&mut c, "idem", gap, 7)?.0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(server.log.latest_offset("idem", PartitionId(0))?.0, 2);
    Ok(())
}

#[test]
fn a_long_poll_fetch_wakes_when_a_record_arrives() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    server.log.create_topic("poll", 1, Default::default())?;
    let mut c = server.connect()?;
    let log = server.log.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        log.append("poll", PartitionId(0), &[Record::value("late")])
    });
    let started = Instant::now();
    let r = c.call(&fetch_req("poll", 0, 10_000), 11)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    assert!(!r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
        .is_empty());
    // Woken by the append, not by the 10 s timeout.
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[test]
fn pipelined_commits_on_one_connection_apply_in_request_order() -> anyhow::Result<()> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use std::io::Write;
    let server = TestServer::start()?;
    server.log.create_topic("c", 1, Default::default())?;
    let mut c = server.connect()?;
    let group = GroupId(kafka_protocol::protocol::StrBytes::from_static_str(
        "ordered",
    ));
    // Twenty commits sent back to back, as librdkafka's asynchronous commits are.
    let mut frames = Vec::new();
    for i in 1..=20 {
        let req = OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic("c"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(i)])]);
        frames.extend_from_slice(&crate::client::encode_request(&req, 7, 1000 + i as i32)?);
    }
    c.stream.write_all(&frames)?;
    for _ in 0..20 {
        c.read_frame()?;
    }
    let fetch = OffsetFetchRequest::default()
        .with_group_id(group)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic("c"))
            .with_partition_indexes(vec![0])]));
    let r = c.call(&fetch, 7)?;
    assert_eq!(r.topics[0].partitions[0].committed_offset, 20);
    Ok(())
}

#[test]
fn clients_cannot_write_internal_topics_or_markers() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    server.log.create_topic("t", 1, Default::default())?;
    let mut c = server.connect()?;
    // A stray record in __consumer_offsets would stop the next start: refused.
    let (code, _) = produce(&mut c, "__consumer_offsets", batch(&["x"], None), 7)?;
    assert_eq!(code, 17, "INVALID_TOPIC_EXCEPTION");
    // A control batch (a transaction marker) from a client: refused.
    let mut b = BatchBuilder::with_capacity(128)
        .producer(ProducerFields {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: -1,
        })
        .transactional(true);
    b.push(
        &Record::keyed(vec![0u8, 0, 0, 0], vec![0u8, 0, 0, 0, 0, 0]),
        weir_log::Timestamp(1),
    );
    let mut bytes = b.finish().as_bytes().to_vec();
    // Attribute bit 5 (control), then the CRC over bytes 21.. again.
    bytes[22] |= 0x20;
    let crc = weir_log::batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let marker = Bytes::from(bytes);
    let (code, _) = produce(&mut c, "t", marker, 7)?;
    assert_eq!(code, 87, "INVALID_RECORD");
    assert_eq!(server.log.latest_offset("t", PartitionId(0))?.0, 0);
    Ok(())
}

#[test]
fn offset_metadata_over_the_limit_is_refused_not_stored() -> anyhow::Result<()> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let server = TestServer::start()?;
    server.log.create_topic("m", 1, Default::default())?;
    let mut c = server.connect()?;
    let commit = |meta: usize| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(
                kafka_protocol::protocol::StrBytes::from_static_str("g"),
            ))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic("m"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)
                    .with_committed_metadata(Some(
                        kafka_protocol::protocol::StrBytes::from_string("x".repeat(meta)),
                    ))])])
    };
    let r = c.call(&commit(70_000), 8)?;
    assert_eq!(
        r.topics[0].partitions[0].error_code, 12,
        "OFFSET_METADATA_TOO_LARGE"
    );
    let r = c.call(&commit(100), 8)?;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    // The offsets topic still loads: a second coordinator over the same log starts.
    weir_coord::GroupCoordinator::start(&server.log)?;
    Ok(())
}

#[test]
fn transactional_offsets_are_unstable_until_the_end_and_ends_retry_as_in_kafka(
) -> anyhow::Result<()> {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::protocol::StrBytes;
    let server = TestServer::start()?;
    server.log.create_topic("m", 1, Default::default())?;
    let mut c = server.connect()?;
    let str = |v: &str| StrBytes::from_string(v.into());
    let txn_id = TransactionalId(str("tx"));
    let group = GroupId(str("g"));
    let init = c.call(
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id.clone()))
            .with_transaction_timeout_ms(60_000),
        4,
    )?;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id, init.producer_epoch);
    let add = |epoch: i16| {
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id.clone())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_group_id(group.clone())
    };
    assert_eq!(c.call(&add(epoch), 3)?.error_code, 0);
    // A stale epoch: PRODUCER_FENCED for clients that know it, INVALID_PRODUCER_EPOCH before.
    assert_eq!(c.call(&add(epoch - 1), 3)?.error_code, 90);
    assert_eq!(c.call(&add(epoch - 1), 1)?.error_code, 47);
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id.clone())
        .with_group_id(group.clone())
        .with_producer_id(pid)
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_member_id(str(""))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(topic("m"))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let r = c.call(&commit, 3)?;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let fetch = |stable: bool| {
        OffsetFetchRequest::default()
            .with_group_id(group.clone())
            .with_require_stable(stable)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic("m"))
                .with_partition_indexes(vec![0])]))
    };
    let p = |r: &OffsetFetchResponse| {
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    assert_eq!(
        p(&c.call(&fetch(true), 7)?),
        (88, -1),
        "UNSTABLE_OFFSET_COMMIT"
    );
    assert_eq!(
        p(&c.call(&fetch(false), 7)?),
        (0, -1),
        "nothing committed yet"
    );
    let end = |commit: bool| {
        EndTxnRequest::default()
            .with_transactional_id(txn_id.clone())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_committed(commit)
    };
    assert_eq!(c.call(&end(true), 3)?.error_code, 0);
    assert_eq!(c.call(&end(true), 3)?.error_code, 0, "a retried commit");
    assert_eq!(c.call(&end(false), 3)?.error_code, 48, "INVALID_TXN_STATE");
    assert_eq!(p(&c.call(&fetch(true), 7)?), (0, 5));
    let unknown = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str("never")))
        .with_producer_id(pid)
        .with_committed(true);
    assert_eq!(
        c.call(&unknown, 3)?.error_code,
        49,
        "INVALID_PRODUCER_ID_MAPPING"
    );
    Ok(())
}

#[test]
fn a_session_timeout_out_of_bounds_is_invalid_session_timeout() -> anyhow::Result<()> {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    let server = TestServer::start()?;
    let mut c = server.connect()?;
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(
            kafka_protocol::protocol::StrBytes::from_static_str("g"),
        ))
        .with_session_timeout_ms(1)
        .with_rebalance_timeout_ms(1_000)
        .with_protocol_type(kafka_protocol::protocol::StrBytes::from_static_str(
            "consumer",
        ))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(kafka_protocol::protocol::StrBytes::from_static_str("range"))
            .with_metadata(Bytes::new())]);
    assert_eq!(c.call(&join, 5)?.error_code, 26);
    Ok(())
}
