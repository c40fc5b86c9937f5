//! A group's membership as persisted in `__consumer_offsets`, as Kafka persists group
//! metadata there: written (without waiting for the fsync) whenever the group changes, read
//! back when a coordinator starts. A restarted server therefore knows its groups' members and
//! generations (members that keep heartbeating continue without a rebalance; the others
//! expire), and a read-only `weir group describe` in another terminal shows live members.
//!
//! Key: u16 version 2, group (u16 length + UTF-8), distinct from offset keys (version 1).
//! Value: u16 version 2, state u8, generation i32, protocol type, protocol, leader (strings,
//! empty for none), members (u32 count) of: id, client id, client host, session timeout ms
//! i64, rebalance timeout ms i64, protocols (u32 count) of (name, metadata bytes), assignment
//! (u32 length + bytes, u32::MAX for none). A deleted group's key gets a tombstone.

use weir_log::Timestamp;

use super::state::{Group, Member};
use super::GroupState;

/// Version tag of group metadata keys and values.
pub(super) const GROUP_VERSION: u16 = 2;

/// Encodes the record key of a group's metadata.
pub(super) fn encode_key(group: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + group.len());
    b.extend_from_slice(&GROUP_VERSION.to_be_bytes());
    put_str(&mut b, group);
    b
}

/// The group of a metadata key; `None` for other keys.
pub(super) fn decode_key(b: &[u8]) -> Option<String> {
    if b.get(..2)? != GROUP_VERSION.to_be_bytes() {
        return None;
    }
    let mut r = Cursor { b, at: 2 };
    let group = r.str()?;
    (r.at == b.len()).then_some(group)
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v);
        }
        None => b.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

fn state_code(s: GroupState) -> u8 {
    match s {
        GroupState::Empty => 0,
        GroupState::PreparingRebalance => 1,
        GroupState::CompletingRebalance => 2,
        GroupState::Stable => 3,
        GroupState::Dead => 4,
    }
}

fn state_of(c: u8) -> Option<GroupState> {
    Some(match c {
        0 => GroupState::Empty,
        1 => GroupState::PreparingRebalance,
        2 => GroupState::CompletingRebalance,
        3 => GroupState::Stable,
        4 => GroupState::Dead,
        _ => return None,
    })
}

/// Encodes a group's metadata.
pub(super) fn encode_value(g: &Group) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + g.members.len() * 128);
    b.extend_from_slice(&GROUP_VERSION.to_be_bytes());
    b.push(state_code(g.state));
    b.extend_from_slice(&g.generation.to_be_bytes());
    put_str(&mut b, g.protocol_type.as_deref().unwrap_or(""));
    put_str(&mut b, g.protocol.as_deref().unwrap_or(""));
    put_str(&mut b, g.leader.as_deref().unwrap_or(""));
    b.extend_from_slice(&(g.members.len() as u32).to_be_bytes());
    for (id, m) in &g.members {
        put_str(&mut b, id);
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        b.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        b.extend_from_slice(&(m.protocols.len() as u32).to_be_bytes());
        for (name, meta) in &m.protocols {
            put_str(&mut b, name);
            put_bytes(&mut b, Some(meta));
        }
        put_bytes(&mut b, m.assignment.as_deref());
    }
    b
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn bytes(&mut self) -> Option<Option<Vec<u8>>> {
        let n = self.u32()?;
        if n == u32::MAX {
            return Some(None);
        }
        Some(Some(self.take(n as usize)?.to_vec()))
    }
    /// A count of elements of at least `min` bytes each, checked against the bytes left.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min) <= self.b.len() - self.at).then_some(n)
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Decodes a group's metadata; members get `now` as their last heartbeat, so a restart
/// gives each a full session to come back. `None` if the bytes are not a valid value.
pub(super) fn decode_value(b: &[u8], now: Timestamp) -> Option<Group> {
    let mut r = Cursor { b, at: 0 };
    if r.u16()? != GROUP_VERSION {
        return None;
    }
    let mut g = Group::new();
    g.state = state_of(r.take(1)?[0])?;
    g.generation = r.i32()?;
    g.protocol_type = opt(r.str()?);
    g.protocol = opt(r.str()?);
    g.leader = opt(r.str()?);
    for _ in 0..r.count(30)? {
        let id = r.str()?;
        let client_id = r.str()?;
        let client_host = r.str()?;
        let session_timeout_ms = r.i64()?;
        let rebalance_timeout_ms = r.i64()?;
        let mut protocols = Vec::new();
        for _ in 0..r.count(6)? {
            let name = r.str()?;
            protocols.push((name, r.bytes()??));
        }
        let assignment = r.bytes()?;
        g.members.insert(
            id,
            Member {
                client_id,
                client_host,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                last_heartbeat: now,
                joined: true,
                in_join: false,
                in_sync: false,
                assignment,
            },
        );
    }
    (r.at == b.len()).then_some(g)
}

/// Persists a group's membership without waiting for its fsync, or for room in a full
/// queue: it is advisory (describe from other processes, members' continuity across a
/// restart), it is written under the group's lock, which requests served on async workers
/// take, and the group's next change writes its whole state again. Nothing on a read-only
/// view.
pub(super) fn persist(log: &weir_log::Log, name: &str, g: &Group) {
    if log.is_read_only() {
        return;
    }
    let record = weir_log::Record::keyed(encode_key(name), encode_value(g));
    let mut batch = weir_log::BatchBuilder::with_capacity(256);
    batch.push(&record, log.now());
    let partition = crate::offsets::OffsetStore::partition_of(name);
    match log.try_submit_batch(crate::offsets::OFFSETS_TOPIC, partition, batch.finish()) {
        Ok(Ok(_)) => {}
        Ok(Err(_full)) => {
            tracing::warn!(
                group = name,
                "group metadata not persisted: the offsets queue is full"
            )
        }
        Err(e) => tracing::warn!(group = name, error = %e, "cannot persist group metadata"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_metadata_round_trips() {
        let mut g = Group::new();
        g.state = GroupState::Stable;
        g.generation = 7;
        g.protocol_type = Some("consumer".into());
        g.protocol = Some("range".into());
        g.leader = Some("m-1".into());
        g.members.insert(
            "m-1".into(),
            Member {
                client_id: "app".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                protocols: vec![("range".into(), vec![1, 2, 3])],
                last_heartbeat: Timestamp(5),
                joined: true,
                in_join: false,
                in_sync: false,
                assignment: Some(vec![9, 9]),
            },
        );
        let back = decode_value(&encode_value(&g), Timestamp(99)).expect("decodes");
        assert_eq!(back.generation, 7);
        assert_eq!(back.state, GroupState::Stable);
        assert_eq!(back.leader.as_deref(), Some("m-1"));
        let m = &back.members["m-1"];
        assert_eq!(
            (m.client_host.as_str(), m.last_heartbeat),
            ("/127.0.0.1", Timestamp(99))
        );
        assert_eq!(m.protocols, vec![("range".to_string(), vec![1, 2, 3])]);
        assert_eq!(m.assignment, Some(vec![9, 9]));
        assert_eq!(decode_key(&encode_key("g")), Some("g".to_string()));
        assert!(decode_value(&encode_value(&g)[..20], Timestamp(0)).is_none());
    }
}
