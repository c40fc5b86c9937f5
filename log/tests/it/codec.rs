//! Our RecordBatch v2 codec against an independent implementation (the `kafka-protocol`
//! crate), in both directions, so the bytes we store are the bytes Kafka clients expect.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use weir_log::batch::set_base_offset;
use weir_log::{BatchBuilder, BatchView, Header, Offset, ProducerFields, Timestamp};

/// kafka-protocol's header map from pairs.
fn headers(pairs: &[(&str, Option<&[u8]>)]) -> IndexMap<StrBytes, Option<Bytes>> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                StrBytes::from_string(k.to_string()),
                v.map(Bytes::copy_from_slice),
            )
        })
        .collect()
}

#[test]
fn our_batches_decode_in_kafka_protocol() -> anyhow::Result<()> {
    let mut b = BatchBuilder::with_capacity(512).producer(ProducerFields {
        producer_id: 77,
        producer_epoch: 3,
        base_sequence: 10,
    });
    b.push_parts(Some(b"k1"), Some(b"v1"), &[], Timestamp(1_700_000_000_000));
    b.push_parts(None, Some(b"no key"), &[], Timestamp(1_700_000_000_005));
    let hdr = [Header {
        key: "trace".into(),
        value: Some(Bytes::from_static(b"abc")),
    }];
    b.push_parts(Some(b"k3"), None, &hdr, Timestamp(1_699_999_999_990));
    let mut enc = b.finish();
    let mut bytes = enc.as_bytes().to_vec();
    set_base_offset(&mut bytes, Offset(1000));
    enc = weir_log::EncodedBatch::from_bytes(bytes.clone())?;
    assert_eq!(enc.record_count(), 3);

    let mut buf = Bytes::from(bytes);
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let r = &set.records;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].offset, 1000);
    assert_eq!(r[2].offset, 1002);
    assert_eq!(r[0].producer_id, 77);
    assert_eq!(r[0].producer_epoch, 3);
    assert_eq!(r[0].sequence, 10);
    assert_eq!(r[1].sequence, 11);
    assert_eq!(r[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(r[1].key, None);
    assert_eq!(r[2].value, None);
    assert_eq!(r[1].timestamp, 1_700_000_000_005);
    assert_eq!(r[2].timestamp, 1_699_999_999_990);
    assert_eq!(r[2].headers.len(), 1);
    Ok(())
}

#[test]
fn kafka_protocol_batches_decode_in_ours() -> anyhow::Result<()> {
    let recs: Vec<KRecord> = (0..5)
        .map(|i| KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 5,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset: 40 + i,
            sequence: i as i32,
            timestamp: 1000 + i * 7,
            key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: if i == 4 {
                headers(&[("h", Some(b"x")), ("n", None)])
            } else {
                Default::default()
            },
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let view = BatchView::parse(&buf)?;
    assert_eq!(view.bytes.len(), buf.len(), "one batch");
    view.verify_crc()?;
    assert_eq!(view.validate()?, 5);
    assert_eq!(view.header.base_offset, Offset(40));
    assert_eq!(view.header.producer_id, 5);
    let got: Vec<_> = view.records().collect::<Result<_, _>>()?;
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, Offset(40 + i as i64));
        assert_eq!(r.timestamp, Timestamp(1000 + i as i64 * 7));
        assert_eq!(r.value, Some(format!("value-{i}").as_bytes()));
    }
    let hs: Vec<_> = got[4].headers().collect::<Result<_, _>>()?;
    assert_eq!(hs, vec![(&b"h"[..], Some(&b"x"[..])), (&b"n"[..], None)]);
    Ok(())
}

#[test]
fn garbage_is_rejected_not_misread() {
    assert!(weir_log::EncodedBatch::from_bytes(vec![0u8; 80]).is_err());
    let mut b = BatchBuilder::with_capacity(64);
    b.push_parts(None, Some(b"x"), &[], Timestamp(1));
    let mut bytes = b.finish().as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let err = weir_log::EncodedBatch::from_bytes(bytes).expect_err("bad crc");
    assert!(err.to_string().contains("CRC"), "{err}");
}

#[test]
fn batches_from_outside_must_have_records_and_sane_offsets() {
    // An empty batch whose lastOffsetDelta is -1 would move offsets backwards.
    let mut bytes = BatchBuilder::with_capacity(64).finish().as_bytes().to_vec();
    bytes[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = weir_log::batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = weir_log::EncodedBatch::from_bytes(bytes).expect_err("rejected");
    assert!(err.to_string().contains("at least one record"), "{err}");
    // A record newer than the batch's maxTimestamp would mislead the time index.
    let mut b = BatchBuilder::with_capacity(64);
    b.push_parts(None, Some(b"x"), &[], Timestamp(1000));
    let mut bytes = b.finish().as_bytes().to_vec();
    bytes[35..43].copy_from_slice(&500i64.to_be_bytes());
    let crc = weir_log::batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = weir_log::EncodedBatch::from_bytes(bytes).expect_err("rejected");
    assert!(err.to_string().contains("maxTimestamp"), "{err}");
}

/// A batch of `n` keyed records compressed with `compression` by kafka-protocol's encoder.
fn compressed_batch(compression: Compression, n: i64, keys: i64) -> anyhow::Result<Vec<u8>> {
    let recs: Vec<KRecord> = (0..n)
        .map(|i| KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            // kafka-protocol starts a new batch when offset − sequence changes.
            sequence: i as i32,
            timestamp: 1000 + i,
            key: Some(Bytes::from(format!("key-{}", i % keys))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(buf.to_vec())
}

#[test]
fn compressed_batches_are_stored_as_sent_and_read_decompressed() -> anyhow::Result<()> {
    use weir_log::{Log, PartitionId};
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path())?;
    log.create_topic("zipped", 1, Default::default())?;
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut sent = Vec::new();
    for c in codecs {
        let bytes = compressed_batch(c, 20, 20)?;
        assert_ne!(BatchView::parse(&bytes)?.header.compression(), 0, "{c:?}");
        sent.push(bytes.clone());
        log.submit_batch(
            "zipped",
            PartitionId(0),
            weir_log::EncodedBatch::from_bytes(bytes)?,
        )?
        .wait()?;
    }
    let fetch = log.read("zipped", PartitionId(0), Offset(0), 1 << 20)?;
    // Stored as sent: the same bytes but for the base offset the log assigned.
    let mut at = 0;
    for (i, s) in sent.iter().enumerate() {
        let mut expect = s.clone();
        set_base_offset(&mut expect, Offset(20 * i as i64));
        assert_eq!(
            &fetch.batches[at..at + expect.len()],
            &expect[..],
            "batch {i}"
        );
        at += expect.len();
    }
    let values: Vec<String> = fetch
        .records()
        .map(|r| r.map(|r| String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(values.len(), 80);
    assert_eq!(values[25], "value-5");
    // Reading from the middle of a compressed batch starts at the asked offset.
    let mid = log.read("zipped", PartitionId(0), Offset(47), 1 << 20)?;
    assert_eq!(
        mid.records().next().transpose()?.map(|r| r.offset),
        Some(Offset(47))
    );
    Ok(())
}

#[test]
fn compaction_reads_compressed_batches() -> anyhow::Result<()> {
    use weir_log::{Log, PartitionId};
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path())?;
    log.create_topic("latest", 1, crate::common::cfg(&["cleanup.policy=compact"]))?;
    // 40 records over 4 keys, lz4-compressed; then an uncompressed tail.
    let bytes = compressed_batch(Compression::Lz4, 40, 4)?;
    log.submit_batch(
        "latest",
        PartitionId(0),
        weir_log::EncodedBatch::from_bytes(bytes)?,
    )?
    .wait()?;
    log.append(
        "latest",
        PartitionId(0),
        &[weir_log::Record::keyed("other", "x")],
    )?;
    log.roll("latest")?;
    log.compact_topic("latest")?;
    let fetch = log.read("latest", PartitionId(0), Offset(0), 1 << 20)?;
    let kept: Vec<(i64, String)> = fetch
        .records()
        .map(|r| {
            r.map(|r| {
                (
                    r.offset.0,
                    String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let expect: Vec<(i64, String)> = (36..40)
        .map(|i| (i, format!("value-{i}")))
        .chain([(40, "x".to_string())])
        .collect();
    assert_eq!(kept, expect);
    Ok(())
}
