//! Window table functions: `TUMBLE(rel, col, size)`, `HOP(rel, col, slide, size)` and
//! `SESSION(rel, col, gap)` in a `FROM` clause (Flink's `TABLE(TUMBLE(TABLE rel,
//! DESCRIPTOR(col), size))` is read as the same by the parser). Each call becomes a relation of
//! its own, named `__weir_window_N` for the statement, whose rows are the relation's plus
//! `window_start` and `window_end`:
//! - in a batch query, a view computing them (a tumbling window per row, `size / slide`
//!   hopping windows per row through `unnest`);
//! - in a continuous query, a scan the streaming compiler recognises by name and turns into
//!   the engine's window operator over the relation, so windows are assigned (and closed) by
//!   the engine, not per row.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{col, lit, Expr, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    FunctionArg, FunctionArgExpr, Ident, ObjectName, Query, Select, SetExpr, TableAlias,
    TableFactor,
};
use weir_engine::WindowKind;

use crate::error::{from_datafusion, Result, SqlError};

/// Most hopping windows one row belongs to (`size / slide`): a batch query makes that many
/// rows of each.
pub const HOP_WINDOWS_PER_ROW_MAX: i64 = 1000;

/// Prefix of the relations window calls become.
pub const WINDOW_RELATION_PREFIX: &str = "__weir_window_";

/// One window table function call of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCall {
    /// The relation it becomes (`__weir_window_N`).
    pub name: String,
    /// The relation it windows.
    pub relation: String,
    /// Its time column.
    pub time_column: String,
    /// The windows.
    pub kind: WindowKind,
}

/// Replaces every window call in `query` (its CTEs, set operations and derived tables too)
/// with a relation of its own; returns the calls.
pub(crate) fn rewrite_window_calls(
    ctx: &SessionContext,
    query: &mut Query,
) -> Result<Vec<WindowCall>> {
    let mut calls = Vec::new();
    walk_query(ctx, query, &mut calls)?;
    Ok(calls)
}

fn walk_query(ctx: &SessionContext, q: &mut Query, calls: &mut Vec<WindowCall>) -> Result<()> {
    if let Some(with) = &mut q.with {
        for cte in &mut with.cte_tables {
            walk_query(ctx, &mut cte.query, calls)?;
        }
    }
    walk_set(ctx, &mut q.body, calls)
}

fn walk_set(ctx: &SessionContext, s: &mut SetExpr, calls: &mut Vec<WindowCall>) -> Result<()> {
    match s {
        SetExpr::Select(s) => walk_select(ctx, s, calls),
        SetExpr::Query(q) => walk_query(ctx, q, calls),
        SetExpr::SetOperation { left, right, .. } => {
            walk_set(ctx, left, calls)?;
            walk_set(ctx, right, calls)
        }
        _ => Ok(()),
    }
}

fn walk_select(ctx: &SessionContext, s: &mut Select, calls: &mut Vec<WindowCall>) -> Result<()> {
    for t in &mut s.from {
        let factors =
            std::iter::once(&mut t.relation).chain(t.joins.iter_mut().map(|j| &mut j.relation));
        for factor in factors {
            match factor {
                TableFactor::Derived { subquery, .. } => walk_query(ctx, subquery, calls)?,
                TableFactor::Table {
                    name,
                    args: Some(args),
                    alias,
                    ..
                } => {
                    let function = crate::parser::object_name(name).to_uppercase();
                    if !crate::parser::WINDOW_FUNCTIONS.contains(&function.as_str()) {
                        continue;
                    }
                    let call = window_call(ctx, &function, &args.args, calls.len())?;
                    let renamed = alias.clone().unwrap_or(TableAlias {
                        explicit: true,
                        name: Ident::new(call.relation.clone()),
                        columns: Vec::new(),
                        at: None,
                    });
                    *factor = TableFactor::Table {
                        name: ObjectName::from(vec![Ident::new(call.name.clone())]),
                        alias: Some(renamed),
                        args: None,
                        with_hints: Vec::new(),
                        version: None,
                        with_ordinality: false,
                        partitions: Vec::new(),
                        json_path: None,
                        sample: None,
                        index_hints: Vec::new(),
                    };
                    calls.push(call);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Reads `FUNCTION(relation, column, interval…)`.
fn window_call(
    ctx: &SessionContext,
    function: &str,
    args: &[FunctionArg],
    n: usize,
) -> Result<WindowCall> {
    let usage = || match function {
        "TUMBLE" => "TUMBLE(relation, time_column, INTERVAL 'size')",
        "HOP" => "HOP(relation, time_column, INTERVAL 'slide', INTERVAL 'size')",
        _ => "SESSION(relation, time_column, INTERVAL 'gap')",
    };
    let exprs: Vec<&datafusion::sql::sqlparser::ast::Expr> = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(SqlError::plan(format!("write {}", usage()), None)),
        })
        .collect::<Result<_>>()?;
    let intervals = if function == "HOP" { 2 } else { 1 };
    if exprs.len() != 2 + intervals {
        return Err(SqlError::plan(
            format!("{function} takes {} arguments: {}", 2 + intervals, usage()),
            None,
        ));
    }
    let name_of = |e: &datafusion::sql::sqlparser::ast::Expr| match e {
        datafusion::sql::sqlparser::ast::Expr::Identifier(i) => Ok(crate::parser::ident(i)),
        datafusion::sql::sqlparser::ast::Expr::CompoundIdentifier(parts) => Ok(parts
            .iter()
            .map(crate::parser::ident)
            .collect::<Vec<_>>()
            .join(".")),
        other => Err(SqlError::plan(
            format!("{function}: `{other}` is not a name; write {}", usage()),
            None,
        )),
    };
    let relation = name_of(exprs[0])?;
    let time_column = name_of(exprs[1])?;
    let mut durations = Vec::new();
    for e in &exprs[2..] {
        durations.push(interval(ctx, function, e)?);
    }
    let kind = match function {
        "TUMBLE" => WindowKind::Tumbling { size: durations[0] },
        "HOP" => WindowKind::Hopping {
            advance: durations[0],
            size: durations[1],
        },
        _ => WindowKind::Session { gap: durations[0] },
    };
    weir_engine::WindowSpec::new(kind)
        .validate()
        .map_err(|e| SqlError::plan(format!("{function}: {e}"), None))?;
    if let WindowKind::Hopping { size, advance } = kind {
        let per_row = size.as_millis() / advance.as_millis().max(1);
        if per_row > HOP_WINDOWS_PER_ROW_MAX as u128 {
            return Err(SqlError::plan(
                format!("HOP: {per_row} windows per row is over the {HOP_WINDOWS_PER_ROW_MAX} allowed; use a larger slide"),
                None,
            ));
        }
    }
    Ok(WindowCall {
        name: format!("{WINDOW_RELATION_PREFIX}{n}"),
        relation,
        time_column,
        kind,
    })
}

/// A constant interval expression as a duration (positive, whole milliseconds, no months).
fn interval(
    ctx: &SessionContext,
    function: &str,
    e: &datafusion::sql::sqlparser::ast::Expr,
) -> Result<Duration> {
    let bad = |why: &str| SqlError::plan(format!("{function}: `{e}` {why}"), None);
    let empty = DFSchema::empty();
    let logical = ctx
        .parse_sql_expr(&e.to_string(), &empty)
        .map_err(|_| bad("is not an interval"))?;
    let physical = ctx
        .create_physical_expr(logical, &empty)
        .map_err(from_datafusion)?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| SqlError::Execution(e.to_string()))?;
    let value = physical.evaluate(&one_row).map_err(from_datafusion)?;
    let scalar = match value {
        datafusion::logical_expr::ColumnarValue::Scalar(s) => s,
        datafusion::logical_expr::ColumnarValue::Array(a) => {
            ScalarValue::try_from_array(&a, 0).map_err(from_datafusion)?
        }
    };
    let nanos: i128 = match scalar {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            i128::from(v.days) * 86_400_000_000_000 + i128::from(v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            (i128::from(v.days) * 86_400_000 + i128::from(v.milliseconds)) * 1_000_000
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(_) => {
            return Err(bad(
                "has months; a window's length must be fixed (days or less)",
            ))
        }
        ScalarValue::DurationMillisecond(Some(ms)) => i128::from(ms) * 1_000_000,
        _ => return Err(bad("is not an interval")),
    };
    if nanos <= 0 || nanos % 1_000_000 != 0 {
        return Err(bad("must be positive whole milliseconds"));
    }
    Ok(Duration::from_millis((nanos / 1_000_000) as u64))
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// `window_start` and `window_end`.
pub fn window_fields() -> [Field; 2] {
    let t = DataType::Timestamp(TimeUnit::Millisecond, None);
    [
        Field::new("window_start", t.clone(), false),
        Field::new("window_end", t, false),
    ]
}

/// The relation's schema with the window columns after its own.
pub fn windowed_schema(relation: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = relation.fields().iter().map(|f| (**f).clone()).collect();
    fields.extend(window_fields());
    Arc::new(Schema::new(fields))
}

/// The batch view of a window call over the relation's plan: every row with its window(s).
pub(crate) fn batch_plan(
    call: &WindowCall,
    relation: LogicalPlanBuilder,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::functions::datetime::expr_fn::date_bin;
    let plan = relation.build().map_err(from_datafusion)?;
    let columns: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let time = col(format!("\"{}\"", call.time_column));
    let every = |d: Duration| lit(ScalarValue::new_interval_mdn(0, 0, ms(d) * 1_000_000));
    let epoch = lit(ScalarValue::TimestampMillisecond(Some(0), None));
    let timestamp = DataType::Timestamp(TimeUnit::Millisecond, None);
    let builder = LogicalPlanBuilder::from(plan);
    let built = match call.kind {
        WindowKind::Tumbling { size } => {
            let start = datafusion::logical_expr::cast(
                date_bin(every(size), time, epoch),
                timestamp.clone(),
            );
            let mut exprs = columns;
            exprs.push(start.clone().alias("window_start"));
            exprs.push((start + every(size)).alias("window_end"));
            builder.project(exprs)
        }
        WindowKind::Hopping { size, advance } => {
            use datafusion::functions_nested::expr_fn::make_array;
            let last = datafusion::logical_expr::cast(
                date_bin(every(advance), time, epoch),
                timestamp.clone(),
            );
            let n = ms(size) / ms(advance);
            let starts: Vec<Expr> = (0..n)
                .map(|k| last.clone() - every(advance * k as u32))
                .collect();
            let mut exprs = columns.clone();
            exprs.push(make_array(starts).alias("__weir_starts"));
            let mut out = columns;
            out.push(col("__weir_starts").alias("window_start"));
            out.push((col("__weir_starts") + every(size)).alias("window_end"));
            builder
                .project(exprs)
                .and_then(|b| b.unnest_column("__weir_starts"))
                .and_then(|b| b.project(out))
        }
        WindowKind::Session { .. } => {
            return Err(SqlError::unsupported(
                "SESSION windows in a batch query (they run in persistent queries)",
                None,
            ))
        }
    };
    built.and_then(|b| b.build()).map_err(from_datafusion)
}
