//! Producer ids and transactions over [`weir_coord::TransactionCoordinator`]: InitProducerId
//! (a fresh id for an idempotent producer; for a transactional id, the next epoch, which
//! fences the previous instance and finishes its open transaction), AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn. Every one persists to
//! `__transaction_state` or writes markers, so all run on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use weir_coord::offsets::{OffsetStore, OFFSETS_TOPIC};
use weir_coord::CoordError;

use super::{later, Head, Reply};
use crate::broker::Broker;
use crate::error::{coord_code, log_code, ConnError};

/// Longest transaction timeout a producer may ask for (Kafka's default
/// `transaction.max.timeout.ms`, 15 minutes).
const TRANSACTION_TIMEOUT_MAX_MS: i32 = 15 * 60 * 1000;

fn code(r: &Result<impl Sized, CoordError>) -> i16 {
    r.as_ref().err().map_or(0, |e| coord_code(e).code())
}

/// First version of EndTxn, AddPartitionsToTxn and AddOffsetsToTxn whose clients know
/// PRODUCER_FENCED (KIP-588); older ones are told INVALID_PRODUCER_EPOCH, as Kafka does.
const PRODUCER_FENCED_SINCE: i16 = 2;

/// [`code`] as a client of this request version understands it.
fn versioned_code(r: &Result<impl Sized, CoordError>, version: i16) -> i16 {
    let c = code(r);
    if c == ResponseError::ProducerFenced.code() && version < PRODUCER_FENCED_SINCE {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        c
    }
}

pub(crate) fn init_producer_id(
    b: &Arc<Broker>,
    h: &Head,
    req: InitProducerIdRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let result = match &req.transactional_id {
            None => b.log.init_producer_id().map_err(|e| log_code(&e)),
            // Kafka's `transaction.max.timeout.ms` bounds how long a hung transaction may
            // hold back read_committed readers.
            Some(_) if !(1..=TRANSACTION_TIMEOUT_MAX_MS).contains(&req.transaction_timeout_ms) => {
                Err(ResponseError::InvalidTransactionTimeout)
            }
            Some(id) => {
                let timeout = Duration::from_millis(req.transaction_timeout_ms as u64);
                b.txns
                    .init_transactions(id, timeout)
                    .map_err(|e| coord_code(&e))
            }
        };
        match result {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(code) => InitProducerIdResponse::default()
                .with_error_code(code.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        }
    }))
}

pub(crate) fn add_partitions(
    b: &Arc<Broker>,
    h: &Head,
    req: AddPartitionsToTxnRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    let version = h.version;
    Ok(later(h, move || {
        let topics = &req.v3_and_below_topics;
        // A topic that does not exist, or a partition index it does not have: a transaction
        // holding it could never write its marker there.
        let unknown = |t: &kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic| {
            let n = b.log.partition_count(&t.name).unwrap_or(0);
            t.partitions.iter().any(|p| u32::try_from(*p).map_or(true, |p| p >= n))
        };
        let partitions: Vec<(String, u32)> = topics
            .iter()
            .filter(|t| !unknown(t))
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p as u32)))
            .collect();
        let result = b.txns.add_partitions(
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &partitions,
        );
        let error = versioned_code(&result, version);
        let results = topics
            .iter()
            .map(|t| {
                let e = if unknown(t) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    error
                };
                let by_partition = t
                    .partitions
                    .iter()
                    .map(|p| {
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(*p)
                            .with_partition_error_code(e)
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(by_partition)
            })
            .collect();
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
    }))
}

pub(crate) fn add_offsets(
    b: &Arc<Broker>,
    h: &Head,
    req: AddOffsetsToTxnRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    let version = h.version;
    Ok(later(h, move || {
        let partition = OffsetStore::partition_of(&req.group_id);
        let result = b.txns.add_partitions(
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), partition.0)],
        );
        AddOffsetsToTxnResponse::default().with_error_code(versioned_code(&result, version))
    }))
}

pub(crate) fn txn_offset_commit(
    b: &Arc<Broker>,
    h: &Head,
    req: TxnOffsetCommitRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let offsets: Vec<_> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    super::offset_entry(
                        &t.name,
                        p.partition_index,
                        p.committed_offset,
                        p.committed_metadata.as_ref(),
                    )
                })
            })
            .collect();
        // KIP-447: a consumer's generation travels with its offsets (v3+), so a zombie
        // member's transactional commit is refused like a plain one.
        let member =
            b.groups
                .check_member_generation(&req.group_id, &req.member_id, req.generation_id);
        // Sequence -1: offsets written by the coordinator on the producer's behalf are
        // outside the producer's own sequence numbers (the log checks only the epoch).
        let result = member.and_then(|()| {
            b.txns.send_offsets(
                &req.transactional_id,
                req.producer_id.0,
                req.producer_epoch,
                -1,
                &req.group_id,
                &offsets,
            )
        });
        let error = code(&result);
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    }))
}

pub(crate) fn end_txn(b: &Arc<Broker>, h: &Head, req: EndTxnRequest) -> Result<Reply, ConnError> {
    let b = b.clone();
    let version = h.version;
    Ok(later(h, move || {
        let result = b.txns.end_transaction(
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        );
        EndTxnResponse::default().with_error_code(versioned_code(&result, version))
    }))
}
