//! [`Client`]: a small blocking Kafka client for Weir's own command line, so that `weir
//! produce`, `weir topic create|delete` and `weir group reset-offsets|delete` work beside a
//! running `weir serve` (which holds the data directory) by going through its Kafka listener.
//! One request at a time on one connection, with `kafka-protocol`'s generated types; errors
//! the server answers carry Kafka's error name and message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::ResponseError;

use crate::limits::FRAME_BYTES_MAX;

/// How long the client waits for any one response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("Kafka listener {addr}: {source}")]
    Io {
        /// The server's address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server's bytes did not decode (or ours did not encode): a bug on one side.
    #[error("Kafka protocol error talking to {addr}: {reason}")]
    Protocol {
        /// The server's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error code.
    #[error("{what}: {name}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Server {
        /// What was asked.
        what: String,
        /// Kafka's error code.
        code: i16,
        /// Kafka's name for it.
        name: String,
        /// The server's message, if any.
        message: Option<String>,
    },
}

fn server_error(what: impl Into<String>, code: i16, message: Option<&StrBytes>) -> ClientError {
    let name = match ResponseError::try_from_code(code) {
        Some(e) => kafka_name(&format!("{e:?}")),
        None => "NONE".into(),
    };
    ClientError::Server {
        what: what.into(),
        code,
        name,
        message: message.map(|m| m.to_string()),
    }
}

/// Kafka's spelling of an error name: `TopicAlreadyExists` → `TOPIC_ALREADY_EXISTS`.
fn kafka_name(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn check(
    what: impl FnOnce() -> String,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    Err(server_error(what(), code, message))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A connection to a Kafka listener.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    addr: String,
    next_id: i32,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`).
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        let io = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        let stream = TcpStream::connect(addr).map_err(io)?;
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(Client {
            stream,
            addr: addr.to_string(),
            next_id: 1,
        })
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// One request at `version`, one response.
    fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, ClientError> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| self.protocol("unknown API key"))?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("weir-cli")));
        let hv = api.request_header_version(version);
        let size = header.compute_size(hv).map_err(|e| self.protocol(e))?
            + req.compute_size(version).map_err(|e| self.protocol(e))?;
        let mut buf = BytesMut::with_capacity(size + 4);
        buf.put_i32(size as i32);
        header.encode(&mut buf, hv).map_err(|e| self.protocol(e))?;
        req.encode(&mut buf, version)
            .map_err(|e| self.protocol(e))?;
        self.stream.write_all(&buf).map_err(|e| self.io(e))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(|e| self.io(e))?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > FRAME_BYTES_MAX {
            return Err(self.protocol(format!("response of {len} bytes")));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).map_err(|e| self.io(e))?;
        let mut body = Bytes::from(body);
        let rh = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| self.protocol(e))?;
        if rh.correlation_id != id {
            return Err(self.protocol(format!("correlation id {} != {id}", rh.correlation_id)));
        }
        R::Response::decode(&mut body, version).map_err(|e| self.protocol(e))
    }

    /// Creates a topic with Kafka's config keys.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions as i32)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        let r = self.call(&req, 5)?;
        let t = r
            .topics
            .first()
            .ok_or_else(|| self.protocol("no topic in the response"))?;
        check(
            || format!("create topic `{name}`"),
            t.error_code,
            t.error_message.as_ref(),
        )
    }

    /// Deletes a topic.
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(s(name))])
            .with_timeout_ms(30_000);
        let r = self.call(&req, 5)?;
        let t = r
            .responses
            .first()
            .ok_or_else(|| self.protocol("no topic in the response"))?;
        check(
            || format!("delete topic `{name}`"),
            t.error_code,
            t.error_message.as_ref(),
        )
    }

    /// A topic's partition count (without creating it).
    pub fn partitions(&mut self, topic: &str) -> Result<u32, ClientError> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
            ]))
            .with_allow_auto_topic_creation(false);
        let r = self.call(&req, 4)?;
        let t = r
            .topics
            .first()
            .ok_or_else(|| self.protocol("no topic in the response"))?;
        check(|| format!("topic `{topic}`"), t.error_code, None)?;
        Ok(t.partitions.len() as u32)
    }

    /// A producer id and epoch for an idempotent producer.
    pub fn init_producer_id(&mut self) -> Result<(i64, i16), ClientError> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let r = self.call(&req, 4)?;
        check(|| "get a producer id".to_string(), r.error_code, None)?;
        Ok((r.producer_id.0, r.producer_epoch))
    }

    /// Appends one RecordBatch per partition (`acks=all`); the base offset of each, in order.
    pub fn produce(
        &mut self,
        topic: &str,
        batches: Vec<(u32, Bytes)>,
    ) -> Result<Vec<(u32, i64)>, ClientError> {
        let data = batches
            .into_iter()
            .map(|(p, b)| {
                PartitionProduceData::default()
                    .with_index(p as i32)
                    .with_records(Some(b))
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(data)]);
        let r = self.call(&req, 8)?;
        let mut out = Vec::new();
        for t in &r.responses {
            for p in &t.partition_responses {
                check(
                    || format!("produce to {topic}/{}", p.index),
                    p.error_code,
                    p.error_message.as_ref(),
                )?;
                out.push((p.index as u32, p.base_offset));
            }
        }
        Ok(out)
    }

    /// Sets a group's committed offsets (a standalone commit: refused while it has members).
    pub fn commit_offsets(
        &mut self,
        group: &str,
        topic: &str,
        offsets: &[(u32, i64)],
        metadata: &str,
    ) -> Result<(), ClientError> {
        let partitions = offsets
            .iter()
            .map(|(p, o)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p as i32)
                    .with_committed_offset(*o)
                    .with_committed_metadata(Some(s(metadata)))
            })
            .collect();
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(partitions)]);
        let r = self.call(&req, 7)?;
        for t in &r.topics {
            for p in &t.partitions {
                check(
                    || format!("commit offsets of group `{group}`"),
                    p.error_code,
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Deletes a group and its offsets.
    pub fn delete_group(&mut self, group: &str) -> Result<(), ClientError> {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
        let r = self.call(&req, 2)?;
        let g = r
            .results
            .first()
            .ok_or_else(|| self.protocol("no group in the response"))?;
        check(|| format!("delete group `{group}`"), g.error_code, None)
    }
}
