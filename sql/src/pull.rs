//! Pull queries on materialized views from RocksDB. A view's compacted topic (upserts by
//! group key, tombstones for deletes) is mirrored into a RocksDB index, one per view
//! ([`ViewIndex`]): record key → the record's value with its partition, offset and timestamp.
//! Before a query reads it, the index catches up with the topic's committed records, so a
//! pull query sees every row the view had committed when it started.
//!
//! [`ViewProvider`] answers DataFusion's scans: when the filters pin the view's key columns
//! with equalities, a point lookup; when they pin a leading part of them, a prefix scan (the
//! keys are JSON objects of the key columns in a fixed order, so `{"auction":42,` prefixes
//! every key with auction 42); otherwise a full scan. Filters stay in the plan (`Inexact`),
//! so a pushed-down filter can only narrow what is read, never change the answer.
//!
//! Invariants: rows and the positions they reach are written in one `WriteBatch`, so a crash
//! leaves the index at a consistent position (it is derived data: an index lost is rebuilt
//! from the topic); an index belongs to one incarnation of the view (its directory is named
//! after the topic's id), so a re-created view never reads its predecessor's rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use weir_log::{Isolation, Log, Offset, PartitionId};

use crate::catalog::Relation;
use crate::error::{Result, SqlError};
use crate::format::{encode_rows, Format, LogRecord, RowDecoder};

/// Bytes read from the view's topic per fetch while catching up.
const CATCH_UP_FETCH_BYTES: usize = 1 << 20;

/// Rows decoded per batch of a scan.
const PULL_BATCH_ROWS: usize = 8192;

/// Rows a pull query may read from an index (a full scan of a bigger view needs a
/// predicate on its key, or a batch query's LIMIT).
pub const PULL_SCAN_ROWS_MAX: usize = crate::session::RESULT_ROWS_MAX;

/// Index keys: a position record per partition, or a row by its record key.
const POSITION_PREFIX: u8 = 0;
const ROW_PREFIX: u8 = 1;

/// Where the view's key columns are, as the option the catalog keeps.
pub(crate) const KEY_COLUMNS_OPTION: &str = "key_columns";

fn rocks(e: rocksdb::Error) -> SqlError {
    SqlError::Execution(format!("view index: {e}"))
}

/// A view's RocksDB index.
#[derive(Debug)]
pub struct ViewIndex {
    db: DB,
    log: Log,
    topic: String,
    /// Serializes catching up (reads need no lock).
    catching_up: Mutex<()>,
}

impl ViewIndex {
    fn open(log: &Log, dir: &Path, topic: &str) -> Result<ViewIndex> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, dir).map_err(rocks)?;
        Ok(ViewIndex {
            db,
            log: log.clone(),
            topic: topic.to_string(),
            catching_up: Mutex::new(()),
        })
    }

    fn position(&self, p: u32) -> Result<Offset> {
        let key = [&[POSITION_PREFIX][..], &p.to_be_bytes()].concat();
        Ok(match self.db.get(key).map_err(rocks)? {
            Some(v) if v.len() == 8 => {
                Offset(i64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8])))
            }
            _ => Offset(0),
        })
    }

    /// Applies the topic's committed records past the index's positions.
    pub fn catch_up(&self) -> Result<()> {
        let _one = self.catching_up.lock().unwrap_or_else(|p| p.into_inner());
        for p in 0..self.log.partition_count(&self.topic)? {
            let partition = PartitionId(p);
            let end = self.log.last_stable_offset(&self.topic, partition)?;
            let mut at = self
                .position(p)?
                .max(self.log.earliest_offset(&self.topic, partition)?);
            while at < end {
                let fetch = self.log.read_isolated(
                    &self.topic,
                    partition,
                    at,
                    CATCH_UP_FETCH_BYTES,
                    Isolation::ReadCommitted,
                )?;
                let mut batch = WriteBatch::default();
                for r in fetch.records() {
                    let r = r.map_err(|e| SqlError::Log(e.into()))?;
                    if r.offset >= end {
                        break;
                    }
                    if let Some(k) = r.key {
                        let key = [&[ROW_PREFIX][..], k].concat();
                        match r.value {
                            Some(v) => batch.put(key, stored(p, r.offset.0, r.timestamp.0, v)),
                            None => batch.delete(key),
                        }
                    }
                }
                let next = fetch.next_offset().min(end);
                if fetch.is_empty() || next <= at {
                    break;
                }
                at = next;
                let pos = [&[POSITION_PREFIX][..], &p.to_be_bytes()].concat();
                batch.put(pos, at.0.to_be_bytes());
                self.db.write(batch).map_err(rocks)?;
            }
        }
        Ok(())
    }

    /// The rows whose record key starts with `prefix` (all rows for an empty one), at most
    /// `limit` of them.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<LogRecord>> {
        let from = [&[ROW_PREFIX][..], prefix].concat();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(rocks)?;
            if !k.starts_with(&from) {
                break;
            }
            if out.len() >= limit {
                return Err(SqlError::plan(
                    format!(
                        "the pull query reads more than {limit} rows; add a predicate on the \
                         view's key columns"
                    ),
                    None,
                ));
            }
            out.push(record(&k[1..], &v)?);
        }
        Ok(out)
    }

    fn get(&self, key: &[u8]) -> Result<Option<LogRecord>> {
        let k = [&[ROW_PREFIX][..], key].concat();
        match self.db.get_pinned(k).map_err(rocks)? {
            Some(v) => Ok(Some(record(key, &v)?)),
            None => Ok(None),
        }
    }
}

/// An index value: partition (4 bytes), offset and timestamp (8 each), then the record value.
fn stored(p: u32, offset: i64, timestamp: i64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + value.len());
    v.extend_from_slice(&p.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&timestamp.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn record(key: &[u8], v: &[u8]) -> Result<LogRecord> {
    if v.len() < 20 {
        return Err(SqlError::Execution("view index: a row is truncated".into()));
    }
    let int = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[r]);
        i64::from_be_bytes(b)
    };
    let mut p = [0u8; 4];
    p.copy_from_slice(&v[..4]);
    Ok(LogRecord {
        key: Some(Bytes::copy_from_slice(key)),
        value: Bytes::copy_from_slice(&v[20..]),
        timestamp: int(12..20),
        partition: u32::from_be_bytes(p) as i32,
        offset: int(4..12),
    })
}

/// The indexes of a database's views, opened on first use.
#[derive(Debug, Default)]
pub(crate) struct ViewIndexes {
    open: Mutex<HashMap<String, Arc<ViewIndex>>>,
}

impl ViewIndexes {
    /// The index of view `rel` under `state_dir`.
    pub(crate) fn get(
        &self,
        log: &Log,
        state_dir: &Path,
        rel: &Relation,
    ) -> Result<Arc<ViewIndex>> {
        let id = log.topic_id(&rel.topic)?;
        let dir = index_dir(state_dir, &rel.name, &id);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = open.get(&rel.name) {
            if i.db.path() == dir {
                return Ok(i.clone());
            }
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| SqlError::Execution(format!("cannot create {}: {e}", dir.display())))?;
        let index = Arc::new(ViewIndex::open(log, &dir, &rel.topic)?);
        open.insert(rel.name.clone(), index.clone());
        Ok(index)
    }

    /// Closes and deletes every index of view `name` (on DROP).
    pub(crate) fn remove(&self, state_dir: &Path, name: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let dir = views_dir(state_dir).join(crate::query_app(name));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a view index");
            }
        }
    }
}

fn views_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pull")
}

fn index_dir(state_dir: &Path, name: &str, topic_id: &[u8; 16]) -> PathBuf {
    let id: String = topic_id.iter().map(|b| format!("{b:02x}")).collect();
    views_dir(state_dir).join(crate::query_app(name)).join(id)
}

/// A view as DataFusion sees it in a pull query.
#[derive(Debug)]
pub(crate) struct ViewProvider {
    index: Arc<ViewIndex>,
    decoder: RowDecoder,
    /// The key's columns, in the key's order (empty: no lookups, full scans only).
    key: Vec<Field>,
    /// Where a scan that pins no key column goes: the view's topic, read in batches (an
    /// index scan would hold every row at once).
    fallback: Option<Arc<dyn TableProvider>>,
}

impl ViewProvider {
    pub(crate) fn new(index: Arc<ViewIndex>, rel: &Relation) -> Result<ViewProvider> {
        let decoder = RowDecoder::new(rel.format, rel.stored_schema()?);
        let key = match rel.options.get(KEY_COLUMNS_OPTION) {
            Some(names) => names
                .split(',')
                .map(|n| {
                    decoder
                        .schema()
                        .field_with_name(n)
                        .map(|f| f.clone().with_nullable(true))
                        .map_err(|_| SqlError::CorruptCatalog {
                            name: rel.name.clone(),
                            reason: format!("key column `{n}` is not a column"),
                        })
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        Ok(ViewProvider {
            index,
            decoder,
            key,
            fallback: None,
        })
    }

    /// Full scans (no key column pinned) read `provider` instead of the index.
    pub(crate) fn with_fallback(mut self, provider: Arc<dyn TableProvider>) -> ViewProvider {
        self.fallback = Some(provider);
        self
    }

    /// The literal each key column is pinned to by an equality among `filters`.
    fn pinned(&self, filters: &[Expr]) -> Vec<Option<ScalarValue>> {
        let mut out = vec![None; self.key.len()];
        for f in filters {
            let Expr::BinaryExpr(BinaryExpr { left, op, right }) = f else {
                continue;
            };
            if *op != Operator::Eq {
                continue;
            }
            let (c, v) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                    (c, v)
                }
                _ => continue,
            };
            if v.is_null() {
                continue;
            }
            if let Some(i) = self.key.iter().position(|k| k.name() == &c.name) {
                out[i] = Some(v.clone());
            }
        }
        out
    }

    /// The key (or key prefix) bytes of the leading pinned columns; `None` when none is.
    fn key_prefix(&self, pinned: &[Option<ScalarValue>]) -> Result<Option<(Vec<u8>, bool)>> {
        let n = pinned.iter().take_while(|p| p.is_some()).count();
        if n == 0 {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(n);
        for (field, value) in self.key.iter().zip(pinned).take(n) {
            let Some(v) = value else { break };
            let array = v.to_array().map_err(crate::error::from_datafusion)?;
            let array = match array.data_type() == field.data_type() {
                true => array,
                false => match cast(&array, field.data_type()) {
                    Ok(a) if a.null_count() == 0 => a,
                    // A literal the key's type cannot hold matches no row.
                    _ => new_null_array(field.data_type(), 1),
                },
            };
            if array.null_count() > 0 {
                return Ok(Some((b"\xff-no-row".to_vec(), true)));
            }
            columns.push(array);
        }
        let schema = Arc::new(Schema::new(self.key[..n].to_vec()));
        let batch = RecordBatch::try_new(schema, columns)
            .map_err(|e| SqlError::Execution(format!("key of a pull query: {e}")))?;
        let mut json = encode_rows(Format::Json, &batch)?
            .pop()
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let whole = n == self.key.len();
        if !whole && json.last() == Some(&b'}') {
            // `{"a":1}` → `{"a":1,`: the prefix of every key whose first columns are these.
            json.pop();
            json.push(b',');
        }
        Ok(Some((json, whole)))
    }

    fn rows(&self, filters: &[Expr]) -> Result<Vec<LogRecord>> {
        self.index.catch_up()?;
        match self.key_prefix(&self.pinned(filters))? {
            Some((key, true)) => Ok(self.index.get(&key)?.into_iter().collect()),
            Some((prefix, false)) => self.index.scan(&prefix, PULL_SCAN_ROWS_MAX),
            None => self.index.scan(&[], PULL_SCAN_ROWS_MAX),
        }
    }
}

#[async_trait]
impl TableProvider for ViewProvider {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let external = |e: SqlError| DataFusionError::External(Box::new(e));
        if let Some(fallback) = &self.fallback {
            if self.pinned(filters).first().is_none_or(Option::is_none) {
                return fallback.scan(state, projection, filters, limit).await;
            }
        }
        // Reads are blocking disk I/O: the runtime's blocking pool.
        let rows = tokio::task::block_in_place(|| self.rows(filters)).map_err(external)?;
        let mut batches = Vec::new();
        for chunk in rows.chunks(PULL_BATCH_ROWS) {
            let (batch, bad) = self.decoder.decode(chunk);
            if let Some(b) = bad.first() {
                return Err(external(SqlError::Execution(format!(
                    "view row at partition {} offset {} does not decode: {}",
                    b.partition, b.offset, b.reason
                ))));
            }
            batches.push(batch);
        }
        let schema = self.schema();
        let exec = MemorySourceConfig::try_new_exec(&[batches], schema, projection.cloned())?;
        Ok(exec)
    }
}

/// The view's key columns: the aggregate's group columns, when each reaches the output
/// unchanged (`at[i]` is group column `i`'s output column) under its own name and type (the
/// record key is a JSON object of the group's values by those names); else `None`, and pull
/// queries scan.
pub(crate) fn key_columns(group: &Schema, at: &[usize], output: &Schema) -> Option<String> {
    let mut names = Vec::with_capacity(group.fields().len());
    for (g, &o) in group.fields().iter().zip(at) {
        let o = output.fields().get(o)?;
        if o.name() != g.name() || o.data_type() != g.data_type() || o.data_type().is_null() {
            return None;
        }
        names.push(g.name().as_str());
    }
    (!names.is_empty() && names.len() == group.fields().len()).then(|| names.join(","))
}

/// The fast path of pull queries (as Materialize's "fast-path peeks"): `SELECT columns | *
/// FROM view WHERE k1 = literal AND …` pinning exactly the view's key columns is answered
/// by one RocksDB lookup, without DataFusion's planner. Anything else — another clause, an
/// expression, a literal whose coercion DataFusion would decide — takes the general path,
/// which gives the same answer: the statement is re-rendered from the parts read here and
/// must equal the original, so no clause can be overlooked.
pub(crate) mod fast {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, Expr, Ident, SelectItem, SetExpr, Statement, TableFactor, UnaryOperator,
        Value,
    };

    /// A pull query by key, as read from the statement.
    #[derive(Debug)]
    pub(crate) struct ByKey {
        pub(crate) view: String,
        /// Column names, or `None` for `*`.
        pub(crate) columns: Option<Vec<String>>,
        /// `column = literal` conditions.
        pub(crate) conditions: Vec<(String, Lit)>,
    }

    /// A literal of a condition.
    #[derive(Debug, Clone)]
    pub(crate) enum Lit {
        Integer(i64),
        Text(String),
    }

    impl Lit {
        /// The literal as a value of `t`, when DataFusion would compare it as one without
        /// doubt (an integer with an integer column, a string with a text column).
        pub(crate) fn for_type(&self, t: &DataType) -> Option<ScalarValue> {
            match (self, t) {
                (Lit::Integer(i), t) if t.is_integer() => Some(ScalarValue::Int64(Some(*i))),
                (Lit::Text(s), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                    Some(ScalarValue::Utf8(Some(s.clone())))
                }
                _ => None,
            }
        }
    }

    /// As DataFusion resolves names: unquoted ones in lower case.
    fn name(i: &Ident) -> String {
        match i.quote_style {
            Some(_) => i.value.clone(),
            None => i.value.to_ascii_lowercase(),
        }
    }

    fn literal(e: &Expr) -> Option<Lit> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, false) => n.parse().ok().map(Lit::Integer),
                Value::SingleQuotedString(s) => Some(Lit::Text(s.clone())),
                _ => None,
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match literal(expr)? {
                Lit::Integer(i) => i.checked_neg().map(Lit::Integer),
                Lit::Text(_) => None,
            },
            _ => None,
        }
    }

    fn conditions(e: &Expr, out: &mut Vec<(String, Lit)>) -> Option<()> {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conditions(left, out)?;
                conditions(right, out)
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let (c, l) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Identifier(c), l) | (l, Expr::Identifier(c)) => (c, literal(l)?),
                    _ => return None,
                };
                out.push((name(c), l));
                Some(())
            }
            _ => None,
        }
    }

    /// The statement as a pull query by key, if it is one.
    pub(crate) fn parse(statement: &Statement) -> Option<ByKey> {
        let Statement::Query(q) = statement else {
            return None;
        };
        let SetExpr::Select(s) = q.body.as_ref() else {
            return None;
        };
        let [from] = s.from.as_slice() else {
            return None;
        };
        let TableFactor::Table { name: table, .. } = &from.relation else {
            return None;
        };
        let [part] = table.0.as_slice() else {
            return None;
        };
        let view = name(part.as_ident()?);
        let mut columns = Vec::new();
        let mut star = false;
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(Expr::Identifier(c)) => columns.push(name(c)),
                SelectItem::Wildcard(_) if item.to_string() == "*" => star = true,
                _ => return None,
            }
        }
        // `*` with other items, or a column twice (DataFusion refuses duplicate names): the
        // general path decides.
        let distinct: std::collections::HashSet<&String> = columns.iter().collect();
        if (star && !columns.is_empty()) || distinct.len() != columns.len() {
            return None;
        }
        let selection = s.selection.as_ref()?;
        let mut conds = Vec::new();
        conditions(selection, &mut conds)?;
        // Nothing else in the statement: it renders as the parts read here.
        let items: Vec<String> = s.projection.iter().map(ToString::to_string).collect();
        let simple = format!("SELECT {} FROM {table} WHERE {selection}", items.join(", "));
        if simple != q.to_string() {
            return None;
        }
        Some(ByKey {
            view,
            columns: (!star).then_some(columns),
            conditions: conds,
        })
    }
}

impl ViewProvider {
    /// Answers a pull query by key with one lookup; `None` when the conditions are not
    /// exactly the view's key, or a column is not the view's (the general path decides).
    pub(crate) fn by_key(&self, q: &fast::ByKey) -> Result<Option<RecordBatch>> {
        if self.key.is_empty() || q.conditions.len() != self.key.len() {
            return Ok(None);
        }
        let mut pinned = vec![None; self.key.len()];
        for (column, lit) in &q.conditions {
            let Some(i) = self.key.iter().position(|k| k.name() == column) else {
                return Ok(None);
            };
            let Some(v) = lit.for_type(self.key[i].data_type()) else {
                return Ok(None);
            };
            if pinned[i].replace(v).is_some() {
                return Ok(None);
            }
        }
        let schema = self.decoder.schema().clone();
        let indices: Vec<usize> = match &q.columns {
            None => (0..schema.fields().len())
                .filter(|&i| {
                    !crate::format::META_COLUMNS.contains(&schema.field(i).name().as_str())
                })
                .collect(),
            Some(names) => {
                let mut v = Vec::with_capacity(names.len());
                for n in names {
                    match schema.index_of(n) {
                        Ok(i) => v.push(i),
                        Err(_) => return Ok(None),
                    }
                }
                v
            }
        };
        let Some((key, true)) = self.key_prefix(&pinned)? else {
            return Ok(None);
        };
        self.index.catch_up()?;
        let rows: Vec<LogRecord> = self.index.get(&key)?.into_iter().collect();
        let (batch, bad) = self.decoder.decode(&rows);
        if let Some(b) = bad.first() {
            return Err(SqlError::Execution(format!(
                "view row at partition {} offset {} does not decode: {}",
                b.partition, b.offset, b.reason
            )));
        }
        batch
            .project(&indices)
            .map(Some)
            .map_err(|e| SqlError::Execution(format!("pull query: {e}")))
    }
}
