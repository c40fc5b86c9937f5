//! Record formats: how a stream's or table's records become Arrow rows, and rows records.
//!
//! - `json`: one JSON object per record value; keys match column names (case-sensitive,
//!   unknown keys ignored, missing ones NULL). A TIMESTAMP is an integer of epoch
//!   milliseconds or an RFC 3339 string (UTC when it has no offset).
//! - `csv`: one line per record value, fields in the declared column order, no header.
//! - `raw`: the whole value in the relation's single column (TEXT or BYTEA).
//! - `debezium_json`: Debezium change events ([`weir_engine::changes`], bare or with Kafka
//!   Connect's schema wrapper). A table reads them as changes ([`crate::changes`]); a stream's
//!   rows are the `after` rows of creates, snapshot reads and updates (deletes, truncates and
//!   tombstones change a table, they are no stream rows). The row's fields are read as
//!   `json`'s are: integer timestamps are epoch milliseconds (Debezium's
//!   `time.precision.mode=connect`). Rows written in it are create events.
//!
//! Every relation also exposes each record's metadata as columns: `_key` (TEXT), `_timestamp`
//! (TIMESTAMP), `_partition` (INT) and `_offset` (BIGINT).
//!
//! Decoding is vectorized: a chunk of records is decoded by one Arrow decoder. A record that
//! does not decode is not dropped silently: the chunk is decoded again record by record and
//! each bad record is returned with its partition, offset and reason.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::error::{Result, SqlError};

/// Metadata columns every relation exposes, after its own columns.
pub const META_COLUMNS: [&str; 4] = ["_key", "_timestamp", "_partition", "_offset"];

/// A record value's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per record.
    Json,
    /// One CSV line per record, fields in column order.
    Csv,
    /// The value itself, in the single column.
    Raw,
    /// Debezium change events.
    #[serde(rename = "debezium_json")]
    DebeziumJson,
}

impl Format {
    /// Parses the `format` option.
    pub fn parse(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "raw" | "bytes" | "text" => Ok(Format::Raw),
            "debezium_json" | "debezium-json" | "debezium" => Ok(Format::DebeziumJson),
            other => Err(SqlError::option(
                "format",
                format!("unknown format `{other}` (json, csv, raw or debezium_json)"),
            )),
        }
    }

    /// Checks the format fits the stored columns (raw needs exactly one TEXT or BYTEA).
    pub fn check(self, stored: &Schema) -> Result<()> {
        if self == Format::Raw {
            let ok = stored.fields().len() == 1
                && matches!(
                    stored.field(0).data_type(),
                    DataType::Utf8 | DataType::Binary
                );
            if !ok {
                return Err(SqlError::option(
                    "format",
                    "raw needs exactly one stored column, of type TEXT or BYTEA",
                ));
            }
        }
        Ok(())
    }
}

/// The metadata columns' fields.
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new("_key", DataType::Utf8, true),
        Field::new(
            "_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
    ]
}

/// One record read from the log, owned for decoding.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Key bytes.
    pub key: Option<Bytes>,
    /// Value bytes (records with none are tombstones, never decoded).
    pub value: Bytes,
    /// Record timestamp, epoch ms.
    pub timestamp: i64,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A record that did not decode, with where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The decoder's reason.
    pub reason: String,
}

/// Decodes records of one format into rows of a relation's stored columns plus metadata.
#[derive(Debug, Clone)]
pub struct RowDecoder {
    format: Format,
    /// The stored columns only.
    stored: SchemaRef,
    /// Stored columns then metadata: what a decoded batch has.
    output: SchemaRef,
}

impl RowDecoder {
    /// A decoder for `stored` columns in `format`.
    pub fn new(format: Format, stored: SchemaRef) -> RowDecoder {
        let mut fields: Vec<Field> = stored.fields().iter().map(|f| (**f).clone()).collect();
        fields.extend(meta_fields());
        RowDecoder {
            format,
            stored,
            output: Arc::new(Schema::new(fields)),
        }
    }

    /// The schema of decoded batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Decodes a chunk: one vectorized pass, or, if any record is bad, record by record so
    /// that every good row is kept and every bad one is reported.
    pub fn decode(&self, records: &[LogRecord]) -> (RecordBatch, Vec<BadRecord>) {
        if self.format == Format::DebeziumJson {
            return self.decode_events(records);
        }
        if let Ok(batch) = self.values(records.iter()) {
            if batch.num_rows() == records.len() {
                if let Ok(b) = self.with_meta(batch, records.iter()) {
                    return (b, Vec::new());
                }
            }
        }
        let mut good = Vec::with_capacity(records.len());
        let mut parts = Vec::new();
        let mut bad = Vec::new();
        for r in records {
            match self.values(std::iter::once(r)) {
                Ok(b) if b.num_rows() == 1 => {
                    parts.push(b);
                    good.push(r);
                }
                Ok(b) => bad.push(BadRecord {
                    partition: r.partition,
                    offset: r.offset,
                    reason: format!("expected one row, the value holds {}", b.num_rows()),
                }),
                Err(e) => bad.push(BadRecord {
                    partition: r.partition,
                    offset: r.offset,
                    reason: e.to_string(),
                }),
            }
        }
        let values = concat_batches(&self.stored, &parts)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.stored.clone()));
        match self.with_meta(values, good.into_iter()) {
            Ok(b) => (b, bad),
            Err(e) => {
                // Not reachable with the arrays built here; reported rather than lost.
                bad.push(BadRecord {
                    partition: records.first().map_or(-1, |r| r.partition),
                    offset: records.first().map_or(-1, |r| r.offset),
                    reason: format!("chunk could not be assembled: {e}"),
                });
                (RecordBatch::new_empty(self.output.clone()), bad)
            }
        }
    }

    /// Change events as stream rows: the `after` rows of creates, reads and updates.
    fn decode_events(&self, records: &[LogRecord]) -> (RecordBatch, Vec<BadRecord>) {
        let mut bad = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            match weir_engine::changes::ChangeEvent::parse(&r.value) {
                Err(e) => bad.push(BadRecord {
                    partition: r.partition,
                    offset: r.offset,
                    reason: e.to_string(),
                }),
                Ok(Some(e)) => match serde_json::to_vec(&e.after) {
                    Ok(after) if e.after.is_some() => rows.push(LogRecord {
                        value: Bytes::from(after),
                        ..r.clone()
                    }),
                    Ok(_) => {}
                    Err(e) => bad.push(BadRecord {
                        partition: r.partition,
                        offset: r.offset,
                        reason: format!("the row: {e}"),
                    }),
                },
                Ok(None) => {}
            }
        }
        let json = RowDecoder {
            format: Format::Json,
            stored: self.stored.clone(),
            output: self.output.clone(),
        };
        let (batch, more) = json.decode(&rows);
        bad.extend(more);
        (batch, bad)
    }

    /// The stored columns of `records`, in one decoder pass.
    fn values<'a>(
        &self,
        records: impl Iterator<Item = &'a LogRecord> + Clone,
    ) -> Result<RecordBatch, ArrowError> {
        let n = records.clone().count().max(1);
        match self.format {
            Format::Json => {
                let mut d = datafusion::arrow::json::ReaderBuilder::new(self.stored.clone())
                    .with_batch_size(n)
                    .build_decoder()?;
                for r in records {
                    let before = d.len();
                    let used = d.decode(&r.value)?;
                    let whole = used == r.value.len()
                        || r.value[used..].iter().all(u8::is_ascii_whitespace);
                    if !whole || d.has_partial_record() || d.len() != before + 1 {
                        return Err(ArrowError::JsonError(
                            "a record value must be exactly one JSON object".into(),
                        ));
                    }
                }
                Ok(d.flush()?
                    .unwrap_or_else(|| RecordBatch::new_empty(self.stored.clone())))
            }
            Format::Csv => {
                // Timestamps are read as text, then taken as epoch milliseconds or parsed as
                // RFC 3339 (Arrow's CSV reader knows only the latter).
                let text = Arc::new(Schema::new(
                    self.stored
                        .fields()
                        .iter()
                        .map(|f| match f.data_type() {
                            DataType::Timestamp(..) => Field::new(f.name(), DataType::Utf8, true),
                            _ => (**f).clone(),
                        })
                        .collect::<Vec<_>>(),
                ));
                let mut d = datafusion::arrow::csv::ReaderBuilder::new(text.clone())
                    .with_batch_size(n)
                    .build_decoder();
                for r in records {
                    let mut line = r.value.to_vec();
                    line.push(b'\n');
                    let mut rest = &line[..];
                    while !rest.is_empty() {
                        let used = d.decode(rest)?;
                        if used == 0 {
                            return Err(ArrowError::CsvError("record does not fit".into()));
                        }
                        rest = &rest[used..];
                    }
                }
                let batch = d.flush()?.unwrap_or_else(|| RecordBatch::new_empty(text));
                let columns = batch
                    .columns()
                    .iter()
                    .zip(self.stored.fields())
                    .map(|(c, f)| match f.data_type() {
                        DataType::Timestamp(..) => timestamps_from_text(c, f.data_type()),
                        _ => Ok(c.clone()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                RecordBatch::try_new(self.stored.clone(), columns)
            }
            Format::DebeziumJson => Err(ArrowError::JsonError(
                "change events are decoded as events".into(),
            )),
            Format::Raw => {
                let field = self.stored.field(0);
                let column: ArrayRef = match field.data_type() {
                    DataType::Utf8 => {
                        let mut out = Vec::new();
                        for r in records {
                            let s = std::str::from_utf8(&r.value).map_err(|e| {
                                ArrowError::ParseError(format!("value is not UTF-8: {e}"))
                            })?;
                            out.push(Some(s));
                        }
                        Arc::new(StringArray::from(out))
                    }
                    _ => Arc::new(BinaryArray::from_iter_values(
                        records.map(|r| r.value.as_ref()),
                    )),
                };
                RecordBatch::try_new(self.stored.clone(), vec![column])
            }
        }
    }

    /// Appends the metadata columns of `records` (the rows of `values`, in order).
    fn with_meta<'a>(
        &self,
        values: RecordBatch,
        records: impl Iterator<Item = &'a LogRecord> + Clone,
    ) -> Result<RecordBatch, ArrowError> {
        let keys: StringArray = records
            .clone()
            .map(|r| {
                r.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
            })
            .collect();
        let ts: TimestampMillisecondArray = records.clone().map(|r| Some(r.timestamp)).collect();
        let parts: Int32Array = records.clone().map(|r| Some(r.partition)).collect();
        let offsets: Int64Array = records.map(|r| Some(r.offset)).collect();
        let mut columns = values.columns().to_vec();
        columns.push(Arc::new(keys));
        columns.push(Arc::new(ts));
        columns.push(Arc::new(parts));
        columns.push(Arc::new(offsets));
        RecordBatch::try_new(self.output.clone(), columns)
    }
}

/// Encodes rows (the relation's stored columns, in its schema) as record values: one JSON
/// object, CSV line or raw value per row. Timestamps are written as epoch milliseconds.
pub fn encode_rows(format: Format, batch: &RecordBatch) -> Result<Vec<Bytes>> {
    let fail = |e: ArrowError| SqlError::Execution(format!("cannot encode rows: {e}"));
    let batch = timestamps_as_millis(batch).map_err(fail)?;
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
                w.write(&batch).map_err(fail)?;
                w.finish().map_err(fail)?;
            }
            Ok(split_lines(&buf))
        }
        Format::DebeziumJson => Ok(encode_rows(Format::Json, &batch)?
            .into_iter()
            .map(|row| {
                let mut event = Vec::with_capacity(row.len() + 32);
                event.extend_from_slice(br#"{"before":null,"after":"#);
                event.extend_from_slice(&row);
                event.extend_from_slice(br#","op":"c"}"#);
                Bytes::from(event)
            })
            .collect()),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut buf);
                w.write(&batch).map_err(fail)?;
            }
            Ok(split_lines(&buf))
        }
        Format::Raw => {
            let column = batch.column(0);
            let mut out = Vec::with_capacity(batch.num_rows());
            if let Some(s) = column.as_any().downcast_ref::<StringArray>() {
                for i in 0..s.len() {
                    out.push(Bytes::copy_from_slice(s.value(i).as_bytes()));
                }
            } else if let Some(b) = column.as_any().downcast_ref::<BinaryArray>() {
                for i in 0..b.len() {
                    out.push(Bytes::copy_from_slice(b.value(i)));
                }
            } else {
                return Err(SqlError::Execution(
                    "raw format: the column is neither TEXT nor BYTEA".into(),
                ));
            }
            Ok(out)
        }
    }
}

/// Text timestamps: an integer is epoch milliseconds, anything else RFC 3339 (UTC when it
/// has no offset); empty text is NULL.
fn timestamps_from_text(column: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    let text = column
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::CastError("timestamp column is not text".into()))?;
    let mut out = Vec::with_capacity(text.len());
    for i in 0..text.len() {
        if text.is_null(i) || text.value(i).is_empty() {
            out.push(None);
            continue;
        }
        let v = text.value(i).trim();
        match v.parse::<i64>() {
            Ok(ms) => out.push(Some(ms)),
            Err(_) => {
                let one: ArrayRef = Arc::new(StringArray::from(vec![v]));
                let strict = datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                let ts = datafusion::arrow::compute::cast_with_options(
                    &one,
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                    &strict,
                )?;
                let ts = ts
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .ok_or_else(|| ArrowError::CastError("timestamp cast".into()))?;
                out.push(Some(ts.value(0)));
            }
        }
    }
    cast(
        &(Arc::new(TimestampMillisecondArray::from(out)) as ArrayRef),
        to,
    )
}

fn split_lines(buf: &[u8]) -> Vec<Bytes> {
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(Bytes::copy_from_slice)
        .collect()
}

/// The batch with every timestamp column as Int64 epoch milliseconds (how records carry
/// event time, and what every JSON consumer reads without guessing a string format).
fn timestamps_as_millis(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if let DataType::Timestamp(..) = f.data_type() {
            let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            columns.push(cast(&ms, &DataType::Int64)?);
            fields.push(Field::new(f.name(), DataType::Int64, f.is_nullable()));
        } else {
            columns.push(c.clone());
            fields.push((**f).clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, value: &str) -> LogRecord {
        LogRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::copy_from_slice(value.as_bytes()),
            timestamp: 1_000 + offset,
            partition: 0,
            offset,
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    #[test]
    fn json_timestamps_from_millis_and_rfc3339_and_bad_records_reported() {
        let d = RowDecoder::new(Format::Json, schema());
        let (batch, bad) = d.decode(&[
            rec(0, r#"{"id": 1, "ts": 1767225601000}"#),
            rec(1, r#"{"id": "x"}"#),
            rec(2, r#"{"id": 3, "ts": "2026-01-01T00:00:01"}"#),
            rec(3, "not json"),
            rec(4, r#"{"id": 5}{"id": 6}"#),
        ]);
        assert_eq!(batch.num_rows(), 2);
        let ts = batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("ts");
        assert_eq!(ts.value(0), 1_767_225_601_000);
        assert_eq!(
            ts.value(1),
            1_767_225_601_000,
            "RFC 3339 without zone is UTC"
        );
        let offsets: Vec<i64> = bad.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, vec![1, 3, 4]);
        assert_eq!(batch.num_columns(), 2 + META_COLUMNS.len());
    }

    #[test]
    fn rows_round_trip_through_json_and_csv() {
        let d = RowDecoder::new(Format::Json, schema());
        let (batch, _) = d.decode(&[rec(0, r#"{"id": 7, "ts": 1000}"#)]);
        let stored = batch.project(&[0, 1]).expect("project");
        for format in [Format::Json, Format::Csv] {
            let values = encode_rows(format, &stored).expect("encode");
            let back = RowDecoder::new(format, schema());
            let records: Vec<LogRecord> = values
                .iter()
                .enumerate()
                .map(|(i, v)| rec(i as i64, std::str::from_utf8(v).expect("utf8")))
                .collect();
            let (again, bad) = back.decode(&records);
            assert!(bad.is_empty(), "{format:?}: {bad:?}");
            assert_eq!(
                again.project(&[0, 1]).expect("project"),
                stored,
                "{format:?}"
            );
        }
    }
}
