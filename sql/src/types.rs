//! SQL column types as Arrow types, and back for `DESCRIBE`. Timestamps are milliseconds
//! since the epoch (Kafka's record timestamps are), UTC when declared `WITH TIME ZONE`;
//! strings are `Utf8`. A type outside this table is refused by name, never guessed.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, ExactNumberInfo, ObjectName, TimezoneInfo,
};

use crate::error::{Position, Result, SqlError};

/// The Arrow type of a declared SQL column type.
pub fn arrow_type(t: &SqlType, at: Option<Position>) -> Result<DataType> {
    use SqlType as S;
    Ok(match t {
        S::Boolean | S::Bool => DataType::Boolean,
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) | S::Int16 => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::Int32 => DataType::Int32,
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        S::Real | S::Float4 | S::Float32 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 | S::Float64 => DataType::Float64,
        S::Float(info) => match info {
            ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Float32,
            _ => DataType::Float64,
        },
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => decimal(info, at)?,
        S::Text
        | S::String(_)
        | S::Varchar(_)
        | S::CharacterVarying(_)
        | S::CharVarying(_)
        | S::Char(_)
        | S::Character(_)
        | S::JSON
        | S::JSONB
        | S::Uuid => DataType::Utf8,
        S::Bytea | S::Bytes(_) | S::Binary(_) | S::Varbinary(_) | S::Blob(_) => DataType::Binary,
        S::Date => DataType::Date32,
        S::Timestamp(_, tz) => match tz {
            TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            }
            _ => DataType::Timestamp(TimeUnit::Millisecond, None),
        },
        S::Custom(name, _) if is_named(name, "timestamptz") => {
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        }
        other => {
            return Err(SqlError::unsupported(
                format!(
                    "column type {other} (use BOOLEAN, SMALLINT, INT, BIGINT, REAL, DOUBLE, \
                     DECIMAL(p,s), TEXT/VARCHAR, BYTEA, DATE or TIMESTAMP)"
                ),
                at,
            ))
        }
    })
}

fn is_named(name: &ObjectName, want: &str) -> bool {
    name.to_string().eq_ignore_ascii_case(want)
}

/// Largest decimal precision Arrow's `Decimal128` holds.
const DECIMAL_PRECISION_MAX: u64 = 38;

fn decimal(info: &ExactNumberInfo, at: Option<Position>) -> Result<DataType> {
    let (p, s) = match info {
        ExactNumberInfo::None => (DECIMAL_PRECISION_MAX, 10),
        ExactNumberInfo::Precision(p) => (*p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (*p, (*s).max(0) as u64),
    };
    if p == 0 || p > DECIMAL_PRECISION_MAX || s > p {
        return Err(SqlError::plan(
            format!("DECIMAL({p}, {s}): precision must be 1 to {DECIMAL_PRECISION_MAX} and scale at most the precision"),
            at,
        ));
    }
    Ok(DataType::Decimal128(p as u8, s as i8))
}

/// The SQL name of an Arrow type, as `DESCRIBE` and the Postgres catalog show it.
pub fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTEA".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Interval(_) => "INTERVAL".into(),
        other => other.to_string(),
    }
}
