//! Starting an application over: one call deletes what it left in the log and on disk — its
//! committed offsets (and the event time committed with them), its internal topics
//! (changelogs, repartition topics, dead letters; also those named by earlier versions) and
//! its RocksDB state — so its next run reads its inputs from the start with empty state.
//! Its inputs and outputs are the user's and stay.

use std::path::Path;

use weir_coord::{CoordError, GroupCoordinator};
use weir_log::Log;

use crate::error::{EngineError, Result};

/// What a reset removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Internal topics deleted.
    pub topics: Vec<String>,
    /// Whether the application had committed offsets.
    pub offsets: bool,
    /// Whether a state directory was removed.
    pub state: bool,
}

/// Resets application `app` (which must not be running: its group must have no members).
pub fn reset(
    log: &Log,
    groups: &GroupCoordinator,
    app: &str,
    state_dir: &Path,
) -> Result<ResetReport> {
    crate::names::validate_app(app)?;
    let mut report = ResetReport::default();
    match groups.delete_group(app) {
        Ok(()) => report.offsets = true,
        Err(CoordError::UnknownGroup(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut topics = crate::names::internal_topics(log, app);
    topics.extend(crate::names::legacy_topics(log, app));
    for t in topics {
        log.delete_topic(&t)?;
        report.topics.push(t);
    }
    let dir = state_dir.join(app);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| EngineError::StateCorrupted {
            store: app.to_string(),
            reason: format!("cannot remove {}: {e}", dir.display()),
        })?;
        report.state = true;
    }
    Ok(report)
}
