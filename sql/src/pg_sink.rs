//! `CREATE SINK name FROM relation WITH (connector = 'postgres', url = '…', table = '…'
//! [, primary_key = 'a,b'])`: a relation's rows kept in a PostgreSQL table, exactly once
//! ([`weir_cdc::PgSink`]). A materialized view's changes are upserts and deletes by its key
//! (its GROUP BY columns, unless `primary_key` says otherwise), a table's by its primary key;
//! a stream's rows are appended, or upserted by `primary_key`.
//!
//! The sink runs on a thread of its own for as long as the session's queries do, resumes
//! from the positions PostgreSQL committed, and reports failures in `SHOW QUERIES`. `DROP
//! SINK` stops it and deletes its positions (the table stays: it is the user's).
//!
//! Invariant: a sink is checked and its table made (PostgreSQL reachable) before its catalog
//! entry is written.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use weir_cdc::{pg_type, PgSink, PgSinkConfig, SinkColumn};

use crate::catalog::{Column, Relation};
use crate::connector::{ConnectorStatus, RunningConnector};
use crate::error::{Result, SqlError};
use crate::format::Format;
use crate::parser::{CreateSink, RelationKind, SinkSource};
use crate::session::{Outcome, Session};

/// How long a sink waits when its relation has nothing new.
const PG_SINK_POLL: Duration = Duration::from_millis(20);

/// Whether a sink's options name the PostgreSQL connector.
pub(crate) fn is_postgres(options: &BTreeMap<String, String>) -> bool {
    options
        .get("connector")
        .is_some_and(|c| c.eq_ignore_ascii_case("postgres") || c.eq_ignore_ascii_case("postgresql"))
}

impl Session {
    /// `CREATE SINK … WITH (connector = 'postgres', …)`.
    pub(crate) fn create_pg_sink(
        &mut self,
        c: &CreateSink,
        mut options: BTreeMap<String, String>,
    ) -> Result<Outcome> {
        let SinkSource::From(from, at) = &c.source else {
            return Err(SqlError::unsupported(
                "a postgres sink AS a query; create a MATERIALIZED VIEW of the query and \
                 CREATE SINK … FROM it",
                c.at,
            ));
        };
        let source = self.relation(from, *at)?.clone();
        for required in ["url", "table"] {
            if !options.contains_key(required) {
                return Err(SqlError::option(
                    required,
                    "a postgres sink needs `url` and `table`",
                ));
            }
        }
        options.insert("connector".into(), "postgres".into());
        options.insert("from".into(), source.name.clone());
        let rel = Relation {
            name: c.name.clone(),
            kind: RelationKind::Sink,
            columns: Vec::new(),
            primary_key: Vec::new(),
            watermark: None,
            topic: source.topic.clone(),
            format: Format::Json,
            options,
            query: Some(format!("SELECT * FROM \"{}\"", source.name)),
        };
        let config = self.pg_sink_config(&rel)?;
        // Reachable, and its table made: before the catalog says it exists.
        PgSink::connect(&self.log, config.clone())
            .map_err(|e| SqlError::Execution(format!("sink `{}`: {e}", c.name)))?;
        let mut rel = rel;
        rel.columns = config
            .columns
            .iter()
            .map(|col| Column {
                name: col.name.clone(),
                sql_type: Some(col.pg_type.to_uppercase()),
                computed: None,
            })
            .collect();
        rel.primary_key = config.primary_key.clone();
        self.catalog.put(rel.clone())?;
        self.start_pg_sink(&rel)?;
        Ok(Outcome::status("CREATE SINK"))
    }

    /// The sink's settings from its catalog entry and its source's.
    fn pg_sink_config(&self, rel: &Relation) -> Result<PgSinkConfig> {
        let from = rel.options.get("from").cloned().unwrap_or_default();
        let source = self.relation(&from, None)?.clone();
        if source.format != Format::Json || source.datagen()?.is_some() {
            return Err(SqlError::unsupported(
                format!(
                    "a postgres sink from `{}` ({}): it reads JSON rows from a topic; sink a \
                     materialized view over it",
                    source.name,
                    if source.datagen()?.is_some() {
                        "datagen"
                    } else {
                        "not json"
                    }
                ),
                None,
            ));
        }
        let schema = source.stored_schema()?;
        let columns: Vec<SinkColumn> = source
            .columns
            .iter()
            .filter_map(|c| Some((c, c.sql_type.as_ref()?)))
            .map(|(c, t)| SinkColumn {
                name: c.name.clone(),
                pg_type: pg_type(t),
                millis: matches!(
                    schema.field_with_name(&c.name).map(|f| f.data_type()),
                    Ok(datafusion::arrow::datatypes::DataType::Timestamp(..))
                ),
            })
            .collect();
        let primary_key: Vec<String> = match rel.options.get("primary_key") {
            Some(k) => k.split(',').map(|k| k.trim().to_string()).collect(),
            None => match source.kind {
                RelationKind::Table => source.primary_key.clone(),
                RelationKind::View => source
                    .options
                    .get(crate::pull::KEY_COLUMNS_OPTION)
                    .map(|k| k.split(',').map(str::to_string).collect())
                    .ok_or_else(|| {
                        SqlError::option(
                            "primary_key",
                            format!(
                                "view `{}` does not output all its GROUP BY columns; name the \
                                 table's key",
                                source.name
                            ),
                        )
                    })?,
                _ => Vec::new(),
            },
        };
        for k in &primary_key {
            if !columns.iter().any(|c| &c.name == k) {
                return Err(SqlError::option(
                    "primary_key",
                    format!("`{k}` is not a column of `{}`", source.name),
                ));
            }
        }
        Ok(PgSinkConfig {
            name: rel.name.clone(),
            url: rel.options.get("url").cloned().unwrap_or_default(),
            table: rel.options.get("table").cloned().unwrap_or_default(),
            columns,
            primary_key,
            topic: source.topic.clone(),
            poll: PG_SINK_POLL,
        })
    }

    /// Starts a PostgreSQL sink's thread.
    pub(crate) fn start_pg_sink(&mut self, rel: &Relation) -> Result<()> {
        let Some(host) = self.engine.clone() else {
            return Ok(());
        };
        let config = self.pg_sink_config(rel)?;
        let log = self.log.clone();
        let connector =
            RunningConnector::spawn(&format!("weir-sink-{}", rel.name), move |stop, status| {
                run_sink(&log, &config, stop, status)
            })
            .map_err(|e| SqlError::Execution(format!("cannot start sink `{}`: {e}", rel.name)))?;
        host.running()
            .connectors
            .insert(rel.name.clone(), connector);
        Ok(())
    }

    /// `DROP SINK` of a PostgreSQL sink: its positions go with it (best effort: an
    /// unreachable PostgreSQL is said in a notice).
    pub(crate) fn reset_pg_sink(&self, rel: &Relation) -> Vec<String> {
        let url = rel.options.get("url").cloned().unwrap_or_default();
        match weir_cdc::pg_sink::forget(&url, &rel.name) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!(
                "the positions of `{}` in PostgreSQL were not deleted ({e}); a sink created \
                 with the same name resumes from them",
                rel.name
            )],
        }
    }
}

/// The sink's thread: runs it (retrying while PostgreSQL fails) until stopped, its counts
/// and last failure in `status`.
fn run_sink(
    log: &weir_log::Log,
    config: &PgSinkConfig,
    stop: &AtomicBool,
    status: &Mutex<ConnectorStatus>,
) {
    let report = |s: weir_cdc::SinkStatus| {
        let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
        st.applied = s.applied;
        st.error = s.error;
    };
    if let Err(e) = weir_cdc::run_sink_until_stopped(log, config, stop, &report) {
        tracing::error!(sink = %config.name, error = %e, "the postgres sink stopped");
        status.lock().unwrap_or_else(|p| p.into_inner()).error = Some(format!("stopped: {e}"));
    }
}
