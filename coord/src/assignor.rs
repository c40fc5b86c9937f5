//! Partition assignors run by the group leader: range and round-robin, as in Kafka. Pure
//! functions from members' subscriptions and partition counts to assignments.

use std::collections::BTreeMap;

/// A member's subscription: member id → topics.
pub type Subscriptions = BTreeMap<String, Vec<String>>;
/// An assignment: member id → (topic, partition) pairs.
pub type Assignment = BTreeMap<String, Vec<(String, u32)>>;

/// Which assignor the leader runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions; the first members get one extra.
    Range,
    /// All partitions of all topics dealt out one by one.
    RoundRobin,
}

impl Assignor {
    /// Kafka's protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// Parses a protocol name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Assigns every partition of the subscribed topics to exactly one subscribed member.
    pub fn assign(self, subs: &Subscriptions, partitions: &BTreeMap<String, u32>) -> Assignment {
        let mut out: Assignment = subs.keys().map(|m| (m.clone(), Vec::new())).collect();
        match self {
            Assignor::Range => {
                for (topic, &count) in partitions {
                    let members: Vec<&String> = subs
                        .iter()
                        .filter(|(_, t)| t.contains(topic))
                        .map(|(m, _)| m)
                        .collect();
                    if members.is_empty() {
                        continue;
                    }
                    let n = members.len() as u32;
                    let (per, extra) = (count / n, count % n);
                    let mut next = 0;
                    for (i, m) in members.iter().enumerate() {
                        let take = per + u32::from((i as u32) < extra);
                        for p in next..next + take {
                            out.entry((*m).clone())
                                .or_default()
                                .push((topic.clone(), p));
                        }
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let members: Vec<&String> = subs.keys().collect();
                let mut i = 0usize;
                for (topic, &count) in partitions {
                    for p in 0..count {
                        // The next member (cyclically) that subscribes to this topic.
                        for _ in 0..members.len() {
                            let m = members[i % members.len()];
                            i += 1;
                            if subs[m].contains(topic) {
                                out.entry(m.clone()).or_default().push((topic.clone(), p));
                                break;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[(&str, &[&str])]) -> Subscriptions {
        members
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_extra_to_the_first() {
        let s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let parts = BTreeMap::from([("t".to_string(), 7)]);
        let a = Assignor::Range.assign(&s, &parts);
        let ps = |m: &str| a[m].iter().map(|(_, p)| *p).collect::<Vec<_>>();
        assert_eq!(ps("a"), vec![0, 1, 2]);
        assert_eq!(ps("b"), vec![3, 4]);
        assert_eq!(ps("c"), vec![5, 6]);
    }

    #[test]
    fn every_partition_goes_to_exactly_one_subscriber() {
        let s = subs(&[("a", &["x", "y"]), ("b", &["y"]), ("c", &["x"])]);
        let parts = BTreeMap::from([("x".to_string(), 5), ("y".to_string(), 4)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&s, &parts);
            let mut all: Vec<(String, u32)> = a.values().flatten().cloned().collect();
            all.sort();
            let mut want: Vec<(String, u32)> = (0..5)
                .map(|p| ("x".into(), p))
                .chain((0..4).map(|p| ("y".into(), p)))
                .collect();
            want.sort();
            assert_eq!(all, want, "{assignor:?}");
            for (m, tps) in &a {
                assert!(
                    tps.iter().all(|(t, _)| s[m].contains(t)),
                    "{assignor:?}: {m} got a topic it does not subscribe to"
                );
            }
        }
    }
}
