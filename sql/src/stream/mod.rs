//! Streaming queries on the engine: a query's DataFusion logical plan (analyzed, type-coerced
//! and optimized) is compiled into a [`Compiled`] query — its source, the vectorized steps
//! (filters and projections as DataFusion physical expressions over Arrow batches) and its
//! sink — which [`QueryPlan`] runs as an engine plan: one task per source partition,
//! committing its outputs with the source's positions exactly once.
//!
//! Invariant: a plan node the compiler does not know is refused with an error naming it; it is
//! never run with batch semantics by mistake (a streaming `ORDER BY` or `LIMIT` has no end).

mod aggregate;
mod columns;
mod interval;
mod lookup;
mod plan;
mod processor;
mod table_join;
mod table_source;
mod table_state;
mod updating;
mod windowed;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

use crate::catalog::Relation;
use crate::datagen::Datagen;
use crate::error::{from_datafusion, Result, SqlError};
use crate::format::{Format, RowDecoder};
use crate::parser::EmitMode;
use crate::parser::RelationKind;
use crate::window::WindowCall;

pub use plan::QueryPlan;
pub(crate) use processor::QueryProcessor;
pub use updating::{OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};

/// Rows a streaming task processes per batch: the engine's batches are Arrow batches here, so
/// larger ones amortise the per-batch cost of every expression.
pub const STREAM_BATCH_ROWS: usize = 8192;

/// One vectorized step over a batch.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Keep the rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// New columns from expressions over the input's.
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
    /// Keep the columns at these indices (a scan's projection).
    Columns(Vec<usize>),
}

/// Where a query's rows go.
#[derive(Debug, Clone)]
pub enum SinkTarget {
    /// Records appended to a topic, in a format: values are the non-metadata columns; an output
    /// column `_key` is the record key, `_timestamp` its timestamp; `key` columns (a table's
    /// primary key), when given, key the record by a JSON object of them instead.
    Topic {
        /// The topic.
        topic: String,
        /// Value format.
        format: Format,
        /// Primary-key columns of the output, if it is keyed by them.
        key: Vec<String>,
        /// Change rows are applied as upserts by key (a table, a view): `delete` is a
        /// tombstone and `update_before` is dropped; otherwise they carry `op`.
        upsert: bool,
    },
    /// Rows are counted and dropped (benchmarks, trying a query).
    Blackhole,
}

/// The source of a query, as a processor reads it.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) relation: Relation,
    pub(crate) decoder: RowDecoder,
    pub(crate) datagen: Option<Arc<Datagen>>,
    /// The event-time column over decoded rows, and the watermark's lag behind it.
    pub(crate) event_time: Option<(Arc<dyn PhysicalExpr>, Duration)>,
    /// A window's scan: `window_start` and `window_end` follow the decoded columns (as
    /// placeholders; the window operator assigns windows).
    pub(crate) window_placeholders: bool,
    /// A table (or view) read as changes: its rows are added and retracted.
    pub(crate) table: Option<crate::changes::TableChanges>,
}

/// Which window column a placeholder column of the input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowColumn {
    /// `window_start`.
    Start,
    /// `window_end`.
    End,
}

/// Where a grouping column's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupSlot {
    /// The window's start.
    WindowStart,
    /// The window's end.
    WindowEnd,
    /// Key expression `i`.
    Key(usize),
}

/// A windowed `GROUP BY`: the windows, the grouping and the aggregates.
#[derive(Debug)]
pub(crate) struct Aggregate {
    /// The window (`None`: an updating aggregate).
    pub(crate) window: Option<WindowCall>,
    pub(crate) keys: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) slots: Vec<GroupSlot>,
    pub(crate) aggregates: Vec<aggregate::AggSpec>,
    /// The aggregate's output: grouping columns, then aggregates.
    pub(crate) schema: SchemaRef,
    pub(crate) emit: EmitMode,
    /// Rows are also retracted (the input is a table): groups count their rows, and one
    /// left with none is deleted.
    pub(crate) retracting: bool,
}

/// A compiled streaming query.
#[derive(Debug)]
pub struct Compiled {
    pub(crate) source: Source,
    /// Steps over the source's rows (before the aggregate, if any).
    pub(crate) steps: Vec<Step>,
    /// A windowed aggregate, and the steps over its results.
    pub(crate) aggregate: Option<(Aggregate, Vec<Step>)>,
    /// A stream–table join, and the steps over its rows.
    pub(crate) lookup: Option<(lookup::Lookup, Vec<Step>)>,
    /// An interval join of two streams, and the steps over its rows.
    pub(crate) join: Option<(interval::StreamJoin, Vec<Step>)>,
    pub(crate) output: SchemaRef,
    pub(crate) sink: SinkTarget,
}

impl Compiled {
    /// The schema of the rows the query produces.
    pub fn output(&self) -> &SchemaRef {
        &self.output
    }
}

/// What the compiler is given besides the plan.
pub(crate) struct Context<'a> {
    pub(crate) state: &'a SessionState,
    pub(crate) relation_of: &'a dyn Fn(&str) -> Option<Relation>,
    /// The statement's window table function calls.
    pub(crate) windows: &'a [WindowCall],
    pub(crate) emit: Option<EmitMode>,
}

/// Compiles an optimized logical plan whose leaves are the catalog's relations.
pub(crate) fn compile(cx: &Context<'_>, plan: &LogicalPlan, sink: SinkTarget) -> Result<Compiled> {
    let mut walked = Walked::default();
    walk(cx, plan, &mut walked)?;
    let relation = walked
        .relation
        .ok_or_else(|| unsupported_node("a query without a stream"))?;
    if walked.window.is_some() && walked.aggregate.is_none() && walked.join.is_none() {
        return Err(SqlError::unsupported(
            "a window table function without a GROUP BY over its window_start or window_end \
             in a continuous query",
            None,
        ));
    }
    if walked.aggregate.is_none() && cx.emit == Some(EmitMode::OnWindowClose) {
        return Err(SqlError::plan(
            "EMIT ON WINDOW CLOSE needs a windowed aggregate (GROUP BY window_start, …)",
            None,
        ));
    }
    let over_table = relation.kind != RelationKind::Stream;
    let table_join = walked.lookup.as_ref().is_some_and(|(l, _)| l.table_join);
    if over_table && walked.aggregate.is_none() && !table_join {
        return Err(SqlError::unsupported(
            format!(
                "a continuous query over {} `{}` without GROUP BY or a join with a table (an \
                 aggregate or a join over a table updates as its rows change); a batch SELECT \
                 reads it now",
                relation.kind.name(),
                relation.name
            ),
            None,
        ));
    }
    let source = open_source(cx.state, relation, walked.window.as_ref())?;
    let (steps, aggregate, lookup, join) = match (walked.aggregate, walked.lookup, walked.join) {
        (Some((agg, before)), None, None) => (before, Some((agg, walked.steps)), None, None),
        (None, Some((l, before)), None) => (before, None, Some((l, walked.steps)), None),
        (None, None, Some((j, before))) => (before, None, None, Some((j, walked.steps))),
        (None, None, None) => (walked.steps, None, None, None),
        _ => return Err(unsupported_node("an aggregate over a join")),
    };
    Ok(Compiled {
        source,
        steps,
        aggregate,
        lookup,
        join,
        output: Arc::clone(plan.schema().inner()),
        sink,
    })
}

/// What the walk found so far: the relation, its window, the steps of the current stage and
/// which of the current stage's columns are window placeholders.
#[derive(Default)]
struct Walked {
    relation: Option<Relation>,
    window: Option<WindowCall>,
    steps: Vec<Step>,
    marks: Vec<Option<WindowColumn>>,
    /// The aggregate and the steps before it, once one was met.
    aggregate: Option<(Aggregate, Vec<Step>)>,
    /// The stream–table join and the steps before it, once one was met.
    lookup: Option<(lookup::Lookup, Vec<Step>)>,
    /// The join of two streams and the (left side's) steps before it, once one was met.
    join: Option<(interval::StreamJoin, Vec<Step>)>,
}

fn physical(cx: &Context<'_>, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    cx.state
        .create_physical_expr(e.clone(), schema)
        .map_err(from_datafusion)
}

/// The placeholder column an expression is, if it is one.
fn mark_of(e: &Arc<dyn PhysicalExpr>, marks: &[Option<WindowColumn>]) -> Option<WindowColumn> {
    let any: &dyn std::any::Any = e.as_ref();
    any.downcast_ref::<datafusion::physical_expr::expressions::Column>()
        .and_then(|c| marks.get(c.index()).copied().flatten())
}

/// Refuses an expression that computes on a window placeholder: before the aggregate, the
/// window columns have no values yet.
fn check_unmarked(e: &Arc<dyn PhysicalExpr>, marks: &[Option<WindowColumn>]) -> Result<()> {
    let uses = datafusion::physical_expr::utils::collect_columns(e)
        .iter()
        .any(|c| marks.get(c.index()).copied().flatten().is_some());
    if uses {
        return Err(SqlError::unsupported(
            "an expression over window_start or window_end before the GROUP BY in a continuous \
             query (group by them, then compute on the result)",
            None,
        ));
    }
    Ok(())
}

/// Appends the steps of `plan` after those of its input.
fn walk(cx: &Context<'_>, plan: &LogicalPlan, w: &mut Walked) -> Result<()> {
    match plan {
        LogicalPlan::Projection(p) => {
            walk(cx, &p.input, w)?;
            let mut exprs = Vec::with_capacity(p.expr.len());
            let mut marks = Vec::with_capacity(p.expr.len());
            for e in &p.expr {
                let x = physical(cx, e, p.input.schema())?;
                let mark = mark_of(&x, &w.marks);
                if mark.is_none() {
                    check_unmarked(&x, &w.marks)?;
                }
                marks.push(mark);
                exprs.push(x);
            }
            w.marks = marks;
            w.steps
                .push(Step::Project(exprs, Arc::clone(p.schema.inner())));
        }
        LogicalPlan::Filter(f) => {
            walk(cx, &f.input, w)?;
            let x = physical(cx, &f.predicate, f.input.schema())?;
            check_unmarked(&x, &w.marks)?;
            w.steps.push(Step::Filter(x));
        }
        LogicalPlan::SubqueryAlias(a) => walk(cx, &a.input, w)?,
        LogicalPlan::TableScan(scan) => scan_step(cx, scan, w)?,
        LogicalPlan::Aggregate(a) => aggregate_step(cx, a, w)?,
        LogicalPlan::Join(j) => join_step(cx, j, w)?,
        other => return Err(unsupported_node(node_name(other))),
    }
    Ok(())
}

fn scan_step(
    cx: &Context<'_>,
    scan: &datafusion::logical_expr::TableScan,
    w: &mut Walked,
) -> Result<()> {
    let name = scan.table_name.table();
    let window = cx.windows.iter().find(|c| c.name == name).cloned();
    let relation_name = window.as_ref().map_or(name, |c| c.relation.as_str());
    let rel = (cx.relation_of)(relation_name).ok_or_else(|| {
        SqlError::plan(
            format!("`{relation_name}` is not a stream of the catalog"),
            None,
        )
    })?;
    match rel.kind {
        RelationKind::Stream => {}
        RelationKind::Table | RelationKind::View if window.is_none() => {}
        RelationKind::Table | RelationKind::View => {
            return Err(SqlError::unsupported(
                format!(
                    "a window over {} `{relation_name}`: its rows update, they do not arrive \
                     in event time (GROUP BY without a window aggregates a table)",
                    rel.kind.name()
                ),
                None,
            ))
        }
        RelationKind::Sink => {
            return Err(SqlError::plan(
                format!("`{relation_name}` is a sink: it writes elsewhere and has no rows here"),
                None,
            ))
        }
    }
    if w.relation.is_some() {
        return Err(unsupported_node("a query over two relations"));
    }
    // The scan's columns: the decoded ones, then (for a window) the two placeholders.
    let decoded = RowDecoder::new(rel.format, rel.stored_schema()?)
        .schema()
        .fields()
        .len();
    let mut marks: Vec<Option<WindowColumn>> = vec![None; decoded];
    if window.is_some() {
        marks.push(Some(WindowColumn::Start));
        marks.push(Some(WindowColumn::End));
    }
    if rel.kind != RelationKind::Stream {
        // A table's retracted rows are its stored rows, not their records: `_key` is the
        // same, the record's time, partition and offset are not.
        let stored = rel.stored_schema()?.fields().len();
        let all: Vec<usize> = (0..decoded).collect();
        let meta = scan
            .projection
            .as_ref()
            .unwrap_or(&all)
            .iter()
            .find(|&&i| i > stored && i < decoded);
        if let Some(&i) = meta {
            return Err(SqlError::unsupported(
                format!(
                    "`{}` of {} `{relation_name}` in a continuous query (its rows update; only \
                     `_key` stays with a row)",
                    crate::format::META_COLUMNS[i - stored],
                    rel.kind.name()
                ),
                None,
            ));
        }
    }
    if let Some(indices) = &scan.projection {
        marks = indices
            .iter()
            .map(|&i| marks.get(i).copied().flatten())
            .collect();
        w.steps.push(Step::Columns(indices.clone()));
    }
    w.marks = marks;
    if let Some(filter) = scan.filters.iter().cloned().reduce(|a, b| a.and(b)) {
        let x = physical(cx, &filter, &scan.projected_schema)?;
        check_unmarked(&x, &w.marks)?;
        w.steps.push(Step::Filter(x));
    }
    if scan.fetch.is_some() {
        return Err(unsupported_node("LIMIT"));
    }
    w.relation = Some(rel);
    w.window = window;
    Ok(())
}

/// `stream JOIN table ON stream.x = table.key`: the table side must be a table's scan and the
/// condition the equality of its whole primary key.
fn join_step(cx: &Context<'_>, j: &datafusion::logical_expr::Join, w: &mut Walked) -> Result<()> {
    use datafusion::logical_expr::JoinType;
    if scans_a_stream(cx, &j.right) {
        return interval::compile(cx, j, w);
    }
    let left_join = match j.join_type {
        JoinType::Inner => false,
        JoinType::Left => true,
        other => {
            return Err(SqlError::unsupported(
                format!(
                    "a {} join of a stream and a table (INNER and LEFT run)",
                    other.to_string().to_uppercase()
                ),
                None,
            ))
        }
    };
    if j.filter.is_some() {
        return Err(SqlError::unsupported(
            "a join condition beyond the equality of the table's primary key",
            None,
        ));
    }
    let mut right = j.right.as_ref();
    while let LogicalPlan::SubqueryAlias(a) = right {
        right = a.input.as_ref();
    }
    let LogicalPlan::TableScan(scan) = right else {
        return Err(SqlError::unsupported(
            "a join whose right side is not a table (write FROM stream JOIN table ON …, or \
             FROM table JOIN table ON … the right table's primary key)",
            None,
        ));
    };
    let name = scan.table_name.table();
    let table = (cx.relation_of)(name)
        .filter(|r| matches!(r.kind, RelationKind::Table | RelationKind::View))
        .ok_or_else(|| {
            SqlError::unsupported(
                format!("a join with `{name}`, which is not a table (FROM stream JOIN table ON …)"),
                None,
            )
        })?;
    let table_key = table.key_names();
    if table_key.is_empty() {
        return Err(SqlError::unsupported(
            format!(
                "a join with view `{name}`, whose rows have no key columns in its output (a \
                 view keyed by its GROUP BY columns, output as themselves, joins)"
            ),
            None,
        ));
    }
    walk(cx, &j.left, w)?;
    let table_join = w
        .relation
        .as_ref()
        .is_some_and(|r| r.kind != RelationKind::Stream);
    if w.aggregate.is_some() || w.lookup.is_some() || w.window.is_some() || w.join.is_some() {
        return Err(unsupported_node(
            "a join over an aggregate, a window or another join",
        ));
    }
    let stored = table.stored_schema()?;
    let n_stored = stored.fields().len();
    let right_columns: Vec<usize> = match &scan.projection {
        Some(p) => p.clone(),
        None => (0..n_stored + crate::format::META_COLUMNS.len()).collect(),
    };
    if right_columns.iter().any(|&c| c >= n_stored) {
        return Err(SqlError::unsupported(
            format!("the metadata columns of table `{name}` in a join"),
            None,
        ));
    }
    let mut keys = Vec::new();
    for pk in &table_key {
        let (l, _) =
            j.on.iter()
                .find(|(_, r)| matches!(r, Expr::Column(c) if &c.name == pk))
                .ok_or_else(|| {
                    SqlError::plan(
                        format!(
                            "a join with a table looks its rows up by the table's primary key: \
                             add `= {name}.{pk}` to the ON condition"
                        ),
                        None,
                    )
                })?;
        let field = stored
            .field_with_name(pk)
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        keys.push((field.clone(), physical(cx, l, j.left.schema())?));
    }
    if j.on.len() != keys.len() {
        return Err(SqlError::unsupported(
            "a join condition beyond the equality of the table's primary key",
            None,
        ));
    }
    let changes = crate::changes::TableChanges::new(&table)?;
    let decoder = changes.row_decoder().clone();
    drop(stored);
    let before = std::mem::take(&mut w.steps);
    let schema = Arc::clone(j.schema.inner());
    w.marks = vec![None; schema.fields().len()];
    w.lookup = Some((
        lookup::Lookup {
            table,
            changes,
            decoder,
            right_columns,
            keys,
            left_join,
            table_join,
            schema,
        },
        before,
    ));
    Ok(())
}

/// Whether a join input reads a stream (not a table).
fn scans_a_stream(cx: &Context<'_>, plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            let window = cx.windows.iter().find(|c| c.name == name);
            let name = window.map_or(name, |c| c.relation.as_str());
            (cx.relation_of)(name).is_some_and(|r| r.kind == RelationKind::Stream)
        }
        other => other.inputs().iter().any(|i| scans_a_stream(cx, i)),
    }
}

fn aggregate_step(
    cx: &Context<'_>,
    a: &datafusion::logical_expr::Aggregate,
    w: &mut Walked,
) -> Result<()> {
    walk(cx, &a.input, w)?;
    if w.aggregate.is_some() {
        return Err(unsupported_node("an aggregate over an aggregate"));
    }
    if w.join.is_some() || w.lookup.is_some() {
        return Err(unsupported_node(
            "an aggregate over a join (write the join into a stream with INSERT INTO, and \
             aggregate that)",
        ));
    }
    let window = w.window.clone();
    let retracting = w
        .relation
        .as_ref()
        .is_some_and(|r| r.kind != RelationKind::Stream);
    let input = a.input.schema();
    let mut keys = Vec::new();
    let mut slots = Vec::new();
    for e in &a.group_expr {
        if matches!(e, Expr::GroupingSet(_)) {
            return Err(unsupported_node("GROUPING SETS / ROLLUP / CUBE"));
        }
        let x = physical(cx, e, input)?;
        match mark_of(&x, &w.marks) {
            Some(WindowColumn::Start) => slots.push(GroupSlot::WindowStart),
            Some(WindowColumn::End) => slots.push(GroupSlot::WindowEnd),
            None => {
                check_unmarked(&x, &w.marks)?;
                slots.push(GroupSlot::Key(keys.len()));
                keys.push(x);
            }
        }
    }
    if window.is_some() && !slots.iter().any(|s| !matches!(s, GroupSlot::Key(_))) {
        return Err(SqlError::plan(
            "a GROUP BY over a window table function must include window_start or window_end",
            None,
        ));
    }
    let schema = Arc::clone(a.schema.inner());
    let mut aggregates = Vec::new();
    for (i, e) in a.aggr_expr.iter().enumerate() {
        let e = match e {
            Expr::Alias(al) => al.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(call) = e else {
            return Err(unsupported_node("this aggregate expression"));
        };
        let (arg, arg_type) = match call.params.args.as_slice() {
            [] => (None, None),
            [x] => {
                let t = x.get_type(input).map_err(from_datafusion)?;
                let p = physical(cx, x, input)?;
                check_unmarked(&p, &w.marks)?;
                (Some(p), Some(t))
            }
            _ => return Err(unsupported_node("an aggregate of several arguments")),
        };
        let output = schema.field(a.group_expr.len() + i).data_type().clone();
        let mut spec = aggregate::AggSpec::new(call, arg, arg_type, output)?;
        spec.retracting = retracting;
        aggregates.push(spec);
    }
    let emit = cx.emit.unwrap_or(EmitMode::Changes);
    if window.is_none() && emit == EmitMode::OnWindowClose {
        return Err(SqlError::plan(
            "EMIT ON WINDOW CLOSE needs a window: FROM TUMBLE(stream, time_column, INTERVAL …)",
            None,
        ));
    }
    let session = window
        .as_ref()
        .is_some_and(|w| matches!(w.kind, weir_engine::WindowKind::Session { .. }));
    if session && emit == EmitMode::Changes {
        return Err(SqlError::unsupported(
            "SESSION windows that emit changes (the default); add EMIT ON WINDOW CLOSE for one \
             final row per session",
            None,
        ));
    }
    let before = std::mem::take(&mut w.steps);
    w.marks = vec![None; schema.fields().len()];
    w.aggregate = Some((
        Aggregate {
            window,
            keys,
            slots,
            aggregates,
            schema,
            emit,
            retracting,
        },
        before,
    ));
    Ok(())
}

fn unsupported_node(what: &str) -> SqlError {
    SqlError::unsupported(
        format!("{what} in a continuous query; a batch SELECT runs it over what the log holds now"),
        None,
    )
}

fn node_name(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Aggregate(_) => "GROUP BY / an aggregate",
        LogicalPlan::Join(_) => "a JOIN",
        LogicalPlan::Sort(_) => "ORDER BY",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Window(_) => "a window function (OVER)",
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => "a query without a stream",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "WITH RECURSIVE",
        LogicalPlan::Subquery(_) => "a subquery",
        _ => "this plan node",
    }
}

/// The source's decoder, generator and event time.
fn open_source(
    state: &SessionState,
    relation: Relation,
    window: Option<&WindowCall>,
) -> Result<Source> {
    if let Some(call) = window {
        let time = relation
            .watermark
            .as_ref()
            .map_or("_timestamp", |w| w.column.as_str());
        if call.time_column != time {
            return Err(SqlError::plan(
                format!(
                    "windows over `{}` must be on its event time `{time}` (WATERMARK FOR …), not `{}`",
                    relation.name, call.time_column
                ),
                None,
            ));
        }
    }
    let stored = relation.stored_schema()?;
    let table = match relation.kind {
        RelationKind::Stream => None,
        _ => Some(crate::changes::TableChanges::new(&relation)?),
    };
    let decoder = match &table {
        Some(t) => t.row_decoder().clone(),
        None => RowDecoder::new(relation.format, stored.clone()),
    };
    let datagen = relation.datagen()?.map(Arc::new);
    let event_time = match &relation.watermark {
        None => None,
        Some(w) => {
            let full =
                DFSchema::try_from(decoder.schema().as_ref().clone()).map_err(from_datafusion)?;
            let column_expr = match relation.columns.iter().find(|c| c.name == w.column) {
                Some(c) if c.computed.is_some() => c.computed.clone().unwrap_or_default(),
                _ => format!("\"{}\"", w.column),
            };
            let expr = state
                .create_logical_expr(&column_expr, &full)
                .map_err(from_datafusion)?;
            let expr = state
                .create_physical_expr(expr, &full)
                .map_err(from_datafusion)?;
            Some((expr, watermark_lag(state, &w.column, &w.expr)?))
        }
    };
    Ok(Source {
        relation,
        decoder,
        datagen,
        event_time,
        window_placeholders: window.is_some(),
        table,
    })
}

/// How far `WATERMARK FOR column AS expr` stays behind the column: the expression evaluated
/// at a sample time (it must be the column minus a constant, as every watermark is).
fn watermark_lag(state: &SessionState, column: &str, expr: &str) -> Result<Duration> {
    let field = Field::new(
        column,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    );
    let schema = Arc::new(Schema::new(vec![field]));
    let df = DFSchema::try_from(schema.as_ref().clone()).map_err(from_datafusion)?;
    let bad = |why: String| {
        SqlError::plan(
            format!("WATERMARK FOR `{column}` AS {expr}: {why} (write `{column} - INTERVAL '5' SECOND`)"),
            None,
        )
    };
    let logical = state
        .create_logical_expr(expr, &df)
        .map_err(|e| bad(from_datafusion(e).to_string()))?;
    let physical = state
        .create_physical_expr(logical, &df)
        .map_err(from_datafusion)?;
    let mut lag = None;
    for sample in [1_700_000_000_000i64, 1_800_000_000_000] {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampMillisecondArray::from(vec![sample]))],
        )
        .map_err(|e| SqlError::Execution(e.to_string()))?;
        let value = physical
            .evaluate(&batch)
            .and_then(|v| v.into_array(1))
            .map_err(from_datafusion)?;
        let ms = cast(&value, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .map_err(|e| bad(e.to_string()))?;
        let ms = ms
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .filter(|a| !a.is_null(0))
            .map(|a| a.value(0))
            .ok_or_else(|| bad("it is not a timestamp".into()))?;
        let this = sample - ms;
        if this < 0 {
            return Err(bad(
                "the watermark may not be ahead of the event time".into()
            ));
        }
        if lag.is_some_and(|l| l != this) {
            return Err(bad("the lag must be a constant".into()));
        }
        lag = Some(this);
    }
    Ok(Duration::from_millis(lag.unwrap_or(0) as u64))
}
