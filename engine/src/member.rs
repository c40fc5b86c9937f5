//! The running pipeline's membership in its application's consumer group: it joins as the
//! leader, assigns itself every input partition, and heartbeats (rejoining after a rebalance)
//! on a thread of its own until it leaves. So `weir group describe APP` shows the pipeline
//! with its lag, and a second process for the same application is noticed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_coord::{CoordError, GroupCoordinator, JoinRequest};

use crate::error::{EngineError, Result};
use crate::task::GroupMembership;

/// Session timeout of the pipeline's group membership; it heartbeats every tenth of it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The pipeline's membership in its application's consumer group: it joins as the leader,
/// assigns itself every input partition, and heartbeats (rejoining after a rebalance) until
/// it leaves.
#[derive(Debug)]
pub(crate) struct GroupMember {
    groups: GroupCoordinator,
    app: String,
    pub(crate) state: GroupMembership,
    stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
}

fn join_as_owner(
    groups: &GroupCoordinator,
    app: &str,
    partitions: &[(String, u32)],
    member_id: Option<String>,
) -> Result<(String, i32)> {
    let topics: Vec<String> = {
        let mut t: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        t.dedup();
        t
    };
    let mut member_id = member_id;
    loop {
        let joined = match groups.join_group(JoinRequest {
            group: app.to_string(),
            member_id: member_id.clone(),
            client_id: format!("weir-pipeline pid {}", std::process::id()),
            client_host: String::new(),
            session_timeout: SESSION_TIMEOUT,
            rebalance_timeout: SESSION_TIMEOUT,
            protocol_type: "consumer".into(),
            protocols: vec![(
                "weir-pipeline".into(),
                weir_coord::encode_subscription(&topics),
            )],
        }) {
            Ok(j) => j,
            Err(CoordError::UnknownMember { .. }) if member_id.is_some() => {
                member_id = None;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // The pipeline owns every partition of its inputs; other members get none.
        let assignments = (joined.leader_id == joined.member_id).then(|| {
            joined
                .members
                .iter()
                .map(|(id, _)| {
                    let mine = *id == joined.member_id;
                    let a: &[(String, u32)] = if mine { partitions } else { &[] };
                    (id.clone(), weir_coord::encode_assignment(a))
                })
                .collect()
        });
        match groups.sync_group(app, joined.generation, &joined.member_id, assignments) {
            Ok(_) => return Ok((joined.member_id, joined.generation)),
            Err(CoordError::RebalanceInProgress(_)) => {
                member_id = Some(joined.member_id);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl GroupMember {
    pub(crate) fn join(
        groups: &GroupCoordinator,
        app: &str,
        partitions: Vec<(String, u32)>,
    ) -> Result<Self> {
        let first = join_as_owner(groups, app, &partitions, None)?;
        let state: GroupMembership = Arc::new(Mutex::new(Some(first)));
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (groups, app, state, stop) =
                (groups.clone(), app.to_string(), state.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("weir-member-{app}"))
                .spawn(move || {
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        // Short sleeps, so that leaving does not wait for a heartbeat period.
                        std::thread::sleep(Duration::from_millis(20));
                        if last.elapsed() < SESSION_TIMEOUT / 10 {
                            continue;
                        }
                        last = Instant::now();
                        let Some((id, generation)) =
                            state.lock().unwrap_or_else(|e| e.into_inner()).clone()
                        else {
                            continue;
                        };
                        if groups.heartbeat(&app, generation, &id).is_ok() {
                            continue;
                        }
                        match join_as_owner(&groups, &app, &partitions, Some(id)) {
                            Ok(m) => *state.lock().unwrap_or_else(|e| e.into_inner()) = Some(m),
                            Err(e) => {
                                tracing::warn!(app = %app, error = %e, "rejoining the pipeline's group failed; retrying")
                            }
                        }
                    }
                })
                .map_err(|e| EngineError::Internal(format!("cannot start a thread: {e}")))?
        };
        Ok(GroupMember {
            groups: groups.clone(),
            app: app.to_string(),
            state,
            stop,
            heartbeat: Some(heartbeat),
        })
    }

    /// Stops heartbeating and leaves the group (also what dropping it does).
    pub(crate) fn leave(self) {}
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if let Some((id, _)) = self.state.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = self.groups.leave_group(&self.app, &id);
        }
    }
}
