//! The dialect's parser: DataFusion's SQL parser (sqlparser) for everything it knows, and our
//! own statements where it has none — `CREATE STREAM`, `CREATE TABLE … WITH (topic …)` with
//! `WATERMARK FOR` and computed columns, `SHOW STREAMS|TABLES`, `DESCRIBE`, `DROP STREAM|TABLE`
//! and `INSERT INTO … {VALUES | query}` — parsed with the same tokenizer, so every error
//! carries the line and column of the token it is about.
//!
//! Flink's window call spelling and `EMIT` clauses are handled on the tokens first
//! (`tokens.rs`); `CREATE SINK … AS query WITH (…)` finds its options before parsing the query.
//!
//! Invariant: a script is parsed whole before anything runs, so a syntax error in its third
//! statement runs none of it.

use datafusion::sql::sqlparser::ast::{DataType, Expr, Ident, ObjectName, Query, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::{At, Position, Result, SqlError};

mod tokens;
pub use tokens::WINDOW_FUNCTIONS;
use tokens::{emit_clauses, query_before_options, window_call_syntax, with_emit};

/// Longest statement (script) accepted: a statement is held and re-tokenized whole.
pub const STATEMENT_BYTES_MAX: usize = 1024 * 1024;

/// Streams are append-only; tables hold the latest row per primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationKind {
    /// `CREATE STREAM`.
    Stream,
    /// `CREATE TABLE`.
    Table,
    /// `CREATE SINK` or `INSERT INTO … SELECT`: a persistent query writing somewhere.
    Sink,
    /// `CREATE MATERIALIZED VIEW`: a persistent query whose result is queryable.
    View,
}

impl RelationKind {
    /// `stream` or `table`.
    pub fn name(self) -> &'static str {
        match self {
            RelationKind::Stream => "stream",
            RelationKind::Table => "table",
            RelationKind::Sink => "sink",
            RelationKind::View => "materialized view",
        }
    }
}

/// One column of a `CREATE STREAM|TABLE`.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// Its name.
    pub name: String,
    /// A stored column's type, or a computed column's expression.
    pub source: ColumnSource,
    /// Declared `PRIMARY KEY` inline.
    pub primary_key: bool,
    /// Where it is declared.
    pub at: Option<Position>,
}

/// Where a column's values come from.
#[derive(Debug, Clone)]
pub enum ColumnSource {
    /// Decoded from the record.
    Stored(DataType),
    /// `name AS expr`, computed from the other columns.
    Computed(Box<Expr>),
}

/// `CREATE STREAM|TABLE`.
#[derive(Debug, Clone)]
pub struct CreateRelation {
    /// Stream or table.
    pub kind: RelationKind,
    /// Its name (lower-cased unless quoted, as SQL does).
    pub name: String,
    /// Where the name is.
    pub at: Option<Position>,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// Columns in order.
    pub columns: Vec<ColumnSpec>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(String, Expr)>,
    /// `PRIMARY KEY (a, b)` constraint columns.
    pub primary_key: Vec<String>,
    /// `WITH (key = value, …)`, keys lower-cased, values as text.
    pub options: Vec<(String, String)>,
}

/// What `SHOW` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowWhat {
    /// `SHOW STREAMS`.
    Streams,
    /// `SHOW TABLES`.
    Tables,
    /// `SHOW SINKS` or `SHOW QUERIES`: persistent queries.
    Queries,
    /// `SHOW MATERIALIZED VIEWS`.
    Views,
}

/// `EMIT …` after a query: when a continuous query's results are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitMode {
    /// `EMIT CHANGES` (the default): every change of a result, as change rows.
    Changes,
    /// `EMIT ON WINDOW CLOSE` (or ksqlDB's `EMIT FINAL`): one final row per window.
    OnWindowClose,
}

/// What a sink reads.
#[derive(Debug, Clone)]
pub enum SinkSource {
    /// `FROM relation`.
    From(String, Option<Position>),
    /// `AS query`.
    Query(Box<Query>),
}

/// `CREATE SINK name {FROM relation | AS query} WITH (…)`.
#[derive(Debug, Clone)]
pub struct CreateSink {
    /// Its name.
    pub name: String,
    /// Where the name is.
    pub at: Option<Position>,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// What it reads.
    pub source: SinkSource,
    /// `WITH (key = value, …)`.
    pub options: Vec<(String, String)>,
    /// `EMIT …` after the query.
    pub emit: Option<EmitMode>,
    /// `CREATE MATERIALIZED VIEW`: the result is kept queryable.
    pub view: bool,
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum WeirStatement {
    /// `CREATE STREAM|TABLE`.
    Create(Box<CreateRelation>),
    /// `CREATE SINK`.
    CreateSink(Box<CreateSink>),
    /// `DROP STREAM|TABLE|SINK [IF EXISTS] name`.
    Drop {
        /// What the user said it is.
        kind: RelationKind,
        /// Its name.
        name: String,
        /// Where the name is.
        at: Option<Position>,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `SHOW STREAMS|TABLES|SINKS|QUERIES`.
    Show(ShowWhat),
    /// `DESCRIBE name`.
    Describe {
        /// Its name.
        name: String,
        /// Where.
        at: Option<Position>,
    },
    /// `INSERT INTO name [(columns)] query`.
    Insert {
        /// The relation written.
        name: String,
        /// Where.
        at: Option<Position>,
        /// Named target columns, or all in order.
        columns: Vec<String>,
        /// The rows: `VALUES …` or a query.
        source: Box<Query>,
        /// `EMIT …` after a query.
        emit: Option<EmitMode>,
    },
    /// A query or `EXPLAIN`, run by DataFusion over the catalog's relations.
    Query(Box<Statement>),
    /// `SELECT … EMIT CHANGES`: a push query (rows as they change).
    Push(Box<Statement>),
}

impl WeirStatement {
    /// Whether running it may change the catalog (sessions serialize those).
    pub fn changes_catalog(&self) -> bool {
        matches!(
            self,
            WeirStatement::Create(_)
                | WeirStatement::CreateSink(_)
                | WeirStatement::Drop { .. }
                | WeirStatement::Insert { .. }
        )
    }
}

/// Parses a script of `;`-separated statements.
pub fn parse(sql: &str) -> Result<Vec<WeirStatement>> {
    if sql.len() > STATEMENT_BYTES_MAX {
        return Err(SqlError::TooLong {
            len: sql.len(),
            max: STATEMENT_BYTES_MAX,
        });
    }
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Syntax {
            message: e.message,
            at: At(position(e.location)),
        })?;
    let (tokens, mut emits) = emit_clauses(window_call_syntax(tokens))?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token_ref().token == Token::EOF {
            break;
        }
        let s = statement(&mut p).map_err(syntax)?;
        let emit = match emits.first() {
            Some(&(n, mode, at)) if n == out.len() => {
                emits.remove(0);
                Some((mode, at))
            }
            _ => None,
        };
        out.push(with_emit(s, emit)?);
        if !p.consume_token(&Token::SemiColon) && p.peek_token_ref().token != Token::EOF {
            let found = p.peek_token();
            return Err(syntax(
                p.expected::<()>("';' or the end of the input", found)
                    .err()
                    .unwrap_or_else(|| ParserError::ParserError("unexpected input".into())),
            ));
        }
    }
    Ok(out)
}

/// Turns sqlparser's message (`… at Line: L, Column: C`) into a located syntax error.
pub(crate) fn syntax(e: ParserError) -> SqlError {
    let text = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_string(),
    };
    match text.rfind(" at Line: ") {
        Some(i) => {
            let at = parse_location(&text[i + " at Line: ".len()..]);
            SqlError::Syntax {
                message: text[..i].to_string(),
                at: At(at),
            }
        }
        None => SqlError::Syntax {
            message: text,
            at: At(None),
        },
    }
}

fn parse_location(s: &str) -> Option<Position> {
    let (line, rest) = s.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Position {
        line: line.trim().parse().ok()?,
        column: column.parse().ok()?,
    })
}

/// A sqlparser location as ours (`None` when unknown).
pub(crate) fn position(l: Location) -> Option<Position> {
    (l.line > 0).then_some(Position {
        line: l.line,
        column: l.column,
    })
}

fn here(p: &Parser) -> Option<Position> {
    position(p.peek_token_ref().span.start)
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

fn peek_word(p: &Parser, n: usize, w: &str) -> bool {
    is_word(&p.peek_nth_token_ref(n).token, w)
}

fn statement(p: &mut Parser) -> Result<WeirStatement, ParserError> {
    if p.peek_keyword(Keyword::CREATE)
        && (peek_word(p, 1, "STREAM") || peek_word(p, 1, "TABLE") || peek_word(p, 1, "SOURCE"))
    {
        p.advance_token();
        let kind = if p.parse_keyword(Keyword::TABLE) {
            RelationKind::Table
        } else {
            p.advance_token(); // STREAM or SOURCE (Flink and RisingWave say SOURCE)
            RelationKind::Stream
        };
        return create(p, kind).map(|c| WeirStatement::Create(Box::new(c)));
    }
    if p.peek_keyword(Keyword::CREATE) && peek_word(p, 1, "MATERIALIZED") && peek_word(p, 2, "VIEW")
    {
        for _ in 0..3 {
            p.advance_token();
        }
        let mut c = create_sink(p)?;
        c.view = true;
        return Ok(WeirStatement::CreateSink(Box::new(c)));
    }
    if p.peek_keyword(Keyword::DROP) && peek_word(p, 1, "MATERIALIZED") && peek_word(p, 2, "VIEW") {
        for _ in 0..3 {
            p.advance_token();
        }
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let at = here(p);
        let name = name(&p.parse_object_name(false)?);
        return Ok(WeirStatement::Drop {
            kind: RelationKind::View,
            name,
            at,
            if_exists,
        });
    }
    if p.peek_keyword(Keyword::SHOW) && peek_word(p, 1, "MATERIALIZED") && peek_word(p, 2, "VIEWS")
    {
        for _ in 0..3 {
            p.advance_token();
        }
        return Ok(WeirStatement::Show(ShowWhat::Views));
    }
    if p.peek_keyword(Keyword::CREATE) && peek_word(p, 1, "SINK") {
        p.advance_token();
        p.advance_token();
        return create_sink(p).map(|c| WeirStatement::CreateSink(Box::new(c)));
    }
    if p.peek_keyword(Keyword::DROP)
        && (peek_word(p, 1, "STREAM")
            || peek_word(p, 1, "TABLE")
            || peek_word(p, 1, "SINK")
            || peek_word(p, 1, "SOURCE"))
    {
        p.advance_token();
        let kind = if p.parse_keyword(Keyword::TABLE) {
            RelationKind::Table
        } else if peek_word(p, 0, "SINK") {
            p.advance_token();
            RelationKind::Sink
        } else {
            p.advance_token();
            RelationKind::Stream
        };
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let at = here(p);
        let name = name(&p.parse_object_name(false)?);
        return Ok(WeirStatement::Drop {
            kind,
            name,
            at,
            if_exists,
        });
    }
    let shown = ["STREAMS", "SOURCES", "TABLES", "SINKS", "QUERIES"];
    if p.peek_keyword(Keyword::SHOW) && shown.iter().any(|w| peek_word(p, 1, w)) {
        p.advance_token();
        let what = if peek_word(p, 0, "STREAMS") || peek_word(p, 0, "SOURCES") {
            ShowWhat::Streams
        } else if peek_word(p, 0, "TABLES") {
            ShowWhat::Tables
        } else {
            ShowWhat::Queries
        };
        p.advance_token();
        return Ok(WeirStatement::Show(what));
    }
    if p.peek_keyword(Keyword::DESCRIBE) || p.peek_keyword(Keyword::DESC) {
        p.advance_token();
        let at = here(p);
        let name = name(&p.parse_object_name(false)?);
        return Ok(WeirStatement::Describe { name, at });
    }
    if p.peek_keyword(Keyword::INSERT) {
        p.advance_token();
        p.expect_keyword_is(Keyword::INTO)?;
        let at = here(p);
        let name = name(&p.parse_object_name(false)?);
        let mut columns = Vec::new();
        if p.peek_token_ref().token == Token::LParen && !starts_query(p, 1) {
            p.advance_token();
            columns = p.parse_comma_separated(|p| p.parse_identifier().map(|i| ident(&i)))?;
            p.expect_token(&Token::RParen)?;
        }
        let source = p.parse_query()?;
        return Ok(WeirStatement::Insert {
            name,
            at,
            columns,
            source,
            emit: None,
        });
    }
    Ok(WeirStatement::Query(Box::new(p.parse_statement()?)))
}

/// Whether the token after `(` starts a query (`INSERT INTO t (SELECT …)`), not a column list.
fn starts_query(p: &Parser, n: usize) -> bool {
    let t = &p.peek_nth_token_ref(n).token;
    is_word(t, "SELECT") || is_word(t, "VALUES") || is_word(t, "WITH")
}

/// An identifier as SQL names it: lower-cased unless quoted.
pub(crate) fn ident(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// An object name as the catalog names it (parts lower-cased unless quoted, joined by `.`).
pub(crate) fn object_name(n: &ObjectName) -> String {
    name(n)
}

fn name(n: &ObjectName) -> String {
    n.0.iter()
        .filter_map(|part| part.as_ident())
        .map(ident)
        .collect::<Vec<_>>()
        .join(".")
}

fn create(p: &mut Parser, kind: RelationKind) -> Result<CreateRelation, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let at = here(p);
    let relation = name(&p.parse_object_name(false)?);
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    if p.consume_token(&Token::LParen) {
        loop {
            if peek_word(p, 0, "WATERMARK") {
                p.advance_token();
                p.expect_keyword_is(Keyword::FOR)?;
                let column = ident(&p.parse_identifier()?);
                p.expect_keyword_is(Keyword::AS)?;
                watermark = Some((column, p.parse_expr()?));
            } else if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                p.expect_token(&Token::LParen)?;
                primary_key =
                    p.parse_comma_separated(|p| p.parse_identifier().map(|i| ident(&i)))?;
                p.expect_token(&Token::RParen)?;
                // Flink's `PRIMARY KEY (id) NOT ENFORCED`.
                if p.parse_keyword(Keyword::NOT) {
                    p.expect_keyword_is(Keyword::ENFORCED)?;
                }
            } else {
                columns.push(column(p)?);
            }
            if p.consume_token(&Token::Comma) {
                continue;
            }
            p.expect_token(&Token::RParen)?;
            break;
        }
    }
    let mut options = Vec::new();
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        options = p.parse_comma_separated(option)?;
        p.expect_token(&Token::RParen)?;
    }
    Ok(CreateRelation {
        kind,
        name: relation,
        at,
        if_not_exists,
        columns,
        watermark,
        primary_key,
        options,
    })
}

/// After `CREATE SINK`: `[IF NOT EXISTS] name {FROM relation | AS query} [WITH (…)]`.
fn create_sink(p: &mut Parser) -> Result<CreateSink, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let at = here(p);
    let sink = name(&p.parse_object_name(false)?);
    let source = if p.parse_keyword(Keyword::FROM) {
        let from_at = here(p);
        SinkSource::From(name(&p.parse_object_name(false)?), from_at)
    } else {
        p.expect_keyword_is(Keyword::AS)?;
        SinkSource::Query(Box::new(query_before_options(p)?))
    };
    let mut options = Vec::new();
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        options = p.parse_comma_separated(option)?;
        p.expect_token(&Token::RParen)?;
    }
    Ok(CreateSink {
        name: sink,
        at,
        if_not_exists,
        source,
        options,
        emit: None,
        view: false,
    })
}

/// Parses the text of one query (a stored persistent query).
pub(crate) fn parse_query(sql: &str) -> Result<Query> {
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let q = p.parse_query().map_err(syntax)?;
    while p.consume_token(&Token::SemiColon) {}
    if p.peek_token_ref().token != Token::EOF {
        return Err(SqlError::Syntax {
            message: "a stored query has text after its end".into(),
            at: At(here(&p)),
        });
    }
    Ok(*q)
}

/// `name TYPE [PRIMARY KEY] [NOT NULL]` or `name AS expr`.
fn column(p: &mut Parser) -> Result<ColumnSpec, ParserError> {
    let at = here(p);
    let name = ident(&p.parse_identifier()?);
    if p.parse_keyword(Keyword::AS) {
        let expr = p.parse_expr()?;
        return Ok(ColumnSpec {
            name,
            source: ColumnSource::Computed(Box::new(expr)),
            primary_key: false,
            at,
        });
    }
    let data_type = p.parse_data_type()?;
    let mut primary_key = false;
    loop {
        if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            primary_key = true;
        } else if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) || p.parse_keyword(Keyword::NULL)
        {
            // Nullability is not enforced on decode: every column may be NULL.
        } else {
            break;
        }
    }
    Ok(ColumnSpec {
        name,
        source: ColumnSource::Stored(data_type),
        primary_key,
        at,
    })
}

/// `key = value`: keys may be quoted strings (`'number-of-rows'`) or dotted names; values are
/// literals (strings, numbers, booleans) or bare words, kept as text.
fn option(p: &mut Parser) -> Result<(String, String), ParserError> {
    let t = p.next_token();
    let key = match &t.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Word(_) => {
            p.prev_token();
            p.parse_object_name(false)?
                .0
                .iter()
                .filter_map(|part| part.as_ident())
                .map(|i| i.value.clone())
                .collect::<Vec<_>>()
                .join(".")
        }
        _ => return p.expected("an option name", t.clone()),
    };
    p.expect_token(&Token::Eq)?;
    let v = p.next_token();
    let value = match &v.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Number(n, _) => n.clone(),
        Token::Word(w) => w.value.clone(),
        Token::Minus => match p.next_token().token {
            Token::Number(n, _) => format!("-{n}"),
            _ => return p.expected("a number after '-'", v.clone()),
        },
        _ => return p.expected("an option value", v.clone()),
    };
    Ok((key.to_lowercase(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_stream_with_watermark_computed_columns_and_options() {
        let s = parse(
            "CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP,\n\
             double_price AS price * 2,\n\
             WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)\n\
             WITH (topic = 'bids', format = 'json', partitions = 4, 'number-of-rows' = '10');",
        )
        .expect("parses");
        let [WeirStatement::Create(c)] = s.as_slice() else {
            panic!("{s:?}")
        };
        assert_eq!(c.kind, RelationKind::Stream);
        assert_eq!(c.name, "bids");
        assert_eq!(c.columns.len(), 4);
        assert!(matches!(c.columns[3].source, ColumnSource::Computed(_)));
        assert_eq!(c.watermark.as_ref().map(|w| w.0.as_str()), Some("ts"));
        assert_eq!(c.options[2], ("partitions".to_string(), "4".to_string()));
        assert_eq!(c.options[3].0, "number-of-rows");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = parse("SELECT 1;\nCREATE STREAM s (a BIGINT,, b TEXT)").expect_err("bad");
        let SqlError::Syntax { at, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            at.0,
            Some(Position {
                line: 2,
                column: 27
            }),
            "{e}"
        );
    }

    #[test]
    fn table_primary_keys_inline_and_as_constraint() {
        let s = parse(
            "CREATE TABLE c (id BIGINT PRIMARY KEY, name TEXT);\n\
             CREATE TABLE d (a INT, b INT, PRIMARY KEY (a, b) NOT ENFORCED)",
        )
        .expect("parses");
        let WeirStatement::Create(c) = &s[0] else {
            panic!()
        };
        assert!(c.columns[0].primary_key);
        let WeirStatement::Create(d) = &s[1] else {
            panic!()
        };
        assert_eq!(d.primary_key, vec!["a", "b"]);
    }

    #[test]
    fn create_sink_from_a_relation_or_a_query() {
        let s = parse(
            "CREATE SINK a FROM bids WITH (connector = 'blackhole');\n\
             CREATE SINK IF NOT EXISTS b AS SELECT * FROM bids WHERE price > 10000 \
             WITH (connector = 'topic', topic = 'big-bids');\n\
             DROP SINK a; SHOW SINKS; SHOW QUERIES",
        )
        .expect("parses");
        let WeirStatement::CreateSink(a) = &s[0] else {
            panic!("{s:?}")
        };
        assert!(matches!(&a.source, SinkSource::From(n, _) if n == "bids"));
        let WeirStatement::CreateSink(b) = &s[1] else {
            panic!("{s:?}")
        };
        assert!(b.if_not_exists);
        assert!(matches!(&b.source, SinkSource::Query(_)));
        assert_eq!(b.options[1], ("topic".to_string(), "big-bids".to_string()));
        assert!(matches!(
            &s[2],
            WeirStatement::Drop {
                kind: RelationKind::Sink,
                ..
            }
        ));
        assert!(matches!(s[4], WeirStatement::Show(ShowWhat::Queries)));
    }

    #[test]
    fn insert_with_and_without_columns() {
        let s = parse(
            "INSERT INTO bids VALUES (1, 2); INSERT INTO bids (a, b) VALUES (1, 2); \
             INSERT INTO bids SELECT * FROM x",
        )
        .expect("parses");
        assert!(matches!(&s[1], WeirStatement::Insert { columns, .. } if columns == &["a", "b"]));
        assert!(matches!(&s[2], WeirStatement::Insert { columns, .. } if columns.is_empty()));
    }
}
