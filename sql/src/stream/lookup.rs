//! Stream–table joins: each stream row meets the table's current row for its key (`JOIN t ON
//! s.x = t.id`, inner or `LEFT`). The table's topic is the task's second input (read as a
//! table: it never holds time back, and among equal timestamps comes first); its latest value
//! per key is kept in a RocksDB store backed by its changelog. Stream rows look up by the same
//! key bytes the table's records are keyed by — a JSON object of its primary key, as Weir,
//! Kafka Connect and Debezium key them — so, repartitioned by that key, they meet the table's
//! partition in one task.
//!
//! The table's records are read as changes ([`crate::changes`]), so a table of Debezium
//! events joins as one of rows does.
//!
//! Invariant: a table record whose value does not decode is poison (dead-lettered), never
//! stored, so a lookup always decodes.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use weir_engine::TaskContext;

use super::table_state;
use crate::catalog::Relation;
use crate::changes::TableChanges;
use crate::error::{from_datafusion, Result, SqlError};
use crate::format::{encode_rows, Format, LogRecord, RowDecoder};

/// The task's store of the table's rows ([`table_state`]).
pub(crate) const TABLE_STORE: usize = 0;

/// The processor's operator id of the lookup (its counters).
pub(crate) const LOOKUP_OPERATOR: usize = 1;

/// A stream–table join.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) table: Relation,
    /// The table's records as changes.
    pub(crate) changes: TableChanges,
    /// The decoder of the table's stored rows (stored columns, then metadata).
    pub(crate) decoder: RowDecoder,
    /// The table's columns the join outputs (indices into the decoder's stored columns).
    pub(crate) right_columns: Vec<usize>,
    /// Per primary-key column, in the table's key order: its name and type, and the
    /// expression over the stream's rows it must equal.
    pub(crate) keys: Vec<(Field, Arc<dyn PhysicalExpr>)>,
    /// `LEFT JOIN`: stream rows without a match come out with NULLs.
    pub(crate) left_join: bool,
    /// The left side is a table too ([`super::table_join`]): its rows come and go.
    pub(crate) table_join: bool,
    /// The join's output: the stream side's columns, then the table's.
    pub(crate) schema: SchemaRef,
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

fn engine(e: weir_engine::EngineError) -> SqlError {
    SqlError::Execution(e.to_string())
}

impl Lookup {
    /// The key each stream row looks up: a JSON object of the primary key's columns.
    pub(crate) fn stream_keys(&self, batch: &RecordBatch) -> Result<Vec<Option<Bytes>>> {
        let n = batch.num_rows();
        let mut fields = Vec::with_capacity(self.keys.len());
        let mut columns = Vec::with_capacity(self.keys.len());
        for (field, expr) in &self.keys {
            let values = expr
                .evaluate(batch)
                .and_then(|v| v.into_array(n))
                .map_err(from_datafusion)?;
            columns.push(cast(&values, field.data_type()).map_err(arrow)?);
            fields.push(Field::new(field.name(), field.data_type().clone(), true));
        }
        let keys =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.clone()).map_err(arrow)?;
        let encoded = encode_rows(Format::Json, &keys)?;
        // A NULL key matches nothing (as SQL's `=`).
        Ok(encoded
            .into_iter()
            .enumerate()
            .map(|(r, k)| (!columns.iter().any(|c| c.is_null(r))).then_some(k))
            .collect())
    }

    /// A batch of the table's input, read as changes into the store ([`table_state`]); a
    /// replay is counted as dropped by the lookup operator.
    pub(crate) fn update_table(&self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let applied = table_state::apply_batch(
            ctx,
            table_state::TABLE_STORE_NAME,
            &self.changes,
            &self.decoder,
            false,
        )?;
        if applied.replays > 0 {
            ctx.record_dropped(LOOKUP_OPERATOR, applied.replays);
        }
        Ok(())
    }

    /// The table's records to the repartition topic `topic` by Weir's key encoding.
    pub(crate) fn shuffle_table(&self, ctx: &mut TaskContext<'_>, topic: &str) -> Result<usize> {
        table_state::shuffle_table(ctx, &self.changes, topic)
    }

    /// The stream rows joined with the table's current rows: the joined batch, and for each
    /// of its rows the stream row it came from.
    pub(crate) fn join(
        &self,
        ctx: &mut TaskContext<'_>,
        left: &RecordBatch,
    ) -> Result<(RecordBatch, UInt32Array)> {
        let keys = self.stream_keys(left)?;
        let store = ctx.store_at(TABLE_STORE).map_err(engine)?;
        let mut from = Vec::with_capacity(keys.len());
        let mut matched: Vec<Option<usize>> = Vec::with_capacity(keys.len());
        let mut values = Vec::new();
        for (r, key) in keys.iter().enumerate() {
            let found = match key {
                Some(k) => store
                    .get(k)
                    .map_err(engine)?
                    .and_then(|e| table_state::stored_row(e, self.changes.positioned())),
                None => None,
            };
            match found {
                Some(v) => {
                    from.push(r as u32);
                    matched.push(Some(values.len()));
                    values.push(LogRecord {
                        key: key.clone(),
                        value: v,
                        timestamp: 0,
                        partition: 0,
                        offset: values.len() as i64,
                    });
                }
                None if self.left_join => {
                    from.push(r as u32);
                    matched.push(None);
                }
                None => {}
            }
        }
        let (decoded, bad) = self.decoder.decode(&values);
        if let Some(b) = bad.first() {
            return Err(SqlError::Execution(format!(
                "a stored row of table `{}` does not decode: {}",
                self.table.name, b.reason
            )));
        }
        let from = UInt32Array::from(from);
        let rows: UInt32Array = matched.iter().map(|m| m.map(|i| i as u32)).collect();
        let batch = self.assemble(left, &from, &decoded, &rows)?;
        Ok((batch, from))
    }

    /// Joined rows: row `j` is left row `from[j]` with the table's row `rows[j]` of `right`
    /// (decoded as the table's), or NULLs where `rows[j]` is NULL.
    pub(crate) fn assemble(
        &self,
        left: &RecordBatch,
        from: &UInt32Array,
        right: &RecordBatch,
        rows: &UInt32Array,
    ) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for c in left.columns() {
            columns.push(take(c, from, None).map_err(arrow)?);
        }
        for (&c, field) in self
            .right_columns
            .iter()
            .zip(self.schema.fields().iter().skip(left.num_columns()))
        {
            let column = match right.num_rows() {
                0 => new_null_array(field.data_type(), rows.len()),
                _ => take(right.column(c), rows, None).map_err(arrow)?,
            };
            columns.push(column);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow)
    }
}

impl Lookup {
    /// The stream side's columns (the join's first ones).
    pub(crate) fn left_schema(&self) -> SchemaRef {
        let n = self.schema.fields().len() - self.right_columns.len();
        Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .take(n)
                .cloned()
                .collect::<Vec<_>>(),
        ))
    }
}

/// Stream rows in Arrow's row format, as repartition records carry them to the table.
pub(crate) struct RowCodec {
    converter: datafusion::arrow::row::RowConverter,
    schema: SchemaRef,
}

impl RowCodec {
    pub(crate) fn new(schema: SchemaRef) -> Result<RowCodec> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| datafusion::arrow::row::SortField::new(f.data_type().clone()))
            .collect();
        Ok(RowCodec {
            converter: datafusion::arrow::row::RowConverter::new(fields).map_err(arrow)?,
            schema,
        })
    }

    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<Bytes>> {
        let rows = self
            .converter
            .convert_columns(batch.columns())
            .map_err(arrow)?;
        Ok((0..batch.num_rows())
            .map(|r| Bytes::copy_from_slice(rows.row(r).as_ref()))
            .collect())
    }

    pub(crate) fn decode<'a>(&self, values: impl Iterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let rows: Vec<_> = values.map(|v| parser.parse(v)).collect();
        let columns = self.converter.convert_rows(rows).map_err(arrow)?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow)
    }
}
