//! The catalog: every stream and table a user created, persisted in the log as the compacted
//! internal topic `__weir_catalog` (one record per name, JSON; a tombstone on DROP), so it
//! survives restarts and any process that opens the data directory sees the same names.
//!
//! Invariant: the in-memory map changes only after the record that says so is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::{Deserialize, Serialize};
use weir_log::{Isolation, Log, LogError, Offset, PartitionId, Record, TopicConfig};

use crate::datagen::Datagen;
use crate::error::{Result, SqlError};
use crate::format::Format;
use crate::parser::RelationKind;
use crate::types::arrow_type;

/// The catalog's internal topic.
pub const CATALOG_TOPIC: &str = "__weir_catalog";

/// One column of a relation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// The declared SQL type of a stored column (as SQL text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_type: Option<String>,
    /// The expression of a computed column (as SQL text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed: Option<String>,
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The event-time column.
    pub column: String,
    /// The watermark expression, as SQL text.
    pub expr: String,
}

/// A stream or table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// Name.
    pub name: String,
    /// Stream or table.
    pub kind: RelationKind,
    /// Columns in declared order.
    pub columns: Vec<Column>,
    /// Primary key columns (tables).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Event time and watermark, when declared.
    #[serde(default)]
    pub watermark: Option<Watermark>,
    /// The topic holding its records.
    pub topic: String,
    /// Record format.
    pub format: Format,
    /// Every `WITH` option as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// A sink's query (SQL text), run continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Relation {
    /// The columns that key its rows: a table's primary key, or a view's group columns
    /// (when they reach its output as themselves); empty when there are none.
    pub fn key_names(&self) -> Vec<String> {
        if !self.primary_key.is_empty() {
            return self.primary_key.clone();
        }
        match self.options.get(crate::pull::KEY_COLUMNS_OPTION) {
            Some(names) => names.split(',').map(str::to_string).collect(),
            None => Vec::new(),
        }
    }

    /// The stored (decoded) columns as an Arrow schema; every column is nullable.
    pub fn stored_schema(&self) -> Result<SchemaRef> {
        let dialect = GenericDialect {};
        let mut fields = Vec::new();
        for c in &self.columns {
            let Some(t) = &c.sql_type else { continue };
            let parsed = Parser::new(&dialect)
                .try_with_sql(t)
                .and_then(|mut p| p.parse_data_type())
                .map_err(|e| SqlError::CorruptCatalog {
                    name: self.name.clone(),
                    reason: format!("type `{t}` of `{}`: {e}", c.name),
                })?;
            fields.push(Field::new(&c.name, arrow_type(&parsed, None)?, true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The connector, lower-cased: `topic` (the default), `datagen`, `blackhole`.
    pub fn connector(&self) -> String {
        match self
            .options
            .get("connector")
            .map(|c| c.to_ascii_lowercase())
        {
            None => "topic".into(),
            Some(c) if c == "kafka" => "topic".into(),
            Some(c) => c,
        }
    }

    /// A `datagen` stream's generator.
    pub fn datagen(&self) -> Result<Option<Datagen>> {
        if self.connector() != "datagen" || self.kind == RelationKind::Sink {
            return Ok(None);
        }
        let partitions = match self.options.get("partitions") {
            Some(p) => p.parse().map_err(|_| SqlError::CorruptCatalog {
                name: self.name.clone(),
                reason: format!("partitions `{p}`"),
            })?,
            None => 1,
        };
        Datagen::from_options(&self.options, &self.stored_schema()?, partitions).map(Some)
    }

    /// Its partitions: its topic's, or its generator's.
    pub fn partitions(&self, log: &Log) -> Result<u32> {
        match self.datagen()? {
            Some(g) => Ok(g.partitions),
            None => Ok(log.partition_count(&self.topic)?),
        }
    }

    /// The type of a stored column, if it is one.
    pub fn stored_type(&self, column: &str) -> Result<Option<DataType>> {
        Ok(self
            .stored_schema()?
            .field_with_name(column)
            .ok()
            .map(|f| f.data_type().clone()))
    }
}

/// The catalog over a log.
///
/// Every session holds its own copy and catches up with the catalog topic before each
/// statement ([`Catalog::refresh`]), so what one session creates, the others see.
#[derive(Debug)]
pub struct Catalog {
    log: Log,
    relations: BTreeMap<String, Relation>,
    /// The catalog topic's next offset to read.
    next: Offset,
}

impl Catalog {
    /// Loads the catalog (creating its topic on a writable log).
    pub fn open(log: &Log) -> Result<Catalog> {
        if !log.is_read_only() {
            let cfg = TopicConfig::parse_pairs(&["cleanup.policy=compact"])?;
            log.ensure_topic(CATALOG_TOPIC, 1, cfg)?;
        }
        let mut catalog = Catalog {
            log: log.clone(),
            relations: BTreeMap::new(),
            next: Offset(0),
        };
        match log.partition_count(CATALOG_TOPIC) {
            Ok(_) => {
                catalog.next = log.earliest_offset(CATALOG_TOPIC, PartitionId(0))?;
                catalog.refresh()?;
            }
            Err(LogError::UnknownTopic(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(catalog)
    }

    /// Applies what other sessions wrote to the catalog since this one last read it.
    pub fn refresh(&mut self) -> Result<()> {
        let p = PartitionId(0);
        if self.log.last_stable_offset(CATALOG_TOPIC, p)? <= self.next {
            return Ok(());
        }
        let relations = &mut self.relations;
        self.next = self.log.for_each_record(
            CATALOG_TOPIC,
            p,
            self.next,
            Isolation::ReadCommitted,
            |r| {
                let name = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
                match r.value {
                    None => {
                        relations.remove(&name);
                    }
                    Some(v) => {
                        let rel: Relation =
                            serde_json::from_slice(v).map_err(|e| SqlError::CorruptCatalog {
                                name: name.clone(),
                                reason: e.to_string(),
                            })?;
                        relations.insert(name, rel);
                    }
                }
                Ok::<(), SqlError>(())
            },
        )?;
        Ok(())
    }

    /// A relation by name.
    pub fn get(&self, name: &str) -> Option<&Relation> {
        self.relations.get(name)
    }

    /// Every relation, by name.
    pub fn relations(&self) -> impl Iterator<Item = &Relation> {
        self.relations.values()
    }

    /// Every name, for "did you mean" hints.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.relations.keys().map(String::as_str)
    }

    /// Durably adds (or replaces) a relation.
    pub fn put(&mut self, rel: Relation) -> Result<()> {
        let value = serde_json::to_vec(&rel).map_err(|e| SqlError::CorruptCatalog {
            name: rel.name.clone(),
            reason: e.to_string(),
        })?;
        self.log.append(
            CATALOG_TOPIC,
            PartitionId(0),
            &[Record::keyed(rel.name.clone(), value)],
        )?;
        self.relations.insert(rel.name.clone(), rel);
        Ok(())
    }

    /// Durably removes a relation.
    pub fn remove(&mut self, name: &str) -> Result<Option<Relation>> {
        if !self.relations.contains_key(name) {
            return Ok(None);
        }
        self.log.append(
            CATALOG_TOPIC,
            PartitionId(0),
            &[Record::tombstone(bytes::Bytes::copy_from_slice(
                name.as_bytes(),
            ))],
        )?;
        Ok(self.relations.remove(name))
    }
}
