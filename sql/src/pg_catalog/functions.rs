//! The functions catalog queries call (`pg_table_is_visible`, `format_type`, `version`, …),
//! as DataFusion scalar functions over whole arrays.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::{boolean, format_type, int, text, OWNER_NAME, SERVER_VERSION, TYPES};

/// The functions catalog queries call, each over whole arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum PgFunction {
    /// `pg_table_is_visible(oid)`: every relation is in `public`, which is searched.
    TableIsVisible,
    /// `pg_type_is_visible(oid)`.
    TypeIsVisible,
    /// `pg_get_userbyid(oid)`: the owner's name.
    GetUserById,
    /// `format_type(type oid, typmod)`.
    FormatType,
    /// `pg_get_expr(expression, relation[, pretty])`: the expression text as stored.
    GetExpr,
    /// `obj_description(oid, catalog)`, `col_description(oid, column)`, `shobj_description`:
    /// nothing is commented.
    ObjDescription,
    ColDescription,
    /// `pg_relation_is_publishable(oid)`: no logical replication of Weir's relations.
    RelationIsPublishable,
    /// `version()`.
    Version,
    /// `current_schema()`.
    CurrentSchema,
    /// `current_database()`.
    CurrentDatabase,
    /// `to_regtype(name)`: the oid of a type Weir has, else NULL.
    ToRegtype,
    /// `pg_table_size(oid)` (0: sizes are the log's, per topic) and `pg_size_pretty(bytes)`.
    TableSize,
    SizePretty,
}

impl PgFunction {
    pub(super) const ALL: [PgFunction; 14] = [
        PgFunction::TableIsVisible,
        PgFunction::TypeIsVisible,
        PgFunction::GetUserById,
        PgFunction::FormatType,
        PgFunction::GetExpr,
        PgFunction::ObjDescription,
        PgFunction::ColDescription,
        PgFunction::RelationIsPublishable,
        PgFunction::Version,
        PgFunction::CurrentSchema,
        PgFunction::CurrentDatabase,
        PgFunction::ToRegtype,
        PgFunction::TableSize,
        PgFunction::SizePretty,
    ];

    fn sql_name(self) -> &'static str {
        match self {
            PgFunction::TableIsVisible => "pg_table_is_visible",
            PgFunction::TypeIsVisible => "pg_type_is_visible",
            PgFunction::GetUserById => "pg_get_userbyid",
            PgFunction::FormatType => "format_type",
            PgFunction::GetExpr => "pg_get_expr",
            PgFunction::ObjDescription => "obj_description",
            PgFunction::ColDescription => "col_description",
            PgFunction::RelationIsPublishable => "pg_relation_is_publishable",
            PgFunction::Version => "version",
            PgFunction::CurrentSchema => "current_schema",
            PgFunction::CurrentDatabase => "current_database",
            PgFunction::ToRegtype => "to_regtype",
            PgFunction::TableSize => "pg_table_size",
            PgFunction::SizePretty => "pg_size_pretty",
        }
    }

    fn returns(self) -> DataType {
        match self {
            PgFunction::TableIsVisible
            | PgFunction::TypeIsVisible
            | PgFunction::RelationIsPublishable => DataType::Boolean,
            PgFunction::ToRegtype | PgFunction::TableSize => DataType::Int64,
            _ => DataType::Utf8,
        }
    }

    /// The value for row `r` of the arguments.
    fn value(self, args: &[ArrayRef], r: usize) -> ScalarValue {
        let arg = |i: usize| {
            args.get(i)
                .and_then(|a| ScalarValue::try_from_array(a, r).ok())
                .filter(|v| !v.is_null())
        };
        let as_i64 = |i: usize| arg(i).and_then(|v| v.cast_to(&DataType::Int64).ok());
        let as_text = |i: usize| arg(i).map(|v| v.to_string());
        match self {
            PgFunction::TableIsVisible | PgFunction::TypeIsVisible => boolean(true),
            PgFunction::RelationIsPublishable => boolean(false),
            PgFunction::GetUserById => text(OWNER_NAME),
            PgFunction::FormatType => match as_i64(0) {
                Some(ScalarValue::Int64(Some(oid))) => text(format_type(oid).unwrap_or("???")),
                _ => ScalarValue::Utf8(None),
            },
            PgFunction::GetExpr => ScalarValue::Utf8(as_text(0)),
            PgFunction::ObjDescription | PgFunction::ColDescription => ScalarValue::Utf8(None),
            PgFunction::Version => text(&format!(
                "PostgreSQL {SERVER_VERSION} (Weir {}) on x86_64, compatible",
                env!("CARGO_PKG_VERSION")
            )),
            PgFunction::CurrentSchema => text("public"),
            PgFunction::CurrentDatabase => text(OWNER_NAME),
            PgFunction::ToRegtype => {
                let name = as_text(0).unwrap_or_default();
                let name = name.trim_start_matches("pg_catalog.");
                ScalarValue::Int64(TYPES.iter().find(|(_, n)| *n == name).map(|(o, _)| *o))
            }
            PgFunction::TableSize => int(0),
            PgFunction::SizePretty => match as_i64(0) {
                Some(ScalarValue::Int64(Some(b))) => text(&format!("{b} bytes")),
                _ => ScalarValue::Utf8(None),
            },
        }
    }
}

/// A [`PgFunction`] as DataFusion calls it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgUdf {
    function: PgFunction,
    signature: Signature,
}

impl From<PgFunction> for ScalarUDF {
    fn from(function: PgFunction) -> ScalarUDF {
        let signature = match function {
            PgFunction::Version | PgFunction::CurrentSchema | PgFunction::CurrentDatabase => {
                Signature::nullary(Volatility::Stable)
            }
            _ => Signature::variadic_any(Volatility::Stable),
        };
        ScalarUDF::new_from_impl(PgUdf {
            function,
            signature,
        })
    }
}

impl ScalarUDFImpl for PgUdf {
    fn name(&self) -> &str {
        self.function.sql_name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(self.function.returns())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        // All scalars: one value; else one per row of the batch.
        let rows = if scalar { 1 } else { args.number_rows };
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let returns = self.function.returns();
        let values = (0..rows).map(|r| {
            self.function
                .value(&arrays, r)
                .cast_to(&returns)
                .unwrap_or(ScalarValue::Null)
        });
        if scalar {
            let v = values.into_iter().next().unwrap_or(ScalarValue::Null);
            return Ok(ColumnarValue::Scalar(v.cast_to(&returns)?));
        }
        let values: Vec<ScalarValue> = values.collect();
        Ok(ColumnarValue::Array(match values.is_empty() {
            true => datafusion::arrow::array::new_empty_array(&returns),
            false => ScalarValue::iter_to_array(values)?,
        }))
    }
}
