//! The catalog statements: `CREATE STREAM|TABLE` (validated whole — types, keys, watermark,
//! options, computed columns — before its topic is created or the catalog changes), `DROP`,
//! `SHOW STREAMS|TABLES` and `DESCRIBE`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use weir_log::TopicConfig;

use crate::catalog::{Column, Relation, Watermark};
use crate::error::{At, Position, Result, SqlError};
use crate::format::{Format, META_COLUMNS};
use crate::parser::{ColumnSource, CreateRelation, RelationKind, ShowWhat};
use crate::session::{Outcome, Output, Session};
use crate::types::{arrow_type, sql_name};

/// Options `CREATE STREAM|TABLE` understands.
const OPTIONS: &[&str] = &["connector", "topic", "format", "partitions"];

/// Most partitions a created topic may have (the log opens a writer per partition).
const PARTITIONS_MAX: u32 = 10_000;

impl Session {
    pub(crate) fn create(&mut self, c: CreateRelation) -> Result<Outcome> {
        let tag = format!("CREATE {}", c.kind.name().to_uppercase());
        if let Some(existing) = self.catalog.get(&c.name) {
            if c.if_not_exists {
                return Ok(Outcome::status(tag).notice(format!(
                    "{} `{}` already exists; nothing done",
                    existing.kind.name(),
                    c.name
                )));
            }
            return Err(SqlError::Exists {
                name: c.name.clone(),
                kind: existing.kind.name(),
                at: At(c.at),
            });
        }
        if c.options
            .iter()
            .any(|(k, v)| k == "connector" && v.eq_ignore_ascii_case("postgres-cdc"))
        {
            return self.create_cdc_source(&c);
        }
        let options = options(&c.options)?;
        let partitions = partitions(&options)?;
        let rel = relation(&c, &options)?;
        // Plans the computed columns and the watermark against the relation's own columns.
        let provider = self.provider_with(&rel, 0)?;
        if let Some(w) = &rel.watermark {
            self.check_watermark(w, &provider.schema(), c.at)?;
        }
        let mut notices = Vec::new();
        if rel.connector() == "datagen" {
            if rel.kind != RelationKind::Stream {
                return Err(SqlError::plan(
                    "a datagen source is a stream: use CREATE STREAM",
                    c.at,
                ));
            }
            rel.datagen()?;
            self.catalog.put(rel)?;
            return Ok(Outcome::status(tag));
        }
        match self.log.partition_count(&rel.topic) {
            Ok(n) => {
                if partitions.is_some_and(|p| p != n) {
                    notices.push(format!(
                        "topic `{}` exists with {n} partition(s); `partitions` is ignored",
                        rel.topic
                    ));
                }
            }
            Err(weir_log::LogError::UnknownTopic(_)) => {
                let config = match rel.kind {
                    RelationKind::Table => TopicConfig::parse_pairs(&["cleanup.policy=compact"])?,
                    RelationKind::Stream | RelationKind::Sink | RelationKind::View => {
                        Default::default()
                    }
                };
                self.log
                    .create_topic(&rel.topic, partitions.unwrap_or(1), config)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.catalog.put(rel)?;
        let mut outcome = Outcome::status(tag);
        outcome.notices = notices;
        Ok(outcome)
    }

    fn check_watermark(
        &self,
        w: &Watermark,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        at: Option<Position>,
    ) -> Result<()> {
        let field = schema.field_with_name(&w.column).map_err(|_| {
            SqlError::plan(format!("WATERMARK FOR `{}`: no such column", w.column), at)
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(..)) {
            return Err(SqlError::plan(
                format!(
                    "WATERMARK FOR `{}`: the event-time column must be a TIMESTAMP, not {}",
                    w.column,
                    sql_name(field.data_type())
                ),
                at,
            ));
        }
        let df =
            DFSchema::try_from(schema.as_ref().clone()).map_err(crate::error::from_datafusion)?;
        self.ctx
            .parse_sql_expr(&w.expr, &df)
            .map_err(crate::error::from_datafusion)?;
        Ok(())
    }

    pub(crate) fn drop_relation(
        &mut self,
        kind: RelationKind,
        name: &str,
        at: Option<Position>,
        if_exists: bool,
    ) -> Result<Outcome> {
        let tag = format!("DROP {}", kind.name().to_uppercase());
        let Some(rel) = self.catalog.get(name) else {
            if if_exists {
                return Ok(
                    Outcome::status(tag).notice(format!("`{name}` does not exist; nothing done"))
                );
            }
            return Err(self
                .relation(name, at)
                .err()
                .unwrap_or(SqlError::UnknownRelation {
                    kind: kind.name(),
                    name: name.to_string(),
                    at: At(at),
                    hint: crate::error::Hint(None),
                }));
        };
        // `DROP SOURCE` of a CDC source (kept as a persistent query).
        let kind = match (kind, crate::cdc_source::is_cdc(&rel.options)) {
            (RelationKind::Stream, true) => RelationKind::Sink,
            (k, _) => k,
        };
        if rel.kind != kind {
            return Err(SqlError::plan(
                format!(
                    "`{name}` is a {}; use DROP {}",
                    rel.kind.name(),
                    rel.kind.name().to_uppercase()
                ),
                at,
            ));
        }
        let topic = rel.topic.clone();
        let generated = rel.connector() == "datagen";
        let users: Vec<String> = self
            .catalog
            .relations()
            .filter(|r| matches!(r.kind, RelationKind::Sink | RelationKind::View))
            .filter(|r| r.name != name)
            .filter(|r| {
                r.options.get("into").is_some_and(|i| i == name)
                    || r.query.as_deref().is_some_and(|q| mentions(q, name))
            })
            .map(|r| r.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(SqlError::plan(
                format!(
                    "`{name}` is used by persistent quer{} {}; drop {} first (DROP SINK)",
                    if users.len() == 1 { "y" } else { "ies" },
                    users.join(", "),
                    if users.len() == 1 { "it" } else { "them" }
                ),
                at,
            ));
        }
        let mut notices = Vec::new();
        if matches!(kind, RelationKind::Sink | RelationKind::View) {
            notices = self.drop_sink(name)?;
        }
        self.catalog.remove(name)?;
        let _ = self.ctx.deregister_table(name);
        let mut outcome = Outcome::status(tag);
        outcome.notices = notices;
        if !generated && !topic.is_empty() && kind != RelationKind::View {
            outcome = outcome.notice(format!(
                "topic `{topic}` and its records are kept (`weir topic delete {topic}` removes them)"
            ));
        }
        Ok(outcome)
    }

    pub(crate) fn show(&self, what: ShowWhat) -> Result<Outcome> {
        let kind = match what {
            ShowWhat::Streams => RelationKind::Stream,
            ShowWhat::Tables => RelationKind::Table,
            ShowWhat::Queries => return self.show_queries(false),
            ShowWhat::Views => return self.show_queries(true),
        };
        let rels: Vec<&Relation> = self
            .catalog
            .relations()
            .filter(|r| r.kind == kind)
            .collect();
        let partitions: Int64Array = rels
            .iter()
            .map(|r| r.partitions(&self.log).ok().map(i64::from))
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("name", strings(rels.iter().map(|r| r.name.clone()))),
            (
                "topic",
                strings(rels.iter().map(|r| match r.connector().as_str() {
                    "datagen" => "(datagen)".to_string(),
                    _ => r.topic.clone(),
                })),
            ),
            (
                "format",
                strings(
                    rels.iter()
                        .map(|r| format!("{:?}", r.format).to_lowercase()),
                ),
            ),
            ("partitions", Arc::new(partitions)),
            (
                "primary_key",
                strings(rels.iter().map(|r| r.primary_key.join(", "))),
            ),
        ];
        rows(columns)
    }

    pub(crate) fn describe(&self, name: &str, at: Option<Position>) -> Result<Outcome> {
        let rel = self.relation(name, at)?.clone();
        let schema = self.provider_with(&rel, 0)?.schema();
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut keys = Vec::new();
        let mut exprs = Vec::new();
        for f in schema.fields() {
            let declared = rel.columns.iter().find(|c| &c.name == f.name());
            names.push(f.name().clone());
            types.push(sql_name(f.data_type()));
            keys.push(
                if rel.primary_key.contains(f.name()) {
                    "PRIMARY KEY"
                } else {
                    ""
                }
                .to_string(),
            );
            exprs.push(match declared {
                Some(c) => c.computed.clone().unwrap_or_default(),
                None if META_COLUMNS.contains(&f.name().as_str()) => "(record metadata)".into(),
                None => String::new(),
            });
        }
        let mut outcome = rows(vec![
            ("column", strings(names.into_iter())),
            ("type", strings(types.into_iter())),
            ("key", strings(keys.into_iter())),
            ("expression", strings(exprs.into_iter())),
        ])?;
        let partitions = rel.partitions(&self.log).unwrap_or(0);
        let watermark = rel
            .watermark
            .as_ref()
            .map_or("none (event time is `_timestamp`)".to_string(), |w| {
                format!("`{}` AS {}", w.column, w.expr)
            });
        outcome.notices.push(format!(
            "{} `{}`: topic `{}` ({partitions} partition(s)), format {}, watermark {watermark}",
            rel.kind.name(),
            rel.name,
            rel.topic,
            format!("{:?}", rel.format).to_lowercase(),
        ));
        Ok(outcome)
    }
}

/// Whether a query's text names `relation` (as a word): such a relation may not be dropped
/// while the query exists.
fn mentions(query: &str, relation: &str) -> bool {
    let words = query
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .map(|w| w.trim_matches('.'));
    words.into_iter().any(|w| w.eq_ignore_ascii_case(relation))
}

/// A `WITH` key that is none of `known`, with the closest as a hint (a typo must not be
/// ignored).
pub(crate) fn unknown_option(key: &str, known: &[&str]) -> SqlError {
    let hint = crate::error::closest(key, known.iter().copied())
        .map(|c| format!("did you mean `{c}`? "))
        .unwrap_or_default();
    SqlError::option(
        key,
        format!("unknown option; {hint}known: {}", known.join(", ")),
    )
}

/// The `WITH` options as a map, refusing unknown keys (a typo must not be ignored).
fn options(given: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let datagen = given
        .iter()
        .any(|(k, v)| k == "connector" && v.eq_ignore_ascii_case("datagen"));
    for (k, v) in given {
        let generator_option = datagen
            && (crate::datagen::DATAGEN_OPTIONS.contains(&k.as_str()) || k.starts_with("fields."));
        if !OPTIONS.contains(&k.as_str()) && !generator_option {
            return Err(unknown_option(k, OPTIONS));
        }
        out.insert(k.clone(), v.clone());
    }
    match out.get("connector").map(|c| c.to_ascii_lowercase()) {
        None => {}
        Some(c) if c == "topic" || c == "kafka" || c == "datagen" => {}
        Some(c) => {
            return Err(SqlError::option(
                "connector",
                format!("`{c}`: a stream or table reads `topic` or `datagen`"),
            ))
        }
    }
    Ok(out)
}

pub(crate) fn partitions(options: &BTreeMap<String, String>) -> Result<Option<u32>> {
    let Some(p) = options.get("partitions") else {
        return Ok(None);
    };
    match p.parse::<u32>() {
        Ok(n) if (1..=PARTITIONS_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(SqlError::option(
            "partitions",
            format!("`{p}`: a whole number from 1 to {PARTITIONS_MAX}"),
        )),
    }
}

/// Validates a `CREATE` and builds the catalog entry.
fn relation(c: &CreateRelation, options: &BTreeMap<String, String>) -> Result<Relation> {
    let mut columns = Vec::with_capacity(c.columns.len());
    let mut stored = Vec::new();
    for col in &c.columns {
        if META_COLUMNS.contains(&col.name.as_str()) {
            return Err(SqlError::plan(
                format!("column `{}` is reserved for record metadata", col.name),
                col.at,
            ));
        }
        if columns.iter().any(|x: &Column| x.name == col.name) {
            return Err(SqlError::plan(
                format!("column `{}` is declared twice", col.name),
                col.at,
            ));
        }
        columns.push(match &col.source {
            ColumnSource::Stored(t) => {
                stored.push(Field::new(&col.name, arrow_type(t, col.at)?, true));
                Column {
                    name: col.name.clone(),
                    sql_type: Some(t.to_string()),
                    computed: None,
                }
            }
            ColumnSource::Computed(e) => Column {
                name: col.name.clone(),
                sql_type: None,
                computed: Some(e.to_string()),
            },
        });
    }
    if stored.is_empty() {
        return Err(SqlError::plan(
            format!("`{}` declares no stored column", c.name),
            c.at,
        ));
    }
    let primary_key = primary_key(c, &columns)?;
    let format = Format::parse(options.get("format").map_or("json", String::as_str))?;
    format.check(&Schema::new(stored))?;
    Ok(Relation {
        name: c.name.clone(),
        kind: c.kind,
        columns,
        primary_key,
        watermark: c.watermark.as_ref().map(|(column, e)| Watermark {
            column: column.clone(),
            expr: e.to_string(),
        }),
        topic: options
            .get("topic")
            .cloned()
            .unwrap_or_else(|| c.name.clone()),
        format,
        options: options.clone(),
        query: None,
    })
}

fn primary_key(c: &CreateRelation, columns: &[Column]) -> Result<Vec<String>> {
    let inline: Vec<String> = c
        .columns
        .iter()
        .filter(|x| x.primary_key)
        .map(|x| x.name.clone())
        .collect();
    let key = match (inline.is_empty(), c.primary_key.is_empty()) {
        (true, true) => Vec::new(),
        (false, true) => inline,
        (true, false) => c.primary_key.clone(),
        (false, false) => {
            return Err(SqlError::plan(
                "declare the primary key once: inline or as PRIMARY KEY (…)",
                c.at,
            ))
        }
    };
    match c.kind {
        RelationKind::Table if key.is_empty() => {
            return Err(SqlError::plan(
                format!(
                    "table `{}` needs a PRIMARY KEY (a table holds the latest row per key)",
                    c.name
                ),
                c.at,
            ))
        }
        RelationKind::Stream if !key.is_empty() => {
            return Err(SqlError::plan(
                "a stream has no primary key; use CREATE TABLE for the latest row per key",
                c.at,
            ))
        }
        _ => {}
    }
    for k in &key {
        let stored = columns.iter().any(|x| &x.name == k && x.sql_type.is_some());
        if !stored {
            return Err(SqlError::plan(
                format!("primary key column `{k}` is not a stored column"),
                c.at,
            ));
        }
    }
    Ok(key)
}

fn strings(values: impl Iterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// A result of named columns.
pub(crate) fn rows(columns: Vec<(&str, ArrayRef)>) -> Result<Outcome> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| SqlError::Execution(e.to_string()))?;
    let mut outcome = Outcome::status("");
    outcome.output = Output::Rows {
        schema,
        batches: vec![batch],
    };
    Ok(outcome)
}
