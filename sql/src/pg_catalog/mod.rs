//! Postgres's system catalogs, as much of them as psql's `\d` family, psycopg and drivers'
//! connect-time probes read: the tables of schema `pg_catalog` (`pg_class`, `pg_namespace`,
//! `pg_attribute`, `pg_type`, …) built from Weir's catalog before a statement that reads them,
//! the functions those queries call (`pg_table_is_visible`, `format_type`, `version`, …), and
//! a rewrite of the Postgres-only syntax they use (`OPERATOR(pg_catalog.~)`, `COLLATE
//! pg_catalog.default`, casts to `oid`/`regclass`/`regtype`).
//!
//! Streams and tables appear as tables (`relkind 'r'`), materialized views as materialized
//! views (`'m'`); every relation lives in schema `public`, owned by `weir`. The catalogs Weir
//! has nothing for (indexes, constraints, policies, triggers, publications, inheritance,
//! statistics) exist and are empty, so the queries over them answer "none".
//!
//! Invariant: a relation's oid is a function of its name alone, so the oid one statement
//! returns finds the same relation in the next (psql looks relations up, then describes them
//! by oid).

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

mod functions;
mod rewrite;

pub(crate) use rewrite::{empty_result, reads_catalogs, rewrite};

use crate::catalog::Relation;
use crate::error::{from_datafusion, Result, SqlError};
use crate::parser::RelationKind;

/// The schema the catalogs live in.
pub(crate) const SCHEMA: &str = "pg_catalog";
/// The version `version()` reports (what `server_version` says at startup).
pub const SERVER_VERSION: &str = "16.6";
const NAMESPACE_PG_CATALOG: i64 = 11;
const NAMESPACE_PUBLIC: i64 = 2200;
const NAMESPACE_INFORMATION_SCHEMA: i64 = 13_000;
/// The role owning everything.
const OWNER: i64 = 10;
const OWNER_NAME: &str = "weir";
/// Postgres's first oid for user objects: relation oids are above it.
const FIRST_USER_OID: i64 = 16_384;
/// Relation oids are spread over this many values above [`FIRST_USER_OID`].
const USER_OID_RANGE: u64 = 1_000_000_000;

/// A relation's oid: a hash of its name (FNV-1a), stable across statements and sessions.
pub(crate) fn relation_oid(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    FIRST_USER_OID + (h % USER_OID_RANGE) as i64
}

/// A column type as Postgres names it (`format_type`) and its type oid.
fn pg_type_of(t: &DataType) -> (i64, String) {
    match t {
        DataType::Boolean => (16, "boolean".into()),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (21, "smallint".into()),
        DataType::Int32 | DataType::UInt16 => (23, "integer".into()),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (20, "bigint".into()),
        DataType::Float16 | DataType::Float32 => (700, "real".into()),
        DataType::Float64 => (701, "double precision".into()),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (1700, format!("numeric({p},{s})"))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => (17, "bytea".into()),
        DataType::Date32 | DataType::Date64 => (1082, "date".into()),
        DataType::Timestamp(_, None) => (1114, "timestamp without time zone".into()),
        DataType::Timestamp(_, Some(_)) => (1184, "timestamp with time zone".into()),
        DataType::Time32(_) | DataType::Time64(_) => (1083, "time without time zone".into()),
        DataType::Interval(_) => (1186, "interval".into()),
        _ => (25, "text".into()),
    }
}

/// The built-in types `pg_type` lists (oid, name): those [`pg_type_of`] gives.
const TYPES: [(i64, &str); 14] = [
    (16, "bool"),
    (17, "bytea"),
    (20, "int8"),
    (21, "int2"),
    (23, "int4"),
    (25, "text"),
    (700, "float4"),
    (701, "float8"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1184, "timestamptz"),
    (1186, "interval"),
    (1700, "numeric"),
];

/// `format_type(oid, typmod)` for the types Weir has.
fn format_type(oid: i64) -> Option<&'static str> {
    Some(match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        700 => "real",
        701 => "double precision",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1186 => "interval",
        1700 => "numeric",
        _ => return None,
    })
}

/// A relation as the catalogs show it: its kind, declared columns (with their types) and
/// computed columns' expressions, and a view's query.
pub(crate) struct Described<'a> {
    pub(crate) relation: &'a Relation,
    pub(crate) schema: SchemaRef,
}

/// Columns of a catalog table: (name, type).
type Columns = &'static [(&'static str, DataType)];

const PG_NAMESPACE: Columns = &[
    ("oid", DataType::Int64),
    ("nspname", DataType::Utf8),
    ("nspowner", DataType::Int64),
];
const PG_CLASS: Columns = &[
    ("oid", DataType::Int64),
    ("relname", DataType::Utf8),
    ("relnamespace", DataType::Int64),
    ("relkind", DataType::Utf8),
    ("relowner", DataType::Int64),
    ("relam", DataType::Int64),
    ("relchecks", DataType::Int32),
    ("relhasindex", DataType::Boolean),
    ("relhasrules", DataType::Boolean),
    ("relhastriggers", DataType::Boolean),
    ("relrowsecurity", DataType::Boolean),
    ("relforcerowsecurity", DataType::Boolean),
    ("relispartition", DataType::Boolean),
    ("reltablespace", DataType::Int64),
    ("reloftype", DataType::Int64),
    ("relpersistence", DataType::Utf8),
    ("relreplident", DataType::Utf8),
    ("reltoastrelid", DataType::Int64),
    ("relnatts", DataType::Int32),
    ("relpartbound", DataType::Utf8),
];
const PG_ATTRIBUTE: Columns = &[
    ("attrelid", DataType::Int64),
    ("attname", DataType::Utf8),
    ("atttypid", DataType::Int64),
    ("atttypmod", DataType::Int32),
    ("attnum", DataType::Int32),
    ("attnotnull", DataType::Boolean),
    ("atthasdef", DataType::Boolean),
    ("attisdropped", DataType::Boolean),
    ("attcollation", DataType::Int64),
    ("attidentity", DataType::Utf8),
    ("attgenerated", DataType::Utf8),
    ("attstorage", DataType::Utf8),
    ("attcompression", DataType::Utf8),
    ("attstattarget", DataType::Int32),
];
const PG_ATTRDEF: Columns = &[
    ("oid", DataType::Int64),
    ("adrelid", DataType::Int64),
    ("adnum", DataType::Int32),
    ("adbin", DataType::Utf8),
];
const PG_TYPE: Columns = &[
    ("oid", DataType::Int64),
    ("typname", DataType::Utf8),
    ("typnamespace", DataType::Int64),
    ("typtype", DataType::Utf8),
    ("typcollation", DataType::Int64),
    ("typbasetype", DataType::Int64),
    ("typtypmod", DataType::Int32),
    ("typnotnull", DataType::Boolean),
    ("typdefault", DataType::Utf8),
    ("typarray", DataType::Int64),
    ("typdelim", DataType::Utf8),
];
const PG_VIEWS: Columns = &[
    ("viewoid", DataType::Int64),
    ("schemaname", DataType::Utf8),
    ("viewname", DataType::Utf8),
    ("definition", DataType::Utf8),
];
/// Catalogs Weir has nothing for: they exist with the columns psql and drivers read, empty.
const EMPTY: &[(&str, Columns)] = &[
    (
        "pg_am",
        &[("oid", DataType::Int64), ("amname", DataType::Utf8)],
    ),
    (
        "pg_collation",
        &[("oid", DataType::Int64), ("collname", DataType::Utf8)],
    ),
    (
        "pg_description",
        &[
            ("objoid", DataType::Int64),
            ("classoid", DataType::Int64),
            ("objsubid", DataType::Int32),
            ("description", DataType::Utf8),
        ],
    ),
    (
        "pg_inherits",
        &[
            ("inhrelid", DataType::Int64),
            ("inhparent", DataType::Int64),
            ("inhseqno", DataType::Int32),
            ("inhdetachpending", DataType::Boolean),
        ],
    ),
    (
        "pg_policy",
        &[
            ("oid", DataType::Int64),
            ("polname", DataType::Utf8),
            ("polrelid", DataType::Int64),
            ("polcmd", DataType::Utf8),
            ("polpermissive", DataType::Boolean),
            ("polroles", DataType::Utf8),
            ("polqual", DataType::Utf8),
            ("polwithcheck", DataType::Utf8),
        ],
    ),
    (
        "pg_statistic_ext",
        &[
            ("oid", DataType::Int64),
            ("stxrelid", DataType::Int64),
            ("stxname", DataType::Utf8),
            ("stxnamespace", DataType::Int64),
            ("stxkind", DataType::Utf8),
            ("stxstattarget", DataType::Int32),
        ],
    ),
    (
        "pg_publication",
        &[
            ("oid", DataType::Int64),
            ("pubname", DataType::Utf8),
            ("puballtables", DataType::Boolean),
        ],
    ),
    (
        "pg_publication_namespace",
        &[("pnpubid", DataType::Int64), ("pnnspid", DataType::Int64)],
    ),
    (
        "pg_publication_rel",
        &[
            ("prpubid", DataType::Int64),
            ("prrelid", DataType::Int64),
            ("prqual", DataType::Utf8),
            ("prattrs", DataType::Utf8),
        ],
    ),
    (
        "pg_index",
        &[
            ("indexrelid", DataType::Int64),
            ("indrelid", DataType::Int64),
            ("indisprimary", DataType::Boolean),
            ("indisunique", DataType::Boolean),
        ],
    ),
    (
        "pg_constraint",
        &[
            ("oid", DataType::Int64),
            ("conname", DataType::Utf8),
            ("conrelid", DataType::Int64),
            ("confrelid", DataType::Int64),
            ("contype", DataType::Utf8),
            ("conindid", DataType::Int64),
            ("contypid", DataType::Int64),
            ("conparentid", DataType::Int64),
        ],
    ),
    (
        "pg_trigger",
        &[
            ("oid", DataType::Int64),
            ("tgname", DataType::Utf8),
            ("tgrelid", DataType::Int64),
        ],
    ),
    (
        "pg_rewrite",
        &[
            ("oid", DataType::Int64),
            ("rulename", DataType::Utf8),
            ("ev_class", DataType::Int64),
        ],
    ),
    (
        "pg_enum",
        &[
            ("enumtypid", DataType::Int64),
            ("enumlabel", DataType::Utf8),
        ],
    ),
];

/// A catalog table's rows, column by column.
struct Table {
    columns: Columns,
    values: Vec<Vec<ScalarValue>>,
}

impl Table {
    fn new(columns: Columns) -> Table {
        Table {
            columns,
            values: vec![Vec::new(); columns.len()],
        }
    }

    fn row(&mut self, row: Vec<ScalarValue>) {
        for (column, v) in self.values.iter_mut().zip(row) {
            column.push(v);
        }
    }

    fn batch(self) -> Result<(SchemaRef, RecordBatch)> {
        let schema = Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for ((_, t), values) in self.columns.iter().zip(self.values) {
            let array = match values.is_empty() {
                true => datafusion::arrow::array::new_empty_array(t),
                false => ScalarValue::iter_to_array(values).map_err(from_datafusion)?,
            };
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| SqlError::Execution(format!("pg_catalog: {e}")))?;
        Ok((schema, batch))
    }
}

fn text(s: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(s.to_string()))
}

fn int(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}

fn int32(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}

fn boolean(b: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(b))
}

/// Registers (or replaces) schema `pg_catalog` with tables describing `relations`, and the
/// functions catalog queries call (once per context).
pub(crate) fn install(ctx: &SessionContext, relations: &[Described<'_>]) -> Result<()> {
    let schema = Arc::new(MemorySchemaProvider::new());
    let mut tables: Vec<(&str, Table)> = vec![("pg_namespace", namespaces()), ("pg_type", types())];
    let mut class = Table::new(PG_CLASS);
    let mut attribute = Table::new(PG_ATTRIBUTE);
    let mut attrdef = Table::new(PG_ATTRDEF);
    let mut views = Table::new(PG_VIEWS);
    for d in relations {
        let rel = d.relation;
        let oid = relation_oid(&rel.name);
        let kind = match rel.kind {
            RelationKind::View => "m",
            _ => "r",
        };
        let columns: Vec<&Field> = d
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| !crate::format::META_COLUMNS.contains(&f.name().as_str()))
            .collect();
        class.row(vec![
            int(oid),
            text(&rel.name),
            int(NAMESPACE_PUBLIC),
            text(kind),
            int(OWNER),
            int(0),
            int32(0),
            boolean(false),
            boolean(false),
            boolean(false),
            boolean(false),
            boolean(false),
            boolean(false),
            int(0),
            int(0),
            text("p"),
            text("d"),
            int(0),
            int32(columns.len() as i32),
            ScalarValue::Utf8(None),
        ]);
        for (i, f) in columns.iter().enumerate() {
            let (type_oid, _) = pg_type_of(f.data_type());
            let computed = rel
                .columns
                .iter()
                .find(|c| &c.name == f.name())
                .and_then(|c| c.computed.clone());
            let attnum = i as i32 + 1;
            attribute.row(vec![
                int(oid),
                text(f.name()),
                int(type_oid),
                int32(-1),
                int32(attnum),
                boolean(rel.primary_key.contains(f.name())),
                boolean(computed.is_some()),
                boolean(false),
                int(0),
                text(""),
                text(if computed.is_some() { "s" } else { "" }),
                text("p"),
                text(""),
                int32(-1),
            ]);
            if let Some(expr) = computed {
                attrdef.row(vec![int(oid), int(oid), int32(attnum), text(&expr)]);
            }
        }
        if let Some(q) = rel.query.as_deref().filter(|_| kind == "m") {
            views.row(vec![int(oid), text("public"), text(&rel.name), text(q)]);
        }
    }
    tables.extend([
        ("pg_class", class),
        ("pg_attribute", attribute),
        ("pg_attrdef", attrdef),
        ("pg_views", views),
    ]);
    tables.extend(
        EMPTY
            .iter()
            .map(|(name, columns)| (*name, Table::new(columns))),
    );
    for (name, table) in tables {
        let (s, batch) = table.batch()?;
        let mem = MemTable::try_new(s, vec![vec![batch]]).map_err(from_datafusion)?;
        schema
            .register_table(name.to_string(), Arc::new(mem))
            .map_err(from_datafusion)?;
    }
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| SqlError::Execution("pg_catalog: no default catalog".into()))?;
    catalog
        .register_schema(SCHEMA, schema)
        .map_err(from_datafusion)?;
    if ctx.udf("pg_table_is_visible").is_err() {
        for f in functions::PgFunction::ALL {
            ctx.register_udf(ScalarUDF::from(f));
        }
    }
    Ok(())
}

fn namespaces() -> Table {
    let mut t = Table::new(PG_NAMESPACE);
    for (oid, name) in [
        (NAMESPACE_PG_CATALOG, SCHEMA),
        (NAMESPACE_PUBLIC, "public"),
        (NAMESPACE_INFORMATION_SCHEMA, "information_schema"),
    ] {
        t.row(vec![int(oid), text(name), int(OWNER)]);
    }
    t
}

fn types() -> Table {
    let mut t = Table::new(PG_TYPE);
    for (oid, name) in TYPES {
        t.row(vec![
            int(oid),
            text(name),
            int(NAMESPACE_PG_CATALOG),
            text("b"),
            int(if oid == 25 { 100 } else { 0 }),
            int(0),
            int32(-1),
            boolean(false),
            ScalarValue::Utf8(None),
            int(0),
            text(","),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_depend_on_the_name_only() {
        assert_eq!(relation_oid("bids"), relation_oid("bids"));
        assert_ne!(relation_oid("bids"), relation_oid("bid"));
        assert!(relation_oid("x") >= FIRST_USER_OID);
    }
}
