//! Push requests: `SUBSCRIBE [TO] name` and `SELECT … EMIT CHANGES`, whose rows come as the
//! result changes rather than once (see [`Subscription`] for the rows).
//!
//! A push query runs as a *transient* persistent query, as ksqlDB runs its push queries: a
//! sink named `_push_N` (catalog option `transient`) that writes the query's rows — change
//! rows with their `op` for an updating query — to a topic of its own, read by a subscription
//! from that topic's start. So a push query is the query's result over what its inputs hold,
//! then its changes as they come (Materialize's SUBSCRIBE with its snapshot), with every
//! operator the persistent queries have: windows, aggregates, joins, exactly once.
//!
//! Invariants: a transient query lives as long as its subscription. Dropping the
//! subscription drops the sink, its offsets, state and topic; one left behind by a crash is
//! dropped, not resumed, when the queries of the data directory next start.

use std::collections::BTreeMap;

use crate::catalog::{Column, Relation};
use crate::error::{Result, SqlError};
use crate::format::Format;
use crate::parser::{parse, EmitMode, RelationKind, WeirStatement};
use crate::session::Session;
use crate::stream::SinkTarget;
use crate::subscribe::Subscription;

/// The catalog option that marks a push query's sink.
pub(crate) const TRANSIENT_OPTION: &str = "transient";

/// The prefix of push queries' names (a name the user cannot give: it starts with `_`).
const PUSH_NAME_PREFIX: &str = "_push_";

/// The column a push query's change rows carry their operation in.
const OP_COLUMN: &str = "op";

/// What a push request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRequest {
    /// `SUBSCRIBE [TO] name`: a relation's changes.
    Subscribe(String),
    /// `SELECT … EMIT CHANGES`: a query's result, then its changes (the statement's text).
    Query(String),
}

impl PushRequest {
    /// The push request `sql` (one statement) makes, if it is one. A statement that does not
    /// parse is not one (running it reports the syntax error).
    pub fn parse(sql: &str) -> Option<PushRequest> {
        let s = sql.trim().trim_end_matches(';').trim();
        let mut words = s.split_whitespace();
        let first = words.next()?;
        if first.eq_ignore_ascii_case("subscribe") {
            let mut name = words.next()?;
            if name.eq_ignore_ascii_case("to") {
                name = words.next()?;
            }
            if words.next().is_some() {
                return None;
            }
            let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                Some(quoted) => quoted.to_string(),
                None => name.to_ascii_lowercase(),
            };
            return Some(PushRequest::Subscribe(name));
        }
        let lower = s.to_ascii_lowercase();
        if !lower.ends_with("changes") || !lower.contains("emit") {
            return None;
        }
        match parse(s).ok()?.as_slice() {
            [WeirStatement::Push(_)] => Some(PushRequest::Query(s.to_string())),
            _ => None,
        }
    }
}

/// A push query's sink, dropped when the subscription reading it goes.
pub(crate) struct TransientQuery {
    name: String,
    session: Session,
}

impl std::fmt::Debug for TransientQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransientQuery")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for TransientQuery {
    fn drop(&mut self) {
        let ddl = self.session.ddl.clone();
        let _changing = ddl.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.session.drop_transient(&self.name) {
            tracing::warn!(query = %self.name, error = %e, "a push query was not dropped");
        }
    }
}

impl Session {
    /// Starts a push request: a relation's subscription, or a push query's.
    pub fn push(&mut self, request: &PushRequest) -> Result<Subscription> {
        match request {
            PushRequest::Subscribe(name) => self.subscribe(name),
            PushRequest::Query(sql) => self.push_query(sql),
        }
    }

    /// `SELECT … EMIT CHANGES`: starts the query as a transient sink and subscribes to it.
    fn push_query(&mut self, sql: &str) -> Result<Subscription> {
        let mut statements = parse(sql)?;
        let query = match (statements.len(), statements.pop()) {
            (1, Some(WeirStatement::Push(s))) => match *s {
                datafusion::sql::sqlparser::ast::Statement::Query(q) => *q,
                other => {
                    return Err(SqlError::plan(
                        format!("EMIT CHANGES follows a query, not `{other}`"),
                        None,
                    ))
                }
            },
            _ => {
                return Err(SqlError::plan(
                    "a push query is one `SELECT … EMIT CHANGES` statement",
                    None,
                ))
            }
        };
        if self.engine.is_none() {
            return Err(SqlError::unsupported(
                "a push query in a read-only session (it runs on the engine; run it through \
                 the `weir serve` that holds the data directory)",
                None,
            ));
        }
        let rel = {
            let ddl = self.ddl.clone();
            let _changing = ddl.lock().unwrap_or_else(|p| p.into_inner());
            self.catalog.refresh()?;
            self.start_push_query(query)?
        };
        let guard = TransientQuery {
            name: rel.name.clone(),
            session: self.sibling()?,
        };
        Subscription::open_transient(&self.log, &rel, guard)
    }

    /// Compiles the query into a transient sink, writes its catalog entry and runs it.
    fn start_push_query(
        &mut self,
        query: datafusion::sql::sqlparser::ast::Query,
    ) -> Result<Relation> {
        let name = self.push_name();
        let topic = push_topic(&name);
        let text = query.to_string();
        let sink = SinkTarget::Topic {
            topic: topic.clone(),
            format: Format::Json,
            key: Vec::new(),
            upsert: false,
        };
        let compiled = self.compile_query(query, None, sink, Some(EmitMode::Changes))?;
        let mut columns = crate::queries::value_columns(compiled.output());
        if let Some(c) = columns.iter().find(|c| c.name == OP_COLUMN) {
            return Err(SqlError::plan(
                format!(
                    "a push query's rows carry their change in a column `{OP_COLUMN}`; rename \
                     the query's column `{}` (… AS another_name)",
                    c.name
                ),
                None,
            ));
        }
        columns.push(Column {
            name: OP_COLUMN.into(),
            sql_type: Some("TEXT".into()),
            computed: None,
        });
        self.ensure_sink_topic(&topic, &BTreeMap::new(), false)?;
        let mut options = BTreeMap::new();
        options.insert(TRANSIENT_OPTION.to_string(), "true".to_string());
        options.insert("emit".into(), "changes".into());
        let rel = Relation {
            name,
            kind: RelationKind::Sink,
            columns,
            primary_key: Vec::new(),
            watermark: None,
            topic,
            format: Format::Json,
            options,
            query: Some(text),
        };
        self.catalog.put(rel.clone())?;
        if let Err(e) = self.run_compiled(&rel, compiled) {
            let _ = self.drop_transient(&rel.name);
            return Err(e);
        }
        Ok(rel)
    }

    /// A name no relation has.
    fn push_name(&self) -> String {
        let mut n = self
            .catalog
            .relations()
            .filter(|r| r.name.starts_with(PUSH_NAME_PREFIX))
            .count()
            + 1;
        while self
            .catalog
            .get(&format!("{PUSH_NAME_PREFIX}{n}"))
            .is_some()
        {
            n += 1;
        }
        format!("{PUSH_NAME_PREFIX}{n}")
    }

    /// Drops a push query's sink and its topic (the caller holds the lock on catalog
    /// changes).
    pub(crate) fn drop_transient(&mut self, name: &str) -> Result<()> {
        self.catalog.refresh()?;
        let topic = self.catalog.get(name).map(|r| r.topic.clone());
        self.drop_relation(RelationKind::Sink, name, None, true)?;
        if let Some(topic) = topic {
            match self.log.delete_topic(&topic) {
                Ok(()) | Err(weir_log::LogError::UnknownTopic(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Whether a catalog entry is a push query's sink.
pub(crate) fn is_transient(rel: &Relation) -> bool {
    rel.options.contains_key(TRANSIENT_OPTION)
}

/// The topic of a push query's rows.
fn push_topic(name: &str) -> String {
    format!("__weir_push.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_requests_are_subscriptions_and_queries_emitting_changes() {
        let sub = |n: &str| Some(PushRequest::Subscribe(n.into()));
        assert_eq!(PushRequest::parse("SUBSCRIBE TO Stats;"), sub("stats"));
        assert_eq!(PushRequest::parse("subscribe \"Stats\""), sub("Stats"));
        assert_eq!(PushRequest::parse("SUBSCRIBE TO a b"), None);
        assert_eq!(PushRequest::parse("SELECT 1"), None);
        let q = "SELECT a FROM s WHERE a > 1 EMIT CHANGES";
        assert_eq!(
            PushRequest::parse(&format!("  {q} ;")),
            Some(PushRequest::Query(q.into()))
        );
        // A persistent query's EMIT is not a push.
        assert_eq!(
            PushRequest::parse("CREATE SINK k AS SELECT a FROM s EMIT CHANGES"),
            None
        );
        assert_eq!(PushRequest::parse("SELECT (1 + EMIT CHANGES"), None);
    }
}
