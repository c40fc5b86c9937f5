//! Token-level rewrites before sqlparser sees a script, and the clauses it has no grammar
//! for: Flink's spelling of window table function calls, `EMIT …` after a query, and a
//! query followed by `WITH (…)` options.
//!
//! Invariant: tokens keep their spans, so errors still point into the text as written.

use datafusion::sql::sqlparser::ast::{Query, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::{is_word, position, EmitMode, SinkSource, WeirStatement};
use crate::error::{At, Position, Result, SqlError};

/// The window table functions.
pub const WINDOW_FUNCTIONS: [&str; 3] = ["TUMBLE", "HOP", "SESSION"];

/// Flink's spelling of a window table function call, `TABLE(TUMBLE(TABLE bids,
/// DESCRIPTOR(ts), INTERVAL '10' SECOND))`, as the short one sqlparser reads as a table
/// function, `TUMBLE(bids, ts, INTERVAL '10' SECOND)`: the `TABLE( … )` around the call, the
/// `TABLE` before its relation and the `DESCRIPTOR( … )` around its column are dropped. The
/// tokens keep their positions, so errors still point into the text as written.
pub(super) fn window_call_syntax(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut t: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut drop = vec![false; t.len()];
    let window_at = |t: &[TokenWithSpan], i: usize| {
        t.get(i)
            .is_some_and(|x| WINDOW_FUNCTIONS.iter().any(|w| is_word(&x.token, w)))
            && t.get(i + 1).is_some_and(|x| x.token == Token::LParen)
    };
    let matching = |t: &[TokenWithSpan], open: usize| {
        let mut depth = 0;
        for (j, x) in t.iter().enumerate().skip(open) {
            match x.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
        }
        None
    };
    for i in 0..t.len() {
        if is_word(&t[i].token, "TABLE")
            && t.get(i + 1).is_some_and(|x| x.token == Token::LParen)
            && window_at(&t, i + 2)
        {
            if let Some(close) = matching(&t, i + 1) {
                drop[i] = true;
                drop[i + 1] = true;
                drop[close] = true;
            }
        }
        if window_at(&t, i) {
            if t.get(i + 2).is_some_and(|x| is_word(&x.token, "TABLE")) {
                drop[i + 2] = true;
            }
            if let Some(close) = matching(&t, i + 1) {
                for j in i + 2..close {
                    if is_word(&t[j].token, "DESCRIPTOR")
                        && t.get(j + 1).is_some_and(|x| x.token == Token::LParen)
                    {
                        if let Some(c) = matching(&t, j + 1) {
                            drop[j] = true;
                            drop[j + 1] = true;
                            drop[c] = true;
                        }
                    }
                }
            }
        }
    }
    let mut keep = drop.into_iter();
    t.retain(|_| !keep.next().unwrap_or(false));
    t
}

/// Removes `EMIT CHANGES`, `EMIT ON WINDOW CLOSE` and `EMIT FINAL` at a statement's top level
/// (sqlparser has no such clause) and says which statement (by index) had which, and where.
#[allow(clippy::type_complexity)]
pub(super) fn emit_clauses(
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Vec<(usize, EmitMode, Option<Position>)>)> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut emits = Vec::new();
    let (mut depth, mut statement, mut has_tokens) = (0i32, 0usize, false);
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i].token;
        let word = |k: usize, w: &str| tokens.get(i + k).is_some_and(|x| is_word(&x.token, w));
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth == 0 => {
                if has_tokens {
                    statement += 1;
                }
                has_tokens = false;
                out.push(tokens[i].clone());
                i += 1;
                continue;
            }
            _ => {}
        }
        let emit_clause = word(1, "CHANGES") || word(1, "FINAL") || word(1, "ON");
        if depth == 0 && word(0, "EMIT") && emit_clause {
            if emits.last().is_some_and(|(s, _, _)| *s == statement) {
                return Err(SqlError::Syntax {
                    message: "a statement has one EMIT clause".into(),
                    at: At(position(tokens[i].span.start)),
                });
            }
            let at = position(tokens[i].span.start);
            let (mode, len) = if word(1, "CHANGES") {
                (EmitMode::Changes, 2)
            } else if word(1, "FINAL") {
                (EmitMode::OnWindowClose, 2)
            } else if word(1, "ON") && word(2, "WINDOW") && word(3, "CLOSE") {
                (EmitMode::OnWindowClose, 4)
            } else {
                return Err(SqlError::Syntax {
                    message: "expected EMIT CHANGES or EMIT ON WINDOW CLOSE".into(),
                    at: At(at),
                });
            };
            emits.push((statement, mode, at));
            i += len;
            continue;
        }
        if !matches!(t, Token::EOF) {
            has_tokens = true;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Ok((out, emits))
}

/// Attaches a statement's `EMIT` clause to it; one where none can be is an error.
pub(super) fn with_emit(
    s: WeirStatement,
    emit: Option<(EmitMode, Option<Position>)>,
) -> Result<WeirStatement> {
    let Some((mode, at)) = emit else {
        return Ok(s);
    };
    Ok(match s {
        WeirStatement::CreateSink(mut c) if matches!(c.source, SinkSource::Query(_)) || c.view => {
            c.emit = Some(mode);
            WeirStatement::CreateSink(c)
        }
        WeirStatement::Insert {
            name,
            at: insert_at,
            columns,
            source,
            ..
        } => WeirStatement::Insert {
            name,
            at: insert_at,
            columns,
            source,
            emit: Some(mode),
        },
        WeirStatement::Query(q) if matches!(*q, Statement::Query(_)) => match mode {
            EmitMode::Changes => WeirStatement::Push(q),
            EmitMode::OnWindowClose => {
                return Err(SqlError::plan(
                    "EMIT ON WINDOW CLOSE belongs to a persistent query (CREATE SINK, CREATE \
                     MATERIALIZED VIEW, INSERT INTO … SELECT); a SELECT runs once over the log",
                    at,
                ))
            }
        },
        _ => {
            return Err(SqlError::plan(
                "EMIT belongs after the query of a persistent or push query",
                at,
            ))
        }
    })
}

/// Parses a query that a `WITH (…)` of options may follow. The options are found first — the
/// last `WITH (` at the query's top level whose `)` ends the statement — and the query is
/// parsed from the tokens before them, so `GROUP BY a WITH (…)` is not taken for sqlparser's
/// `GROUP BY … WITH ROLLUP`.
pub(super) fn query_before_options(p: &mut Parser) -> Result<Query, ParserError> {
    let mut depth = 0i32;
    let mut options_at = None;
    let mut n = 0;
    loop {
        let t = &p.peek_nth_token_ref(n).token;
        match t {
            Token::EOF | Token::SemiColon if depth == 0 => break,
            Token::EOF => break,
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if depth == 0
                && is_keyword(t, Keyword::WITH)
                && p.peek_nth_token_ref(n + 1).token == Token::LParen =>
            {
                options_at = Some(n);
            }
            _ => {}
        }
        n += 1;
    }
    let Some(end) = options_at else {
        return Ok(*p.parse_query()?);
    };
    let mut tokens: Vec<_> = (0..end).map(|i| p.peek_nth_token_ref(i).clone()).collect();
    let eof_span = p.peek_nth_token_ref(end).span;
    tokens.push(datafusion::sql::sqlparser::tokenizer::TokenWithSpan::new(
        Token::EOF,
        eof_span,
    ));
    let dialect = GenericDialect {};
    let mut sub = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let query = sub.parse_query()?;
    if sub.peek_token_ref().token != Token::EOF {
        let found = sub.peek_token();
        return sub.expected("the end of the query before WITH (…)", found);
    }
    for _ in 0..end {
        p.next_token();
    }
    Ok(*query)
}

fn is_keyword(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k && w.quote_style.is_none())
}
