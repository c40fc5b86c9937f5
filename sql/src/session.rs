//! [`Session`]: runs statements against a log. DDL goes to the catalog (and creates topics),
//! `INSERT … VALUES` writes records, and queries are planned and executed by DataFusion over
//! the catalog's relations (batch queries over what the log holds when they run).
//!
//! A session owns a small tokio runtime for DataFusion; its methods block, so a CLI or a
//! test calls them directly and a server calls them from its blocking pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::TableProvider;
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{col, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use weir_log::Log;

use crate::catalog::{Catalog, Relation};
use crate::error::{closest, from_datafusion, At, Hint, Result, SqlError};
use crate::format::{RowDecoder, META_COLUMNS};
use crate::parser::{parse, WeirStatement};
use crate::queries::{Engine, QueryHost};
use crate::scan::{BadRecordLog, BadRecords, PartitionScan};
use crate::window::WindowCall;

/// Threads of a session's DataFusion runtime (the machine's cores, at most this many).
const SQL_WORKER_THREADS_MAX: usize = 8;

/// Rows a query result may hold: results are returned whole, so a query over a huge stream
/// needs a `LIMIT` or an aggregate.
pub const RESULT_ROWS_MAX: usize = 1_000_000;

/// What a statement returns.
#[derive(Debug, Clone)]
pub enum Output {
    /// Rows, with their schema (also when there are none).
    Rows {
        /// Column names and types.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
    },
    /// A command's tag, as Postgres reports it (`CREATE STREAM`, `INSERT 0 3`).
    Status(String),
}

/// A statement's output and anything the user should know about it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The output.
    pub output: Output,
    /// Warnings: records skipped because they do not decode, a topic kept on DROP, …
    pub notices: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Outcome {
    pub(crate) fn status(tag: impl Into<String>) -> Outcome {
        Outcome {
            output: Output::Status(tag.into()),
            notices: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub(crate) fn notice(mut self, n: impl Into<String>) -> Outcome {
        self.notices.push(n.into());
        self
    }
}

/// What a statement would return and take ([`Session::describe_sql`]).
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// Its result's columns (`None`: it returns no rows).
    pub schema: Option<SchemaRef>,
    /// The type of each parameter `$n` at index `n - 1`, where the statement determines it.
    pub parameters: Vec<Option<datafusion::arrow::datatypes::DataType>>,
}

impl Described {
    fn rows(schema: SchemaRef) -> Described {
        Described {
            schema: Some(schema),
            parameters: Vec::new(),
        }
    }
}

/// A SQL session over a log.
pub struct Session {
    pub(crate) log: Log,
    pub(crate) catalog: Catalog,
    pub(crate) ctx: SessionContext,
    pub(crate) runtime: Arc<SqlRuntime>,
    bad: BadRecordLog,
    /// Runs persistent queries (`None`: a read-only session).
    pub(crate) engine: Option<Arc<QueryHost>>,
    /// Held while a statement changes the catalog, so two sessions of one process cannot
    /// both create one name.
    pub(crate) ddl: Arc<Mutex<()>>,
    /// The relations registered with `ctx`.
    registered: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("log", &self.log)
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

/// The tokio runtime that runs DataFusion for every session of a [`Database`]. It shuts down
/// in the background when the last session goes, so dropping it inside another runtime (a
/// server's connection task) is safe.
#[derive(Debug)]
pub(crate) struct SqlRuntime(Option<tokio::runtime::Runtime>);

impl SqlRuntime {
    fn start() -> Result<SqlRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(sql_threads())
            .thread_name("weir-sql")
            .enable_all()
            .build()
            .map_err(|e| SqlError::Execution(format!("cannot start the SQL runtime: {e}")))?;
        Ok(SqlRuntime(Some(runtime)))
    }

    /// Runs a future to completion on the runtime, blocking the calling thread.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.0 {
            Some(r) => r.block_on(f),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.shutdown_background();
        }
    }
}

fn sql_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.min(SQL_WORKER_THREADS_MAX)
}

/// What the sessions over one data directory share: the log, the SQL runtime, the
/// persistent queries and the lock on catalog changes. A server opens one and gives each
/// connection a [`Session`] of its own.
#[derive(Debug, Clone)]
pub struct Database {
    log: Log,
    runtime: Arc<SqlRuntime>,
    engine: Option<Arc<QueryHost>>,
    ddl: Arc<Mutex<()>>,
}

impl Database {
    /// A database over `log`; with an engine, every persistent query of the catalog starts
    /// and runs until the last clone of it (and of its sessions) is dropped, or
    /// [`Database::stop_queries`].
    pub fn open(log: &Log, engine: Option<Engine>) -> Result<Database> {
        let db = Database::new(log, engine)?;
        db.start_queries()?;
        Ok(db)
    }

    /// A database whose persistent queries do not run until [`Database::start_queries`] (a
    /// server starts them on a thread of its own: one may wait for the group session of the
    /// instance a crash left behind).
    pub fn new(log: &Log, engine: Option<Engine>) -> Result<Database> {
        Ok(Database {
            log: log.clone(),
            runtime: Arc::new(SqlRuntime::start()?),
            engine: engine.map(QueryHost::new),
            ddl: Arc::new(Mutex::new(())),
        })
    }

    /// Starts every persistent query of the catalog that is not running. Holds the lock on
    /// catalog changes, so a query created or dropped meanwhile (by a client of a server
    /// that is still starting its queries) is neither started twice nor resurrected.
    pub fn start_queries(&self) -> Result<()> {
        let _changing = self.ddl.lock().unwrap_or_else(|p| p.into_inner());
        self.session()?.start_queries();
        Ok(())
    }

    /// A new session (its own settings and registered relations, the shared catalog).
    pub fn session(&self) -> Result<Session> {
        let mut config = SessionConfig::new()
            .with_target_partitions(sql_threads())
            .with_information_schema(true);
        config.options_mut().sql_parser.collect_spans = true;
        let ctx = SessionContext::new_with_config(config);
        crate::pg_catalog::install(&ctx, &[])?;
        Ok(Session {
            log: self.log.clone(),
            catalog: Catalog::open(&self.log)?,
            ctx,
            runtime: self.runtime.clone(),
            bad: Arc::new(Mutex::new(BadRecords::default())),
            engine: self.engine.clone(),
            ddl: self.ddl.clone(),
            registered: Default::default(),
        })
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Stops every persistent query (each commits what it processed).
    pub fn stop_queries(&self) {
        if let Some(host) = &self.engine {
            host.stop_all();
        }
    }
}

impl Session {
    /// A read-only session over `log` (its catalog is loaded, and created on a writable log).
    pub fn open(log: &Log) -> Result<Session> {
        Database::open(log, None)?.session()
    }

    /// A session that also runs persistent queries (sinks, `INSERT INTO … SELECT`) on the
    /// engine, starting every one the catalog holds; they run until the session ends.
    pub fn open_with_engine(log: &Log, engine: Engine) -> Result<Session> {
        Database::open(log, Some(engine))?.session()
    }

    /// Another session over what this one's database shares.
    pub(crate) fn sibling(&self) -> Result<Session> {
        Database {
            log: self.log.clone(),
            runtime: self.runtime.clone(),
            engine: self.engine.clone(),
            ddl: self.ddl.clone(),
        }
        .session()
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Parses and runs a script; stops at the first error (statements before it took effect).
    pub fn execute(&mut self, sql: &str) -> Result<Vec<Outcome>> {
        parse(sql)?.into_iter().map(|s| self.run(s)).collect()
    }

    /// Runs one parsed statement.
    pub fn run(&mut self, statement: WeirStatement) -> Result<Outcome> {
        let started = std::time::Instant::now();
        let ddl = self.ddl.clone();
        let _changing = match statement.changes_catalog() {
            true => Some(ddl.lock().unwrap_or_else(|p| p.into_inner())),
            false => None,
        };
        self.catalog.refresh()?;
        let mut outcome = match statement {
            WeirStatement::Create(c) => self.create(*c)?,
            WeirStatement::CreateSink(c) => self.create_sink(*c)?,
            WeirStatement::Drop {
                kind,
                name,
                at,
                if_exists,
            } => self.drop_relation(kind, &name, at, if_exists)?,
            WeirStatement::Show(what) => self.show(what)?,
            WeirStatement::Describe { name, at } => self.describe(&name, at)?,
            WeirStatement::Insert {
                name,
                at,
                columns,
                source,
                emit,
            } => self.insert(&name, at, &columns, *source, emit)?,
            WeirStatement::Query(s) => self.query(*s)?,
            WeirStatement::Push(_) => {
                // Its rows never end, so they are no statement's output: callers that can
                // stream them ask `Session::push`.
                return Err(SqlError::unsupported(
                    "SELECT … EMIT CHANGES in a script; send it on its own (psql, `weir sql`, \
                     or `COPY (SELECT … EMIT CHANGES) TO STDOUT`) and its rows stream until \
                     you cancel",
                    None,
                ));
            }
        };
        outcome.elapsed = started.elapsed();
        Ok(outcome)
    }

    /// What `sql` (one statement) would return and which parameters (`$1`, `$2`, …) it
    /// takes, without running it: a query is planned (its parameters' types inferred from
    /// where they are used), `SHOW` and `DESCRIBE` (which only read the catalog) are run.
    /// What a Postgres client's Describe asks.
    pub fn describe_sql(&mut self, sql: &str) -> Result<Described> {
        let mut statements = parse(sql)?;
        if statements.len() != 1 {
            return Err(SqlError::plan(
                format!("expected one statement, found {}", statements.len()),
                None,
            ));
        }
        self.catalog.refresh()?;
        match statements.remove(0) {
            s @ (WeirStatement::Show(_) | WeirStatement::Describe { .. }) => {
                Ok(match self.run(s)?.output {
                    Output::Rows { schema, .. } => Described::rows(schema),
                    Output::Status(_) => Described::default(),
                })
            }
            WeirStatement::Query(mut statement) => {
                self.register_relations(true)?;
                self.prepare_catalogs(&mut statement)?;
                if let Statement::Query(q) = statement.as_mut() {
                    self.window_calls(q, false)?;
                    self.hide_metadata(q);
                }
                let state = self.ctx.state();
                let plan = self
                    .runtime
                    .block_on(state.statement_to_plan(
                        datafusion::sql::parser::Statement::Statement(statement),
                    ))
                    .map_err(from_datafusion)
                    .map_err(|e| self.unknown_relation(e))?;
                let types = plan.get_parameter_types().map_err(from_datafusion)?;
                let mut parameters = Vec::new();
                for (name, t) in types {
                    let n: usize = name
                        .trim_start_matches('$')
                        .parse()
                        .ok()
                        .filter(|n| (1..=u16::MAX as usize).contains(n))
                        .ok_or_else(|| {
                            SqlError::plan(format!("bad parameter `{name}`: use $1, $2, …"), None)
                        })?;
                    if parameters.len() < n {
                        parameters.resize(n, None);
                    }
                    parameters[n - 1] = t;
                }
                Ok(Described {
                    schema: Some(Arc::clone(plan.schema().inner())),
                    parameters,
                })
            }
            _ => Ok(Described::default()),
        }
    }

    /// A relation, or the error naming the closest one.
    pub(crate) fn relation(
        &self,
        name: &str,
        at: Option<crate::error::Position>,
    ) -> Result<&Relation> {
        self.catalog
            .get(name)
            .ok_or_else(|| SqlError::UnknownRelation {
                kind: "relation",
                name: name.to_string(),
                at: At(at),
                hint: Hint(
                    closest(name, self.catalog.names()).map(|c| format!("did you mean `{c}`?")),
                ),
            })
    }

    /// Runs a query (or EXPLAIN) through DataFusion over the catalog's relations.
    fn query(&mut self, mut statement: Statement) -> Result<Outcome> {
        if let Some(outcome) = self.pull_by_key(&statement)? {
            return Ok(outcome);
        }
        self.register_relations(true)?;
        if let Some(columns) = crate::pg_catalog::empty_result(&statement) {
            return Ok(empty_rows(columns));
        }
        self.prepare_catalogs(&mut statement)?;
        match &mut statement {
            Statement::Query(q) => {
                self.window_calls(q, false)?;
                self.hide_metadata(q);
            }
            Statement::Explain { statement, .. } => {
                if let Statement::Query(q) = statement.as_mut() {
                    self.window_calls(q, false)?;
                    self.hide_metadata(q);
                }
            }
            _ => {}
        }
        *self.bad.lock().unwrap_or_else(|e| e.into_inner()) = BadRecords::default();
        let state = self.ctx.state();
        let ctx = self.ctx.clone();
        let (schema, batches) = self
            .runtime
            .block_on(async move {
                let plan = state
                    .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                        statement,
                    )))
                    .await
                    .map_err(from_datafusion)?;
                refuse_side_effects(&plan)?;
                // EXPLAIN must stay the plan's root; its rows are few anyway.
                let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
                let mut df = ctx
                    .execute_logical_plan(plan)
                    .await
                    .map_err(from_datafusion)?;
                let schema: SchemaRef = Arc::clone(df.schema().inner());
                if !explain {
                    df = df
                        .limit(0, Some(RESULT_ROWS_MAX + 1))
                        .map_err(from_datafusion)?;
                }
                let batches = df.collect().await.map_err(from_datafusion)?;
                Ok::<_, SqlError>((schema, batches))
            })
            .map_err(|e| self.unknown_relation(e))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > RESULT_ROWS_MAX {
            return Err(SqlError::plan(
                format!(
                    "the result has more than {RESULT_ROWS_MAX} rows; add a LIMIT or aggregate"
                ),
                None,
            ));
        }
        let mut outcome = Outcome {
            output: Output::Rows { schema, batches },
            notices: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let bad = std::mem::take(&mut *self.bad.lock().unwrap_or_else(|e| e.into_inner()));
        if bad.count > 0 {
            let first: Vec<String> = bad
                .first
                .iter()
                .map(|(rel, b)| {
                    format!(
                        "`{rel}` partition {} offset {}: {}",
                        b.partition, b.offset, b.reason
                    )
                })
                .collect();
            outcome = outcome.notice(format!(
                "skipped {} record(s) that do not decode; first: {}",
                bad.count,
                first.join("; ")
            ));
        }
        if bad.replayed > 0 {
            outcome = outcome.notice(format!(
                "ignored {} replayed change(s): each older than the change already applied \
                 to its key",
                bad.replayed
            ));
        }
        Ok(outcome)
    }

    /// The relations queries read: every one but sinks.
    fn queryable_relations(&self) -> Vec<Relation> {
        self.catalog
            .relations()
            .filter(|r| r.kind != crate::parser::RelationKind::Sink)
            .cloned()
            .collect()
    }

    /// Postgres's catalogs for a statement that reads them, and its Postgres-only syntax
    /// rewritten (see [`crate::pg_catalog`]).
    fn prepare_catalogs(&mut self, statement: &mut Statement) -> Result<()> {
        let catalogs = crate::pg_catalog::reads_catalogs(statement);
        if catalogs {
            let relations = self.queryable_relations();
            let mut described = Vec::with_capacity(relations.len());
            for relation in &relations {
                let schema = self.provider(relation)?.schema();
                described.push(crate::pg_catalog::Described { relation, schema });
            }
            crate::pg_catalog::install(&self.ctx, &described)?;
        }
        crate::pg_catalog::rewrite(statement, catalogs);
        Ok(())
    }

    /// `SELECT *` over the catalog's relations without their metadata columns.
    pub(crate) fn hide_metadata(&self, query: &mut datafusion::sql::sqlparser::ast::Query) {
        let catalog = &self.catalog;
        crate::wildcard::hide_metadata(query, &|name| {
            name.starts_with(crate::window::WINDOW_RELATION_PREFIX)
                || catalog
                    .get(name)
                    .is_some_and(|r| r.kind != crate::parser::RelationKind::Sink)
        });
    }

    /// DataFusion's "table 'x' not found" as the catalog's error, with the closest name.
    pub(crate) fn unknown_relation(&self, e: SqlError) -> SqlError {
        if let SqlError::Plan { message, at, .. } = &e {
            let name = message
                .strip_prefix("table '")
                .and_then(|m| m.strip_suffix("' not found"));
            if let Some(name) = name {
                let hint =
                    closest(name, self.catalog.names()).map(|c| format!("did you mean `{c}`?"));
                return SqlError::UnknownRelation {
                    kind: "relation",
                    name: name.to_string(),
                    at: *at,
                    hint: Hint(hint),
                };
            }
        }
        e
    }

    /// (Re)registers every relation with DataFusion: partition counts and the catalog may have
    /// changed since the last statement.
    /// Registers every relation with the session's DataFusion context; with `pull`, views
    /// are read from their RocksDB index (a batch query), else from their topic (the
    /// streaming compiler plans against topic scans).
    pub(crate) fn register_relations(&mut self, pull: bool) -> Result<()> {
        let relations = self.queryable_relations();
        // Relations another session dropped since this one registered them.
        let names: std::collections::HashSet<String> =
            relations.iter().map(|r| r.name.clone()).collect();
        let gone: Vec<String> = self.registered.difference(&names).cloned().collect();
        for name in gone {
            self.ctx
                .deregister_table(name.as_str())
                .map_err(from_datafusion)?;
        }
        self.registered = names;
        for rel in relations {
            let provider = match pull {
                true => self.pull_provider(&rel)?,
                false => None,
            };
            let provider = match provider {
                Some(p) => p,
                None => self.provider(&rel)?,
            };
            self.ctx
                .deregister_table(rel.name.as_str())
                .map_err(from_datafusion)?;
            self.ctx
                .register_table(rel.name.as_str(), provider)
                .map_err(from_datafusion)?;
        }
        Ok(())
    }

    /// A pull query by key on a view, answered by one lookup in its index (see
    /// [`crate::pull::fast`]); `None` for any other statement.
    fn pull_by_key(&self, statement: &Statement) -> Result<Option<Outcome>> {
        let Some(q) = crate::pull::fast::parse(statement) else {
            return Ok(None);
        };
        let Some(rel) = self.catalog.get(&q.view) else {
            return Ok(None);
        };
        let Some(view) = self.pull_view(rel)? else {
            return Ok(None);
        };
        Ok(view.by_key(&q)?.map(|batch| Outcome {
            output: Output::Rows {
                schema: batch.schema(),
                batches: vec![batch],
            },
            notices: Vec::new(),
            elapsed: Duration::ZERO,
        }))
    }

    /// A keyed view's index provider, when this session runs queries (the index lives in
    /// the engine's state directory).
    fn pull_provider(&self, rel: &Relation) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(view) = self.pull_view(rel)? else {
            return Ok(None);
        };
        let view = view.with_fallback(self.provider(rel)?);
        Ok(Some(Arc::new(view) as Arc<dyn TableProvider>))
    }

    fn pull_view(&self, rel: &Relation) -> Result<Option<crate::pull::ViewProvider>> {
        let keyed = rel.options.contains_key("keyed");
        let (Some(host), crate::parser::RelationKind::View, true) = (&self.engine, rel.kind, keyed)
        else {
            return Ok(None);
        };
        let index = host.views.get(&self.log, &host.engine.state_dir, rel)?;
        Ok(Some(crate::pull::ViewProvider::new(index, rel)?))
    }

    /// A relation as DataFusion sees it: a scan of its topic's partitions, projected to its
    /// declared columns (computed ones evaluated) and the metadata columns.
    fn provider(&self, rel: &Relation) -> Result<Arc<dyn TableProvider>> {
        self.provider_with(rel, rel.partitions(&self.log)?)
    }

    /// [`Session::provider`] over `partitions` partitions (none: to plan against its schema).
    pub(crate) fn provider_with(
        &self,
        rel: &Relation,
        partitions: u32,
    ) -> Result<Arc<dyn TableProvider>> {
        self.relation_provider(rel, partitions, None)
    }

    /// A relation's provider; for a window call in a continuous query, a scan named after the
    /// call whose rows carry `window_start` and `window_end` (the compiler's placeholders).
    fn relation_provider(
        &self,
        rel: &Relation,
        partitions: u32,
        window: Option<&WindowCall>,
    ) -> Result<Arc<dyn TableProvider>> {
        let decoder = RowDecoder::new(rel.format, rel.stored_schema()?);
        let datagen = rel.datagen()?.map(Arc::new);
        // A view keyed by its groups is read as a table: the latest row per key.
        let table = match (rel.kind, rel.options.get("keyed")) {
            (crate::parser::RelationKind::Table, _)
            | (crate::parser::RelationKind::View, Some(_)) => {
                Some(Arc::new(crate::changes::TableChanges::new(rel)?))
            }
            _ => None,
        };
        let streams: Vec<Arc<dyn PartitionStream>> = (0..partitions)
            .map(|p| {
                Arc::new(PartitionScan {
                    log: self.log.clone(),
                    relation: rel.name.clone(),
                    topic: rel.topic.clone(),
                    table: table.clone(),
                    partition: p,
                    decoder: decoder.clone(),
                    bad: self.bad.clone(),
                    datagen: datagen.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        let scan_schema = match window {
            Some(_) => crate::window::windowed_schema(decoder.schema()),
            None => decoder.schema().clone(),
        };
        let scan =
            Arc::new(StreamingTable::try_new(scan_schema, streams).map_err(from_datafusion)?);
        if rel.columns.iter().all(|c| c.computed.is_none()) && window.is_none() {
            return Ok(scan);
        }
        let stored = datafusion::common::DFSchema::try_from(decoder.schema().as_ref().clone())
            .map_err(from_datafusion)?;
        let mut exprs = Vec::with_capacity(rel.columns.len() + META_COLUMNS.len());
        for c in &rel.columns {
            exprs.push(match &c.computed {
                Some(sql) => self
                    .ctx
                    .parse_sql_expr(sql, &stored)
                    .map_err(from_datafusion)?
                    .alias(&c.name),
                None => col(format!("\"{}\"", c.name)),
            });
        }
        exprs.extend(META_COLUMNS.iter().map(|m| col(*m)));
        if window.is_some() {
            exprs.extend(["window_start", "window_end"].map(col));
        }
        let scan_name = window.map_or(rel.name.as_str(), |w| w.name.as_str());
        let plan = LogicalPlanBuilder::scan(scan_name, provider_as_source(scan), None)
            .and_then(|b| b.project(exprs))
            .and_then(|b| b.build())
            .map_err(from_datafusion)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

impl Session {
    /// Rewrites the query's window calls into relations of their own and registers them:
    /// views that compute the windows (batch), or the scans the streaming compiler turns into
    /// the engine's window operator.
    pub(crate) fn window_calls(
        &mut self,
        query: &mut datafusion::sql::sqlparser::ast::Query,
        streaming: bool,
    ) -> Result<Vec<WindowCall>> {
        let calls = crate::window::rewrite_window_calls(&self.ctx, query)?;
        for call in &calls {
            let rel = self.relation(&call.relation, None)?.clone();
            if rel.kind == crate::parser::RelationKind::Sink {
                return Err(SqlError::plan(
                    format!("`{}` is a sink; windows are over streams", rel.name),
                    None,
                ));
            }
            let base = self.provider(&rel)?;
            let time = base
                .schema()
                .field_with_name(&call.time_column)
                .ok()
                .map(|f| f.data_type().clone());
            if !matches!(
                time,
                Some(datafusion::arrow::datatypes::DataType::Timestamp(..))
            ) {
                return Err(SqlError::plan(
                    format!(
                        "`{}` is not a TIMESTAMP column of `{}`",
                        call.time_column, rel.name
                    ),
                    None,
                ));
            }
            let provider: Arc<dyn TableProvider> = match streaming {
                true => self.relation_provider(&rel, 0, Some(call))?,
                false => {
                    let scan =
                        LogicalPlanBuilder::scan(rel.name.as_str(), provider_as_source(base), None)
                            .map_err(from_datafusion)?;
                    Arc::new(ViewTable::new(crate::window::batch_plan(call, scan)?, None))
                }
            };
            self.ctx
                .deregister_table(call.name.as_str())
                .map_err(from_datafusion)?;
            self.ctx
                .register_table(call.name.as_str(), provider)
                .map_err(from_datafusion)?;
        }
        Ok(calls)
    }
}

/// Queries read; DataFusion's own DDL and DML would create in-memory tables or write
/// nowhere, so they are refused in favour of the dialect's statements.
/// No rows, of text columns with these names.
fn empty_rows(columns: Vec<String>) -> Outcome {
    let fields: Vec<datafusion::arrow::datatypes::Field> = columns
        .into_iter()
        .map(|c| {
            datafusion::arrow::datatypes::Field::new(
                c,
                datafusion::arrow::datatypes::DataType::Utf8,
                true,
            )
        })
        .collect();
    Outcome {
        output: Output::Rows {
            schema: Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            batches: Vec::new(),
        },
        notices: Vec::new(),
        elapsed: Duration::ZERO,
    }
}

fn refuse_side_effects(plan: &LogicalPlan) -> Result<()> {
    let what = match plan {
        LogicalPlan::Ddl(d) => Some(d.name().to_string()),
        LogicalPlan::Dml(_) => Some("this DML statement".to_string()),
        LogicalPlan::Copy(_) => Some("COPY".to_string()),
        LogicalPlan::Statement(_) => Some("this statement".to_string()),
        _ => None,
    };
    match what {
        Some(w) => Err(SqlError::unsupported(
            format!("{w} (use CREATE STREAM / CREATE TABLE … WITH (topic = …) and INSERT INTO … VALUES)"),
            None,
        )),
        None => Ok(()),
    }
}
