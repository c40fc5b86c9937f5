//! Persistent queries: `CREATE SINK name {AS query | FROM relation} WITH (…)` and
//! `INSERT INTO stream SELECT …`. Each is a catalog entry (kind `sink`, with its query's SQL
//! text) and, in a session with an engine, a running engine pipeline under the application id
//! `sql-NAME`, committing its output with its source positions exactly once.
//!
//! Invariants: a query is compiled in full (and its sink topic made) before its catalog entry
//! is written, so the catalog never holds a query that cannot start; the application id is a
//! function of the name alone, so an unchanged restart resumes where it committed, and
//! `DROP SINK` deletes its offsets and state, so re-creating the name starts from nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::Schema;
use datafusion::logical_expr::{cast, lit, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{Query, Statement};
use weir_coord::{GroupCoordinator, TransactionCoordinator};
use weir_engine::{RunOptions, RunningPipeline};

use crate::catalog::{Column, Relation};
use crate::error::{from_datafusion, At, Position, Result, SqlError};
use crate::format::{Format, META_COLUMNS};
use crate::parser::{CreateSink, EmitMode, RelationKind, SinkSource};
use crate::session::{Outcome, Session};
use crate::stream::{compile, Compiled, QueryPlan, SinkTarget, STREAM_BATCH_ROWS};
use crate::types::sql_name;

/// Options `CREATE SINK` understands.
const SINK_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "format",
    "partitions",
    "url",
    "table",
    "primary_key",
];

/// What a session needs to run persistent queries.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The group coordinator (queries' offsets).
    pub groups: GroupCoordinator,
    /// The transaction coordinator (exactly-once commits).
    pub txns: TransactionCoordinator,
    /// Where queries keep RocksDB state.
    pub state_dir: PathBuf,
}

/// The running queries of a session.
#[derive(Debug, Default)]
pub(crate) struct Running {
    pub(crate) pipelines: BTreeMap<String, RunningPipeline>,
    /// Sinks into other systems (PostgreSQL), each on a thread of its own.
    pub(crate) connectors: BTreeMap<String, crate::connector::RunningConnector>,
    /// Queries that could not start, with why.
    pub(crate) failed: BTreeMap<String, String>,
}

/// The persistent queries of a data directory, shared by every session over it (each
/// session of a server can create, show and drop them). Dropping the last reference stops
/// them, each committing what it processed.
#[derive(Debug)]
pub struct QueryHost {
    pub(crate) engine: Engine,
    pub(crate) running: Mutex<Running>,
    /// The materialized views' RocksDB indexes, for pull queries.
    pub(crate) views: crate::pull::ViewIndexes,
}

impl QueryHost {
    /// A host for `engine`'s queries; none runs until a session starts them.
    pub fn new(engine: Engine) -> Arc<QueryHost> {
        Arc::new(QueryHost {
            engine,
            running: Mutex::new(Running::default()),
            views: Default::default(),
        })
    }

    /// The running queries (a poisoned lock only means a session panicked mid-update; the
    /// maps stay consistent, so go on).
    pub(crate) fn running(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every running query (each commits what it processed).
    pub fn stop_all(&self) {
        let connectors = std::mem::take(&mut self.running().connectors);
        for (_, c) in connectors {
            c.stop();
        }
        let pipelines = std::mem::take(&mut self.running().pipelines);
        for (name, p) in pipelines {
            if let Err(e) = p.stop() {
                tracing::warn!(query = %name, error = %e, "persistent query stopped with an error");
            }
        }
    }

    /// The metrics of a running query.
    pub fn query_metrics(&self, name: &str) -> Option<weir_engine::MetricsSnapshot> {
        self.running().pipelines.get(name).map(|p| p.metrics())
    }
}

impl Drop for QueryHost {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The application id of persistent query `name`.
pub fn query_app(name: &str) -> String {
    format!("sql-{}", weir_engine::names::part_from(name))
}

impl Session {
    /// Starts every persistent query of the catalog that is not running yet; one that cannot
    /// start is reported by `SHOW QUERIES` and does not stop the others.
    pub fn start_queries(&mut self) {
        let Some(host) = self.engine.clone() else {
            return;
        };
        let sinks: Vec<Relation> = self
            .catalog
            .relations()
            .filter(|r| matches!(r.kind, RelationKind::Sink | RelationKind::View))
            .filter(|r| {
                let running = host.running();
                !running.pipelines.contains_key(&r.name)
                    && !running.connectors.contains_key(&r.name)
            })
            .cloned()
            .collect();
        for rel in sinks {
            if crate::push::is_transient(&rel) {
                // A push query whose client a crash took: nobody reads it.
                if let Err(e) = self.drop_transient(&rel.name) {
                    tracing::warn!(query = %rel.name, error = %e, "a push query was not dropped");
                }
                continue;
            }
            if let Err(e) = self.start_query(&rel) {
                tracing::warn!(query = %rel.name, error = %e, "persistent query did not start");
                host.running()
                    .failed
                    .insert(rel.name.clone(), e.to_string());
            }
        }
    }

    /// Stops every running query (each commits what it processed).
    pub fn stop_queries(&mut self) {
        if let Some(host) = &self.engine {
            host.stop_all();
        }
    }

    /// The metrics of a running query.
    pub fn query_metrics(&self, name: &str) -> Option<weir_engine::MetricsSnapshot> {
        self.engine.as_ref()?.query_metrics(name)
    }

    fn engine(&self) -> Result<&Engine> {
        self.engine.as_ref().map(|h| &h.engine).ok_or_else(|| {
            SqlError::unsupported(
                "persistent queries in a read-only session (a `weir serve` holds the data \
                 directory; run the statement through it)",
                None,
            )
        })
    }

    pub(crate) fn create_sink(&mut self, c: CreateSink) -> Result<Outcome> {
        let tag = match c.view {
            true => "CREATE MATERIALIZED VIEW",
            false => "CREATE SINK",
        };
        if let Some(existing) = self.catalog.get(&c.name) {
            if c.if_not_exists {
                return Ok(Outcome::status(tag)
                    .notice(format!("`{}` already exists; nothing done", c.name)));
            }
            return Err(SqlError::Exists {
                name: c.name.clone(),
                kind: existing.kind.name(),
                at: At(c.at),
            });
        }
        self.engine()?;
        let mut options = match c.view {
            true => view_options(&c.options)?,
            false => sink_options(&c.options)?,
        };
        if crate::pg_sink::is_postgres(&options) {
            return self.create_pg_sink(&c, options);
        }
        if let Some(e) = c.emit {
            options.insert("emit".into(), emit_name(e).into());
        }
        let (query, text) = match c.source {
            SinkSource::Query(q) => {
                let text = q.to_string();
                (*q, text)
            }
            SinkSource::From(name, at) => {
                self.relation(&name, at)?;
                let text = format!("SELECT * FROM \"{name}\"");
                (crate::parser::parse_query(&text)?, text)
            }
        };
        let blackhole = options.get("connector").is_some_and(|c| c == "blackhole");
        let format = Format::parse(options.get("format").map_or("json", String::as_str))?;
        let topic = match (blackhole, c.view) {
            (true, _) => String::new(),
            (false, true) => view_topic(&c.name),
            (false, false) => options
                .get("topic")
                .cloned()
                .unwrap_or_else(|| c.name.clone()),
        };
        let sink = match blackhole {
            true => SinkTarget::Blackhole,
            false => SinkTarget::Topic {
                topic: topic.clone(),
                format,
                key: Vec::new(),
                upsert: c.view,
            },
        };
        let mut compiled = self.compile_query(query, None, sink, c.emit)?;
        let columns = value_columns(compiled.output());
        let table_join = compiled.lookup.as_ref().is_some_and(|(l, _)| l.table_join);
        if c.view && compiled.aggregate.is_none() && !table_join {
            // A view's compacted topic needs a key per row: its groups (or a table join's
            // join key and left row).
            return Err(SqlError::unsupported(
                "a materialized view without GROUP BY or a join of tables (its rows need a \
                 key); use CREATE SINK … AS query, or INSERT INTO a stream",
                c.at,
            ));
        }
        if c.view && table_join {
            options.insert("keyed".into(), "true".into());
            if let Some(names) = compiled.key_table_join_by_output() {
                options.insert(crate::pull::KEY_COLUMNS_OPTION.into(), names);
            }
        }
        if let (true, Some((a, _))) = (c.view, &compiled.aggregate) {
            // Rows keyed by their group: read back as a table, the latest row per key, and
            // looked up by key when the view outputs the group columns.
            options.insert("keyed".into(), "true".into());
            let group = a
                .schema
                .project(&(0..a.slots.len()).collect::<Vec<_>>())
                .map_err(|e| SqlError::Execution(format!("the view's key: {e}")))?;
            let key = compiled
                .group_columns_in_output()
                .and_then(|at| crate::pull::key_columns(&group, &at, compiled.output()));
            if let Some(k) = key {
                options.insert(crate::pull::KEY_COLUMNS_OPTION.into(), k);
            }
        }
        if !blackhole {
            format.check(&Schema::new(
                compiled
                    .output()
                    .fields()
                    .iter()
                    .filter(|f| !META_COLUMNS.contains(&f.name().as_str()))
                    .cloned()
                    .collect::<Vec<_>>(),
            ))?;
            self.ensure_sink_topic(&topic, &options, c.view)?;
        }
        let rel = Relation {
            name: c.name.clone(),
            kind: match c.view {
                true => RelationKind::View,
                false => RelationKind::Sink,
            },
            columns,
            primary_key: Vec::new(),
            watermark: None,
            topic,
            format,
            options,
            query: Some(text),
        };
        self.catalog.put(rel.clone())?;
        self.run_compiled(&rel, compiled)?;
        Ok(Outcome::status(tag))
    }

    /// `INSERT INTO target [(columns)] SELECT …`: a persistent query named after its target.
    pub(crate) fn insert_select(
        &mut self,
        target: &str,
        at: Option<Position>,
        columns: &[String],
        query: Query,
        emit: Option<EmitMode>,
    ) -> Result<Outcome> {
        self.engine()?;
        let into = self.relation(target, at)?.clone();
        if matches!(into.kind, RelationKind::Sink | RelationKind::View) || into.datagen()?.is_some()
        {
            return Err(SqlError::plan(
                format!("`{target}` is not a stream or table written through a topic"),
                at,
            ));
        }
        let mut name = format!("insert_into_{}", into.name);
        let mut n = 1;
        while self.catalog.get(&name).is_some() {
            n += 1;
            name = format!("insert_into_{}_{n}", into.name);
        }
        let text = query.to_string();
        let targets = crate::insert::target_columns(&into, columns, at)?;
        let compiled = self.compile_query(query, Some((&into, &targets)), sink_of(&into), emit)?;
        // Change rows (an aggregate without a window, or windows emitting changes) have no
        // place in an append-only stream: its readers would count retractions as rows.
        let changes = compiled
            .aggregate
            .as_ref()
            .is_some_and(|(a, _)| a.window.is_none() || a.emit == crate::parser::EmitMode::Changes);
        if compiled.lookup.as_ref().is_some_and(|(l, _)| l.table_join) {
            // Its rows are keyed by join key and left row, not by the target's primary key.
            return Err(SqlError::plan(
                "a join of tables writes into a materialized view or a sink (CREATE \
                 MATERIALIZED VIEW v AS …), not INSERT INTO",
                at,
            ));
        }
        if changes && into.kind != RelationKind::Table {
            return Err(SqlError::plan(
                format!(
                    "an updating query (GROUP BY without a window, or windows without EMIT ON \
                     WINDOW CLOSE) writes into a table (upserts by its primary key) or a sink; \
                     `{}` is a stream",
                    into.name
                ),
                at,
            ));
        }
        if compiled.source.relation.topic == into.topic {
            return Err(SqlError::plan(
                format!(
                    "a query may not write into `{}`, which it reads (its output would be its input)",
                    into.name
                ),
                at,
            ));
        }
        let mut options = BTreeMap::new();
        options.insert("into".to_string(), into.name.clone());
        options.insert("columns".to_string(), targets.join(","));
        if let Some(e) = emit {
            options.insert("emit".into(), emit_name(e).into());
        }
        let rel = Relation {
            name: name.clone(),
            kind: RelationKind::Sink,
            columns: value_columns(compiled.output()),
            primary_key: into.primary_key.clone(),
            watermark: None,
            topic: into.topic.clone(),
            format: into.format,
            options,
            query: Some(text),
        };
        self.catalog.put(rel.clone())?;
        self.run_compiled(&rel, compiled)?;
        Ok(Outcome::status("INSERT 0 0").notice(format!(
            "a continuous query `{name}` writes into `{}` from now on (SHOW QUERIES; DROP SINK {name} stops it)",
            into.name
        )))
    }

    /// Plans, optimizes and compiles a query; for an INSERT, its columns are cast to the
    /// target's stored columns first.
    pub(crate) fn compile_query(
        &mut self,
        mut query: Query,
        into: Option<(&Relation, &[String])>,
        sink: SinkTarget,
        emit: Option<EmitMode>,
    ) -> Result<Compiled> {
        self.register_relations(false)?;
        let windows = self.window_calls(&mut query, true)?;
        self.hide_metadata(&mut query);
        let state = self.ctx.state();
        let plan = self
            .runtime
            .block_on(
                state.statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    Statement::Query(Box::new(query)),
                ))),
            )
            .map_err(from_datafusion)
            .map_err(|e| self.unknown_relation(e))?;
        let plan = match into {
            Some((rel, targets)) => cast_to(plan, rel, targets)?,
            None => plan,
        };
        let optimized = state.optimize(&plan).map_err(from_datafusion)?;
        let catalog = &self.catalog;
        let cx = crate::stream::Context {
            state: &state,
            relation_of: &|n| catalog.get(n).cloned(),
            windows: &windows,
            emit,
        };
        compile(&cx, &optimized, sink)
    }

    /// Compiles a stored query again and runs it.
    fn start_query(&mut self, rel: &Relation) -> Result<()> {
        if crate::pg_sink::is_postgres(&rel.options) {
            return self.start_pg_sink(rel);
        }
        if crate::cdc_source::is_cdc(&rel.options) {
            return self.start_cdc_source(rel);
        }
        let text = rel.query.clone().unwrap_or_default();
        let query = crate::parser::parse_query(&text)?;
        let emit = match rel.options.get("emit").map(String::as_str) {
            Some("on_window_close") => Some(EmitMode::OnWindowClose),
            Some("changes") => Some(EmitMode::Changes),
            _ => None,
        };
        let compiled = match rel.options.get("into") {
            Some(target) => {
                let into = self.relation(target, None)?.clone();
                let columns: Vec<String> = rel
                    .options
                    .get("columns")
                    .map(|c| c.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                let sink = sink_of(&into);
                self.compile_query(query, Some((&into, &columns)), sink, emit)?
            }
            None => {
                let sink = match rel.connector().as_str() {
                    "blackhole" => SinkTarget::Blackhole,
                    _ => SinkTarget::Topic {
                        topic: rel.topic.clone(),
                        format: rel.format,
                        key: Vec::new(),
                        upsert: rel.kind == RelationKind::View,
                    },
                };
                self.compile_query(query, None, sink, emit)?
            }
        };
        self.run_compiled(rel, compiled)
    }

    pub(crate) fn run_compiled(&mut self, rel: &Relation, compiled: Compiled) -> Result<()> {
        let engine = self.engine()?.clone();
        let partitions = compiled.source.relation.partitions(&self.log)?;
        let mut options = RunOptions::new(engine.state_dir.clone());
        options.max_batch_records = STREAM_BATCH_ROWS;
        options.workers = options.workers.min(partitions.max(1) as usize);
        // The joined table's partitions, or the right stream's of an interval join.
        let table_partitions = match (&compiled.lookup, &compiled.join) {
            (Some((l, _)), _) => l.table.partitions(&self.log)?,
            (None, Some((j, _))) => j.right.relation.partitions(&self.log)?,
            (None, None) => 1,
        };
        let plan = Arc::new(QueryPlan::new(
            &query_app(&rel.name),
            compiled,
            partitions,
            table_partitions,
        ));
        let running = weir_engine::run(plan, &self.log, &engine.groups, &engine.txns, options)
            .map_err(|e| SqlError::Execution(format!("query `{}`: {e}", rel.name)))?;
        if let Some(host) = &self.engine {
            let mut r = host.running();
            r.failed.remove(&rel.name);
            r.pipelines.insert(rel.name.clone(), running);
        }
        Ok(())
    }

    /// Creates a sink's topic when it does not exist (`partitions` from its options, else 1).
    pub(crate) fn ensure_sink_topic(
        &self,
        topic: &str,
        options: &BTreeMap<String, String>,
        compacted: bool,
    ) -> Result<()> {
        if self.log.partition_count(topic).is_ok() {
            return Ok(());
        }
        let partitions = crate::ddl::partitions(options)?.unwrap_or(1);
        let config = match compacted {
            true => weir_log::TopicConfig::parse_pairs(&["cleanup.policy=compact"])?,
            false => Default::default(),
        };
        self.log.create_topic(topic, partitions, config)?;
        Ok(())
    }

    /// `DROP SINK` / `DROP MATERIALIZED VIEW`: stops the query and deletes its offsets and
    /// state (and a view's topic, which is its own).
    pub(crate) fn drop_sink(&mut self, name: &str) -> Result<Vec<String>> {
        if self
            .catalog
            .get(name)
            .is_some_and(|r| r.kind == RelationKind::View)
        {
            let notices = self.stop_and_reset(name)?;
            if let Some(host) = &self.engine {
                host.views.remove(&host.engine.state_dir, name);
            }
            match self.log.delete_topic(&view_topic(name)) {
                Ok(()) | Err(weir_log::LogError::UnknownTopic(_)) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(notices);
        }
        self.stop_and_reset(name)
    }

    fn stop_and_reset(&mut self, name: &str) -> Result<Vec<String>> {
        let mut notices = Vec::new();
        let Some(host) = self.engine.clone() else {
            return Ok(notices);
        };
        let connector = host.running().connectors.remove(name);
        if let Some(c) = connector {
            c.stop();
        }
        if let Some(rel) = self
            .catalog
            .get(name)
            .filter(|r| crate::pg_sink::is_postgres(&r.options))
        {
            notices.extend(self.reset_pg_sink(&rel.clone()));
            return Ok(notices);
        }
        if let Some(rel) = self
            .catalog
            .get(name)
            .filter(|r| crate::cdc_source::is_cdc(&r.options))
        {
            self.reset_cdc_source(&rel.clone())?;
            return Ok(notices);
        }
        let (pipeline, _) = {
            let mut r = host.running();
            (r.pipelines.remove(name), r.failed.remove(name))
        };
        if let Some(p) = pipeline {
            if let Err(e) = p.stop() {
                notices.push(format!("the query stopped with an error: {e}"));
            }
        }
        {
            let engine = &host.engine;
            weir_engine::reset(
                &self.log,
                &engine.groups,
                &query_app(name),
                &engine.state_dir,
            )
            .map_err(|e| {
                SqlError::Execution(format!("cannot delete the state of `{name}`: {e}"))
            })?;
        }
        Ok(notices)
    }

    /// `SHOW SINKS` / `SHOW QUERIES`: every persistent query with its state and counts.
    pub(crate) fn show_queries(&self, views_only: bool) -> Result<Outcome> {
        let sinks: Vec<&Relation> = self
            .catalog
            .relations()
            .filter(|r| matches!(r.kind, RelationKind::Sink | RelationKind::View))
            .filter(|r| !views_only || r.kind == RelationKind::View)
            .collect();
        let mut status = Vec::new();
        let mut records_in = Vec::new();
        for r in &sinks {
            let connector = self
                .engine
                .as_ref()
                .and_then(|h| h.running().connectors.get(&r.name).map(|c| c.status()));
            if let Some(c) = connector {
                records_in.push(Some(c.applied as i64));
                status.push(match c.error {
                    Some(e) => format!("failed: {e}"),
                    None => "running".to_string(),
                });
                continue;
            }
            let metrics = self.query_metrics(&r.name);
            // The source's records: an aggregate's second part (tasks of another input topic)
            // reads them again.
            records_in.push(metrics.as_ref().map(|m| {
                let inputs: std::collections::BTreeSet<&str> = m
                    .tasks
                    .iter()
                    .map(|t| {
                        t.task
                            .rsplit_once('/')
                            .map_or(t.task.as_str(), |(topic, _)| topic)
                    })
                    .collect();
                (m.records_in / inputs.len().max(1) as u64) as i64
            }));
            let failed = self
                .engine
                .as_ref()
                .and_then(|h| h.running().failed.get(&r.name).cloned());
            status.push(match (&metrics, failed) {
                (_, Some(e)) => format!("failed: {e}"),
                (Some(m), None) => match m.tasks.iter().find_map(|t| match &t.state {
                    weir_engine::TaskState::Failed(e) => Some(e.clone()),
                    _ => None,
                }) {
                    Some(e) => format!("failed: {e}"),
                    None => "running".to_string(),
                },
                (None, None) => "not running in this session".to_string(),
            });
        }
        let target = |r: &Relation| match (r.options.get("into"), r.connector().as_str()) {
            _ if r.kind == RelationKind::View => format!("materialized view (topic {})", r.topic),
            (Some(into), _) => format!("{into} (topic {})", r.topic),
            (None, "blackhole") => "blackhole".to_string(),
            (None, "postgres") => format!(
                "postgres table {}",
                r.options.get("table").map_or("", String::as_str)
            ),
            (None, "postgres-cdc") => format!(
                "topics {}.schema.table (from PostgreSQL)",
                r.options.get("topic.prefix").map_or("", String::as_str)
            ),
            (None, _) => format!("topic {}", r.topic),
        };
        let strings = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from_iter_values(v)) };
        crate::ddl::rows(vec![
            (
                "name",
                strings(sinks.iter().map(|r| r.name.clone()).collect()),
            ),
            ("target", strings(sinks.iter().map(|r| target(r)).collect())),
            ("status", strings(status)),
            (
                "records_in",
                Arc::new(Int64Array::from(records_in)) as ArrayRef,
            ),
            (
                "query",
                strings(
                    sinks
                        .iter()
                        .map(|r| r.query.clone().unwrap_or_default())
                        .collect(),
                ),
            ),
        ])
    }
}

/// How an `EMIT` clause is stored in a sink's options.
fn emit_name(e: EmitMode) -> &'static str {
    match e {
        EmitMode::Changes => "changes",
        EmitMode::OnWindowClose => "on_window_close",
    }
}

/// The sink writing into a stream or table: its topic, format and primary key.
fn sink_of(into: &Relation) -> SinkTarget {
    SinkTarget::Topic {
        topic: into.topic.clone(),
        format: into.format,
        key: into.primary_key.clone(),
        upsert: into.kind == RelationKind::Table,
    }
}

/// The query's columns cast to the target's stored columns (named ones, in order; the others
/// NULL), named as the target's.
fn cast_to(plan: LogicalPlan, into: &Relation, targets: &[String]) -> Result<LogicalPlan> {
    let given = plan.schema().columns();
    if given.len() != targets.len() {
        return Err(SqlError::plan(
            format!(
                "the query has {} column(s) for {} column(s) of `{}`",
                given.len(),
                targets.len(),
                into.name
            ),
            None,
        ));
    }
    let stored = into.stored_schema()?;
    let mut exprs: Vec<Expr> = Vec::with_capacity(stored.fields().len());
    for f in stored.fields() {
        let e = match targets.iter().position(|t| t == f.name()) {
            Some(i) => cast(Expr::Column(given[i].clone()), f.data_type().clone()),
            None => cast(
                lit(datafusion::common::ScalarValue::Null),
                f.data_type().clone(),
            ),
        };
        exprs.push(e.alias(f.name()));
    }
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(from_datafusion)
}

/// The catalog's columns of a sink: its output's value columns and their types.
pub(crate) fn value_columns(schema: &datafusion::arrow::datatypes::SchemaRef) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .filter(|f| !META_COLUMNS.contains(&f.name().as_str()))
        .map(|f| Column {
            name: f.name().clone(),
            sql_type: Some(sql_name(f.data_type())),
            computed: None,
        })
        .collect()
}

/// The internal topic holding a materialized view's rows.
pub fn view_topic(name: &str) -> String {
    format!("__weir_view.{name}")
}

/// Options `CREATE MATERIALIZED VIEW` understands.
const VIEW_OPTIONS: &[&str] = &["partitions"];

/// A view's `WITH` options (only its topic's partitions).
fn view_options(given: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in given {
        if !VIEW_OPTIONS.contains(&k.as_str()) {
            return Err(SqlError::option(
                k,
                format!(
                    "unknown option; a materialized view takes: {}",
                    VIEW_OPTIONS.join(", ")
                ),
            ));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// A sink's `WITH` options, refusing unknown keys and connectors.
fn sink_options(given: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in given {
        if !SINK_OPTIONS.contains(&k.as_str()) {
            return Err(crate::ddl::unknown_option(k, SINK_OPTIONS));
        }
        out.insert(k.clone(), v.clone());
    }
    match out
        .get("connector")
        .map(|c| c.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("topic") | Some("kafka") => {}
        Some("blackhole") => {
            out.insert("connector".into(), "blackhole".into());
        }
        Some("postgres" | "postgresql") => {
            out.insert("connector".into(), "postgres".into());
        }
        Some(c) => {
            return Err(SqlError::option(
                "connector",
                format!("`{c}`: a sink writes to `topic`, `postgres` or `blackhole`"),
            ))
        }
    }
    Ok(out)
}
