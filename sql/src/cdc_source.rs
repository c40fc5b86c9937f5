//! `CREATE SOURCE name WITH (connector = 'postgres-cdc', url = '…', publication = '…',
//! slot = '…', 'topic.prefix' = '…' [, partitions = N])`: PostgreSQL's changes captured into
//! `PREFIX.schema.table` topics by [`weir_cdc::PgSource`] for as long as the data directory's
//! queries run (`weir serve`, or an embedded session), resumed where it committed after a
//! restart. Tables over those topics read them with `format = 'debezium_json'`.
//!
//! The source is a persistent query in the catalog (kind sink, connector `postgres-cdc`):
//! `SHOW QUERIES` shows it, `DROP SOURCE` (or `DROP SINK`) stops it and forgets its progress,
//! so a source re-created under the name takes a new snapshot. Its topics stay.
//!
//! Invariant: the publication, slot and topics are made (PostgreSQL reachable) before the
//! catalog entry is written.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_cdc::{PgSource, PgSourceConfig};

use crate::catalog::Relation;
use crate::connector::RunningConnector;
use crate::error::{Result, SqlError};
use crate::format::Format;
use crate::parser::{CreateRelation, RelationKind};
use crate::session::{Outcome, Session};

/// The connector's name in `WITH`.
pub(crate) const CDC_CONNECTOR: &str = "postgres-cdc";

/// Options a CDC source takes.
const CDC_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "publication",
    "slot",
    "topic.prefix",
    "partitions",
];

/// How long the source waits when the slot has nothing new.
const CDC_POLL: Duration = Duration::from_millis(20);

/// Whether options name the PostgreSQL CDC connector.
pub(crate) fn is_cdc(options: &BTreeMap<String, String>) -> bool {
    options
        .get("connector")
        .is_some_and(|c| c.eq_ignore_ascii_case(CDC_CONNECTOR))
}

impl Session {
    /// `CREATE SOURCE … WITH (connector = 'postgres-cdc', …)`.
    pub(crate) fn create_cdc_source(&mut self, c: &CreateRelation) -> Result<Outcome> {
        if c.kind != RelationKind::Stream || !c.columns.is_empty() {
            return Err(SqlError::plan(
                "a postgres-cdc source has no columns: CREATE SOURCE name WITH (connector = \
                 'postgres-cdc', url = …, publication = …, slot = …, 'topic.prefix' = …); \
                 its tables are read by CREATE TABLE … WITH (format = 'debezium_json')",
                c.at,
            ));
        }
        let mut options = BTreeMap::new();
        for (k, v) in &c.options {
            if !CDC_OPTIONS.contains(&k.as_str()) {
                return Err(crate::ddl::unknown_option(k, CDC_OPTIONS));
            }
            options.insert(k.clone(), v.clone());
        }
        for required in ["url", "publication", "slot", "topic.prefix"] {
            if !options.contains_key(required) {
                return Err(SqlError::option(
                    required,
                    "a postgres-cdc source needs url, publication, slot and 'topic.prefix'",
                ));
            }
        }
        options.insert("connector".into(), CDC_CONNECTOR.into());
        let rel = Relation {
            name: c.name.clone(),
            kind: RelationKind::Sink,
            columns: Vec::new(),
            primary_key: Vec::new(),
            watermark: None,
            topic: String::new(),
            format: Format::DebeziumJson,
            options,
            query: None,
        };
        let config = cdc_config(&rel)?;
        let engine = self.engine_handles()?;
        PgSource::connect(&self.log, &engine, config)
            .map_err(|e| SqlError::Execution(format!("source `{}`: {e}", c.name)))?;
        self.catalog.put(rel.clone())?;
        self.start_cdc_source(&rel)?;
        Ok(Outcome::status("CREATE SOURCE"))
    }

    fn engine_handles(&self) -> Result<weir_coord::TransactionCoordinator> {
        self.engine
            .as_ref()
            .map(|h| h.engine.txns.clone())
            .ok_or_else(|| {
                SqlError::unsupported(
                    "a CDC source in a read-only session (run it through the `weir serve` \
                     that holds the data directory)",
                    None,
                )
            })
    }

    /// Starts a CDC source's thread.
    pub(crate) fn start_cdc_source(&mut self, rel: &Relation) -> Result<()> {
        let Some(host) = self.engine.clone() else {
            return Ok(());
        };
        let config = cdc_config(rel)?;
        let (log, txns) = (self.log.clone(), host.engine.txns.clone());
        let connector =
            RunningConnector::spawn(&format!("weir-cdc-{}", rel.name), move |stop, status| {
                if let Err(e) = weir_cdc::run_until_stopped(&log, &txns, &config, stop) {
                    tracing::error!(source = %config.name, error = %e, "the CDC source stopped");
                    status.lock().unwrap_or_else(|p| p.into_inner()).error =
                        Some(format!("stopped: {e}"));
                }
            })
            .map_err(|e| SqlError::Execution(format!("cannot start source `{}`: {e}", rel.name)))?;
        host.running()
            .connectors
            .insert(rel.name.clone(), connector);
        Ok(())
    }

    /// Forgets a dropped source's progress (its next incarnation takes a new snapshot).
    pub(crate) fn reset_cdc_source(&self, rel: &Relation) -> Result<()> {
        weir_cdc::progress::forget(&self.log, &rel.name)
            .map_err(|e| SqlError::Execution(format!("source `{}`: {e}", rel.name)))
    }
}

fn cdc_config(rel: &Relation) -> Result<PgSourceConfig> {
    let get = |k: &str| rel.options.get(k).cloned().unwrap_or_default();
    Ok(PgSourceConfig {
        name: rel.name.clone(),
        url: get("url"),
        publication: get("publication"),
        slot: get("slot"),
        topic_prefix: get("topic.prefix"),
        partitions: crate::ddl::partitions(&rel.options)?.unwrap_or(1),
        poll: CDC_POLL,
    })
}
