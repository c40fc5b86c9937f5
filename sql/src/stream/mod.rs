//! Streaming queries on the engine: a query's DataFusion logical plan (analyzed, type-coerced
//! and optimized) is compiled into a [`Compiled`] query — its source, the vectorized steps
//! (filters and projections as DataFusion physical expressions over Arrow batches) and its
//! sink — which [`QueryPlan`] runs as an engine plan: one task per source partition,
//! committing its outputs with the source's positions exactly once.
//!
//! Invariant: a plan node the compiler does not know is refused with an error naming it; it is
//! never run with batch semantics by mistake (a streaming `ORDER BY` or `LIMIT` has no end).

mod processor;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use weir_engine::{
    EventTime, InputKind, InputSpec, Plan, PlanShape, Processor, SubPlan, TaskSetup,
};

use crate::catalog::Relation;
use crate::datagen::Datagen;
use crate::error::{from_datafusion, Result, SqlError};
use crate::format::{Format, RowDecoder};
use crate::parser::RelationKind;

pub(crate) use processor::QueryProcessor;

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
}

/// A compiled streaming query.
#[derive(Debug)]
pub struct Compiled {
    pub(crate) source: Source,
    pub(crate) steps: Vec<Step>,
    pub(crate) output: SchemaRef,
    pub(crate) sink: SinkTarget,
}

impl Compiled {
    /// The schema of the rows the query produces.
    pub fn output(&self) -> &SchemaRef {
        &self.output
    }
}

/// Compiles an optimized logical plan whose leaves are the catalog's relations.
pub(crate) fn compile(
    state: &SessionState,
    plan: &LogicalPlan,
    relation_of: &dyn Fn(&str) -> Option<Relation>,
    sink: SinkTarget,
) -> Result<Compiled> {
    let mut steps = Vec::new();
    let source = walk(state, plan, relation_of, &mut steps)?;
    let source = open_source(state, source)?;
    Ok(Compiled {
        source,
        steps,
        output: Arc::clone(plan.schema().inner()),
        sink,
    })
}

/// Appends the steps of `plan` after those of its input; returns the relation scanned.
fn walk(
    state: &SessionState,
    plan: &LogicalPlan,
    relation_of: &dyn Fn(&str) -> Option<Relation>,
    steps: &mut Vec<Step>,
) -> Result<Relation> {
    let physical = |e: &datafusion::logical_expr::Expr, schema: &DFSchema| {
        state
            .create_physical_expr(e.clone(), schema)
            .map_err(from_datafusion)
    };
    match plan {
        LogicalPlan::Projection(p) => {
            let rel = walk(state, &p.input, relation_of, steps)?;
            let exprs = p
                .expr
                .iter()
                .map(|e| physical(e, p.input.schema()))
                .collect::<Result<Vec<_>>>()?;
            steps.push(Step::Project(exprs, Arc::clone(p.schema.inner())));
            Ok(rel)
        }
        LogicalPlan::Filter(f) => {
            let rel = walk(state, &f.input, relation_of, steps)?;
            steps.push(Step::Filter(physical(&f.predicate, f.input.schema())?));
            Ok(rel)
        }
        LogicalPlan::SubqueryAlias(a) => walk(state, &a.input, relation_of, steps),
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            let rel = relation_of(name).ok_or_else(|| {
                SqlError::plan(format!("`{name}` is not a stream of the catalog"), None)
            })?;
            if rel.kind != RelationKind::Stream {
                return Err(SqlError::unsupported(
                    format!(
                        "a continuous query over {} `{name}` (its rows update; continuous queries \
                         over tables arrive with updating views); a batch SELECT reads it now",
                        rel.kind.name()
                    ),
                    None,
                ));
            }
            if let Some(indices) = &scan.projection {
                steps.push(Step::Columns(indices.clone()));
            }
            if let Some(filter) = scan.filters.iter().cloned().reduce(|a, b| a.and(b)) {
                steps.push(Step::Filter(physical(&filter, &scan.projected_schema)?));
            }
            if scan.fetch.is_some() {
                return Err(unsupported_node("LIMIT"));
            }
            Ok(rel)
        }
        other => Err(unsupported_node(node_name(other))),
    }
}

fn unsupported_node(what: &str) -> SqlError {
    SqlError::unsupported(
        format!(
            "{what} in a continuous query (streaming SQL runs filters and projections over \
             streams; windows, aggregates and joins arrive next); a batch SELECT runs it over \
             what the log holds now"
        ),
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
fn open_source(state: &SessionState, relation: Relation) -> Result<Source> {
    let stored = relation.stored_schema()?;
    let decoder = RowDecoder::new(relation.format, stored.clone());
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

/// A compiled query as the engine's plan: one task per partition of its source.
#[derive(Debug)]
pub struct QueryPlan {
    shape: PlanShape,
    compiled: Arc<Compiled>,
}

impl QueryPlan {
    /// The plan of `compiled` under application id `app`.
    pub fn new(app: &str, compiled: Compiled) -> QueryPlan {
        let source = &compiled.source;
        let rel = &source.relation;
        let event_time = match &source.event_time {
            Some((_, lag)) => EventTime {
                source: weir_engine::TimeSource::Extracted,
                out_of_orderness: *lag,
            },
            None => EventTime::default(),
        };
        let input = InputSpec {
            event_time,
            generated: source.datagen.as_ref().map(|g| g.input()),
            ..InputSpec::topic(&rel.topic, InputKind::Stream)
        };
        let sinks = match &compiled.sink {
            SinkTarget::Topic { topic, .. } => vec![topic.clone()],
            SinkTarget::Blackhole => Vec::new(),
        };
        QueryPlan {
            shape: PlanShape {
                app: app.to_string(),
                subplans: vec![SubPlan {
                    name: "query".into(),
                    inputs: vec![input],
                    stores: Vec::new(),
                }],
                sinks,
                internal_topics: Vec::new(),
                operators: vec![format!("select from {}", rel.name)],
            },
            compiled: Arc::new(compiled),
        }
    }
}

impl Plan for QueryPlan {
    fn shape(&self) -> &PlanShape {
        &self.shape
    }

    fn processor(&self, task: TaskSetup<'_>) -> weir_engine::Result<Box<dyn Processor>> {
        Ok(Box::new(QueryProcessor::new(
            self.compiled.clone(),
            task.partition,
        )))
    }
}
