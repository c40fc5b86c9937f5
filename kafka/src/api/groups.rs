//! The group APIs (classic consumer-group protocol) over [`weir_coord::GroupCoordinator`]:
//! FindCoordinator (this node for every group and transactional id), JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups. Members' protocol metadata and the leader's assignments are stored and
//! returned as the clients sent them: the leader client computes the assignment, as in Kafka.
//!
//! Join and sync wait for the other members, and offset commits fsync, so they run on the
//! blocking pool; heartbeats, fetches of committed offsets and listings answer at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use weir_coord::{CoordError, GroupState, JoinRequest};

use super::{awaited, later, respond, s, Head, Reply};
use crate::broker::{Broker, NODE_ID};
use crate::error::{coord_code, ConnError};

pub(crate) fn find_coordinator(
    b: &Arc<Broker>,
    h: &Head,
    _req: FindCoordinatorRequest,
) -> Result<Reply, ConnError> {
    let (host, port) = b.advertised();
    let body = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(s(host))
        .with_port(port);
    Ok(Reply::Now(respond(h, &body)?))
}

fn code(r: &Result<impl Sized, CoordError>) -> i16 {
    r.as_ref().err().map_or(0, |e| coord_code(e).code())
}

/// For a member's own requests (SyncGroup, Heartbeat, LeaveGroup) Kafka answers a group it
/// does not know with UNKNOWN_MEMBER_ID, which clients handle by rejoining.
fn member_code(r: &Result<impl Sized, CoordError>) -> i16 {
    match r {
        Err(CoordError::UnknownGroup(_)) => ResponseError::UnknownMemberId.code(),
        r => code(r),
    }
}

pub(crate) fn join_group(
    b: &Arc<Broker>,
    h: &Head,
    req: JoinGroupRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    let version = h.version;
    let client_id = h.client_id.clone();
    let client_host = h.client_host.clone();
    Ok(awaited(h, async move {
        let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        // v0 has no rebalance timeout; Kafka uses the session timeout there.
        let rebalance = if version >= 1 {
            Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        };
        let member = req.member_id.to_string();
        let join = JoinRequest {
            group: req.group_id.to_string(),
            member_id: (!member.is_empty()).then(|| member.clone()),
            client_id: if client_id.is_empty() {
                "client".into()
            } else {
                client_id
            },
            client_host,
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.to_vec()))
                .collect(),
        };
        // Waits for the other members without a thread: the group's event wakes it.
        let result = b.groups.join_group_async(join).await;
        let error = code(&result);
        match result {
            Ok(r) => {
                let members = r
                    .members
                    .into_iter()
                    .map(|(id, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(id))
                            .with_metadata(Bytes::from(meta))
                    })
                    .collect();
                JoinGroupResponse::default()
                    .with_generation_id(r.generation)
                    .with_protocol_type((version >= 7).then(|| req.protocol_type.clone()))
                    .with_protocol_name(Some(s(r.protocol)))
                    .with_leader(s(r.leader_id))
                    .with_member_id(s(r.member_id))
                    .with_members(members)
            }
            Err(_) => JoinGroupResponse::default()
                .with_error_code(error)
                .with_generation_id(-1)
                .with_protocol_name(Some(s("")))
                .with_member_id(req.member_id),
        }
    }))
}

pub(crate) fn sync_group(
    b: &Arc<Broker>,
    h: &Head,
    req: SyncGroupRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    let version = h.version;
    Ok(awaited(h, async move {
        let assignments = req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect();
        let result = b
            .groups
            .sync_group_async(
                &req.group_id,
                req.generation_id,
                &req.member_id,
                Some(assignments),
            )
            .await;
        let mut r = SyncGroupResponse::default().with_error_code(member_code(&result));
        if version >= 5 {
            r = r
                .with_protocol_type(req.protocol_type.clone())
                .with_protocol_name(req.protocol_name.clone());
        }
        match result {
            Ok(a) => r.with_assignment(Bytes::from(a)),
            Err(_) => r,
        }
    }))
}

pub(crate) fn heartbeat(
    b: &Arc<Broker>,
    h: &Head,
    req: HeartbeatRequest,
) -> Result<Reply, ConnError> {
    let result = b
        .groups
        .heartbeat(&req.group_id, req.generation_id, &req.member_id);
    let body = HeartbeatResponse::default().with_error_code(member_code(&result));
    Ok(Reply::Now(respond(h, &body)?))
}

pub(crate) fn leave_group(
    b: &Arc<Broker>,
    h: &Head,
    req: LeaveGroupRequest,
) -> Result<Reply, ConnError> {
    let body = if h.version >= 3 {
        let members = req
            .members
            .iter()
            .map(|m| {
                let result = b.groups.leave_group(&req.group_id, &m.member_id);
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(member_code(&result))
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    } else {
        let result = b.groups.leave_group(&req.group_id, &req.member_id);
        LeaveGroupResponse::default().with_error_code(member_code(&result))
    };
    Ok(Reply::Now(respond(h, &body)?))
}

pub(crate) fn offset_commit(
    b: &Arc<Broker>,
    h: &Head,
    req: OffsetCommitRequest,
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
        let result = b.groups.commit_offsets(
            &req.group_id,
            req.generation_id_or_member_epoch,
            &req.member_id,
            &offsets,
        );
        let error = code(&result);
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }))
}

pub(crate) fn offset_fetch(
    b: &Arc<Broker>,
    h: &Head,
    req: OffsetFetchRequest,
) -> Result<Reply, ConnError> {
    if !req.require_stable {
        return Ok(Reply::Now(respond(h, &committed_offsets(b, req))?));
    }
    // Asking which offsets a transaction holds takes the transaction coordinator's lock,
    // which a commit holds across its fsync: off the async workers.
    let b = b.clone();
    Ok(later(h, move || committed_offsets(&b, req)))
}

/// The group's committed offsets for the asked partitions (all, for null topics). With
/// `require_stable` (v7+), a partition whose offset an open transaction is changing is
/// UNSTABLE_OFFSET_COMMIT, which clients retry, so a consumer that takes over from a
/// transactional one never starts from an offset about to be superseded.
fn committed_offsets(b: &Broker, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let committed = b.groups.committed(&req.group_id);
    let pending = if req.require_stable {
        b.txns.pending_offsets(&req.group_id)
    } else {
        Default::default()
    };
    let entry = |topic: &str, p: i32| {
        let r = OffsetFetchResponsePartition::default()
            .with_partition_index(p)
            .with_committed_offset(-1)
            .with_metadata(Some(s("")));
        let tp = (topic.to_string(), u32::try_from(p).unwrap_or(u32::MAX));
        if pending.contains(&tp) {
            return r.with_error_code(ResponseError::UnstableOffsetCommit.code());
        }
        match committed.get(&tp) {
            Some(c) => r
                .with_committed_offset(c.offset.0)
                .with_metadata(Some(s(c.metadata.clone()))),
            None => r,
        }
    };
    let topics: Vec<OffsetFetchResponseTopic> = match req.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| entry(&t.name, *p))
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        // Null topics (v2+): every partition the group has an offset for, or is about to.
        None => {
            let all: std::collections::BTreeSet<&(String, u32)> =
                committed.keys().chain(pending.iter()).collect();
            let mut out: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (topic, p) in all {
                if out.last().is_none_or(|t| t.name.0.as_str() != topic) {
                    out.push(
                        OffsetFetchResponseTopic::default().with_name(TopicName(s(topic.clone()))),
                    );
                }
                if let Some(t) = out.last_mut() {
                    t.partitions.push(entry(topic, *p as i32));
                }
            }
            out
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}

fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "Empty",
        GroupState::PreparingRebalance => "PreparingRebalance",
        GroupState::CompletingRebalance => "CompletingRebalance",
        GroupState::Stable => "Stable",
        GroupState::Dead => "Dead",
    }
}

pub(crate) fn list_groups(
    b: &Arc<Broker>,
    h: &Head,
    req: ListGroupsRequest,
) -> Result<Reply, ConnError> {
    let groups = b
        .groups
        .list_groups()
        .into_iter()
        .filter(|(_, state)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.as_str() == state_name(*state))
        })
        .map(|(id, state)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(s(id)))
                .with_protocol_type(s("consumer"));
            if h.version >= 4 {
                g.with_group_state(s(state_name(state)))
            } else {
                g
            }
        })
        .collect();
    let body = ListGroupsResponse::default().with_groups(groups);
    Ok(Reply::Now(respond(h, &body)?))
}

pub(crate) fn describe_groups(
    b: &Arc<Broker>,
    h: &Head,
    req: DescribeGroupsRequest,
) -> Result<Reply, ConnError> {
    let groups = req
        .groups
        .into_iter()
        .map(|id| match b.groups.describe_group(&id) {
            Ok(d) => {
                let members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(m.member_id))
                            .with_client_id(s(m.client_id))
                            .with_client_host(s(m.client_host))
                            .with_member_metadata(Bytes::from(m.metadata))
                            .with_member_assignment(Bytes::from(m.assignment))
                    })
                    .collect();
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(s(state_name(d.state)))
                    .with_protocol_type(s(d.protocol_type.unwrap_or_default()))
                    .with_protocol_data(s(d.protocol.unwrap_or_default()))
                    .with_members(members)
            }
            // An unknown group is described as Dead with no members, as Kafka does.
            Err(CoordError::UnknownGroup(_)) => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(s("Dead")),
            Err(e) => DescribedGroup::default()
                .with_group_id(id)
                .with_error_code(coord_code(&e).code()),
        })
        .collect();
    let body = DescribeGroupsResponse::default().with_groups(groups);
    Ok(Reply::Now(respond(h, &body)?))
}

pub(crate) fn delete_groups(
    b: &Arc<Broker>,
    h: &Head,
    req: DeleteGroupsRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let results = req
            .groups_names
            .into_iter()
            .map(|id| {
                let result = b.groups.delete_group(&id);
                let error = match &result {
                    Err(CoordError::UnknownGroup(_)) => ResponseError::GroupIdNotFound.code(),
                    r => code(r),
                };
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(error)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }))
}
