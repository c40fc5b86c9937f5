//! `INSERT INTO relation [(columns)] VALUES …`: the rows are planned by DataFusion, cast to
//! the relation's column types (a value that does not fit is an error naming the column, and
//! nothing is written), encoded in the relation's format and appended to its topic. A table's
//! records are keyed by a JSON object of its primary-key columns (as Kafka Connect and
//! Debezium key them), so they land on the key's partition; a stream's rows go round-robin.
//! Every append is acknowledged (durable) before the statement returns.

use std::collections::BTreeMap;

use bytes::Bytes;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement};
use weir_log::{PartitionId, Record};

use crate::catalog::Relation;
use crate::error::{from_datafusion, Position, Result, SqlError};
use crate::format::{encode_rows, Format};
use crate::session::{Outcome, Session};

impl Session {
    pub(crate) fn insert(
        &mut self,
        name: &str,
        at: Option<Position>,
        columns: &[String],
        source: Query,
        emit: Option<crate::parser::EmitMode>,
    ) -> Result<Outcome> {
        let rel = self.relation(name, at)?.clone();
        if !matches!(*source.body, SetExpr::Values(_)) {
            return self.insert_select(name, at, columns, source, emit);
        }
        if matches!(
            rel.kind,
            crate::parser::RelationKind::Sink | crate::parser::RelationKind::View
        ) || rel.datagen()?.is_some()
        {
            return Err(SqlError::plan(
                format!("`{name}` is not a stream or table written through a topic"),
                at,
            ));
        }
        let targets = target_columns(&rel, columns, at)?;
        let state = self.ctx.state();
        let ctx = self.ctx.clone();
        let batches = self.runtime.block_on(async move {
            let plan = state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    Statement::Query(Box::new(source)),
                )))
                .await
                .map_err(from_datafusion)?;
            ctx.execute_logical_plan(plan)
                .await
                .map_err(from_datafusion)?
                .collect()
                .await
                .map_err(from_datafusion)
        })?;
        let mut records = Vec::new();
        for batch in &batches {
            if batch.num_columns() != targets.len() {
                return Err(SqlError::plan(
                    format!(
                        "INSERT has {} value(s) per row for {} column(s) of `{}`",
                        batch.num_columns(),
                        targets.len(),
                        rel.name
                    ),
                    at,
                ));
            }
            let stored = stored_rows(&rel, &targets, batch)?;
            records.extend(to_records(&rel, &stored)?);
        }
        let n = records.len();
        self.append(&rel, records)?;
        Ok(Outcome::status(format!("INSERT 0 {n}")))
    }

    /// Appends keyed records to their key's partition and keyless ones round-robin; waits for
    /// every acknowledgement.
    fn append(&self, rel: &Relation, records: Vec<Record>) -> Result<()> {
        let partitions = self.log.partition_count(&rel.topic)?;
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for (i, r) in records.into_iter().enumerate() {
            let p = match &r.key {
                Some(k) => weir_log::partitioner::partition_for_key(k, partitions).0,
                None => (i as u32) % partitions,
            };
            by_partition.entry(p).or_default().push(r);
        }
        let tickets = by_partition
            .into_iter()
            .map(|(p, rs)| self.log.submit(&rel.topic, PartitionId(p), &rs))
            .collect::<Result<Vec<_>, _>>()?;
        for t in tickets {
            t.wait()?;
        }
        Ok(())
    }
}

/// The stored columns an INSERT names (all of them, in order, when it names none).
pub(crate) fn target_columns(
    rel: &Relation,
    named: &[String],
    at: Option<Position>,
) -> Result<Vec<String>> {
    let stored: Vec<String> = rel
        .columns
        .iter()
        .filter(|c| c.sql_type.is_some())
        .map(|c| c.name.clone())
        .collect();
    if named.is_empty() {
        return Ok(stored);
    }
    for (i, n) in named.iter().enumerate() {
        if named[..i].contains(n) {
            return Err(SqlError::plan(format!("column `{n}` is named twice"), at));
        }
        if !stored.contains(n) {
            let why = if rel.columns.iter().any(|c| &c.name == n) {
                "is computed, not stored".to_string()
            } else {
                format!("is not a column of `{}`", rel.name)
            };
            return Err(SqlError::plan(format!("`{n}` {why}"), at));
        }
    }
    Ok(named.to_vec())
}

/// The rows as the relation's stored columns: named ones cast to their types (an error if a
/// value does not fit), the others NULL.
fn stored_rows(rel: &Relation, targets: &[String], batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = rel.stored_schema()?;
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let column = match targets.iter().position(|t| t == f.name()) {
            Some(i) => cast_with_options(batch.column(i), f.data_type(), &strict).map_err(|e| {
                SqlError::BadValue {
                    relation: rel.name.clone(),
                    column: f.name().clone(),
                    reason: e.to_string(),
                }
            })?,
            None => new_null_array(f.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema, columns).map_err(|e| SqlError::Execution(e.to_string()))
}

/// Records of the rows: values in the relation's format, keys from the primary key.
fn to_records(rel: &Relation, rows: &RecordBatch) -> Result<Vec<Record>> {
    let values = encode_rows(rel.format, rows)?;
    let keys: Vec<Option<Bytes>> = if rel.primary_key.is_empty() {
        vec![None; rows.num_rows()]
    } else {
        let schema = rows.schema();
        let mut indices = Vec::with_capacity(rel.primary_key.len());
        for k in &rel.primary_key {
            let i = schema
                .index_of(k)
                .map_err(|e| SqlError::Execution(e.to_string()))?;
            if rows.column(i).null_count() > 0 {
                return Err(SqlError::BadValue {
                    relation: rel.name.clone(),
                    column: k.clone(),
                    reason: "a primary key column must not be NULL".into(),
                });
            }
            indices.push(i);
        }
        let key_rows = rows
            .project(&indices)
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        encode_rows(Format::Json, &key_rows)?
            .into_iter()
            .map(Some)
            .collect()
    };
    Ok(keys
        .into_iter()
        .zip(values)
        .map(|(key, value)| Record {
            key,
            value: Some(value),
            ..Record::default()
        })
        .collect())
}
