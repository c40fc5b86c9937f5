//! Arrow results as Postgres rows: each Arrow type has a Postgres type ([`pg_type`]), and each
//! value is encoded in the format the client asked for, text or binary. Types without a
//! Postgres counterpart here (lists, structs, intervals, …) travel as `text` in Arrow's own
//! display form, so nothing a query returns is refused or lost.

use std::sync::Arc;

use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions as PgFormatOptions;
use weir_sql::datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, LargeBinaryArray, LargeStringArray,
    StringArray, StringViewArray,
};
use weir_sql::datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt8Type,
};
use weir_sql::datafusion::arrow::record_batch::RecordBatch;
use weir_sql::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The Postgres type an Arrow column is sent as.
pub(crate) fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary | DataType::LargeBinary => Type::BYTEA,
        DataType::Date32 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        // Everything else (UInt64, decimals, lists, structs, intervals, …) as its text.
        _ => Type::TEXT,
    }
}

/// The row description of a result: one field per column, in the format asked for.
pub(crate) fn fields(schema: &Schema, format: &Format) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                FieldInfo::new(
                    f.name().clone(),
                    None,
                    None,
                    pg_type(f.data_type()),
                    format.format_for(i),
                )
            })
            .collect(),
    )
}

/// Every row of `batches`, encoded for `fields`.
pub(crate) fn rows(
    batches: &[RecordBatch],
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let options = FormatOptions::default()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"));
    for batch in batches {
        let texts: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let mut encoder = DataRowEncoder::new(fields.clone());
        let pg = PgFormatOptions::default();
        for row in 0..batch.num_rows() {
            for (c, column) in batch.columns().iter().enumerate() {
                let f = &fields[c];
                encode(
                    &mut encoder,
                    column,
                    &texts[c],
                    row,
                    (f.datatype(), f.format(), &pg),
                )?;
            }
            out.push(encoder.take_row());
        }
    }
    Ok(out)
}

/// One value of `column` at `row`, as `ty` in `format`.
fn encode(
    e: &mut DataRowEncoder,
    column: &ArrayRef,
    text: &ArrayFormatter<'_>,
    row: usize,
    (ty, format, pg): (&Type, FieldFormat, &PgFormatOptions),
) -> PgWireResult<()> {
    // A NULL literal's column (type Null) has no validity bitmap: every value is NULL.
    if column.is_null(row) || column.data_type() == &DataType::Null {
        return e.encode_field_with_type_and_format(&None::<i64>, ty, format, pg);
    }
    macro_rules! put {
        ($v:expr) => {
            e.encode_field_with_type_and_format(&$v, ty, format, pg)
        };
    }
    match column.data_type() {
        DataType::Boolean => put!(column
            .as_any()
            .downcast_ref::<BooleanArray>()
            .map(|a| a.value(row))),
        DataType::Int8 => put!(i16::from(column.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => put!(column.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => put!(i16::from(column.as_primitive::<UInt8Type>().value(row))),
        DataType::Int32 => put!(column.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => put!(i32::from(column.as_primitive::<UInt16Type>().value(row))),
        DataType::Int64 => put!(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => put!(i64::from(column.as_primitive::<UInt32Type>().value(row))),
        DataType::Float32 => put!(column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => put!(column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => put!(column
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(row))),
        DataType::LargeUtf8 => put!(column
            .as_any()
            .downcast_ref::<LargeStringArray>()
            .map(|a| a.value(row))),
        DataType::Utf8View => put!(column
            .as_any()
            .downcast_ref::<StringViewArray>()
            .map(|a| a.value(row))),
        DataType::Binary => put!(column
            .as_any()
            .downcast_ref::<BinaryArray>()
            .map(|a| a.value(row))),
        DataType::LargeBinary => put!(column
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .map(|a| a.value(row))),
        DataType::Date32 => put!(column.as_primitive::<Date32Type>().value_as_date(row)),
        DataType::Timestamp(unit, tz) => {
            let t = match unit {
                TimeUnit::Second => column
                    .as_primitive::<TimestampSecondType>()
                    .value_as_datetime(row),
                TimeUnit::Millisecond => column
                    .as_primitive::<TimestampMillisecondType>()
                    .value_as_datetime(row),
                TimeUnit::Microsecond => column
                    .as_primitive::<TimestampMicrosecondType>()
                    .value_as_datetime(row),
                TimeUnit::Nanosecond => column
                    .as_primitive::<TimestampNanosecondType>()
                    .value_as_datetime(row),
            };
            match tz {
                None => put!(t),
                Some(_) => put!(t.map(|t| t.and_utc())),
            }
        }
        _ => put!(text.value(row).to_string()),
    }
}
