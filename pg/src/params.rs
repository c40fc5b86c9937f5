//! Parameters of the extended protocol (`$1`, `$2`, …): each bound value becomes a SQL literal
//! of its type in the statement's text, which then runs like any other. The statement is
//! tokenized first, so a `$1` inside a string or a comment is left alone, and a value can
//! never become syntax: strings are quoted with their quotes doubled, numbers are checked to
//! be numbers.

use bytes::Bytes;
use pgwire::api::portal::Format;
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use weir_sql::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use weir_sql::datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::user_error;

/// Parameters a statement may have (Postgres' own limit: the Bind message counts them in
/// 16 bits).
pub(crate) const PARAMETERS_MAX: usize = u16::MAX as usize;

/// The number of distinct parameters `$1 … $n` a statement uses (its highest `n`).
pub(crate) fn count(sql: &str) -> usize {
    placeholders(sql)
        .map(|tokens| {
            tokens
                .iter()
                .filter_map(|t| match t {
                    Token::Placeholder(p) => index(p),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn placeholders(sql: &str) -> Option<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()
}

/// `$n` as the 1-based parameter number.
fn index(placeholder: &str) -> Option<usize> {
    placeholder
        .strip_prefix('$')?
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=PARAMETERS_MAX).contains(n))
}

/// One bound value as a SQL literal.
pub(crate) fn literal(
    value: Option<&Bytes>,
    ty: &Type,
    binary: bool,
    n: usize,
) -> PgWireResult<String> {
    let Some(raw) = value else {
        return Ok("NULL".into());
    };
    let text = match binary {
        false => std::str::from_utf8(raw)
            .map_err(|_| user_error("22021", format!("parameter ${n} is not UTF-8")))?
            .to_string(),
        true => binary_text(raw, ty, n)?,
    };
    let bad = || {
        user_error(
            "22P02",
            format!("parameter ${n}: `{text}` is not a {}", ty.name()),
        )
    };
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
            number(text.trim().parse::<i64>().map_err(|_| bad())?.to_string())
        }
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => {
            let v: f64 = text.trim().parse().map_err(|_| bad())?;
            match v.is_finite() {
                // The text as given (a NUMERIC keeps its digits), checked to be a number.
                true => number(text.trim().to_string()),
                false => format!("CAST({} AS DOUBLE)", quote(text.trim())),
            }
        }
        Type::BOOL => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "on" | "yes" | "1" => "TRUE".into(),
            "f" | "false" | "off" | "no" | "0" => "FALSE".into(),
            _ => return Err(bad()),
        },
        Type::TIMESTAMP => format!("CAST({} AS TIMESTAMP)", quote(&text)),
        Type::TIMESTAMPTZ => format!("CAST({} AS TIMESTAMP WITH TIME ZONE)", quote(&text)),
        Type::DATE => format!("CAST({} AS DATE)", quote(&text)),
        _ => quote(&text),
    })
}

/// A number as SQL text: a negative one in parentheses, so `b-$1` with -5 does not become
/// the comment `b--5`; others bare, so `WHERE id = $1` keeps the shape the fast path of pull
/// queries recognizes.
fn number(text: String) -> String {
    match text.starts_with('-') {
        true => format!("({text})"),
        false => text,
    }
}

/// A binary parameter as text, for the types drivers send in binary.
fn binary_text(raw: &Bytes, ty: &Type, n: usize) -> PgWireResult<String> {
    use postgres_types::FromSql;
    let failed = |e: Box<dyn std::error::Error + Sync + Send>| {
        user_error("22P03", format!("parameter ${n} ({}): {e}", ty.name()))
    };
    Ok(match *ty {
        Type::INT2 => i16::from_sql(ty, raw).map_err(failed)?.to_string(),
        Type::INT4 => i32::from_sql(ty, raw).map_err(failed)?.to_string(),
        Type::INT8 => i64::from_sql(ty, raw).map_err(failed)?.to_string(),
        Type::FLOAT4 => f32::from_sql(ty, raw).map_err(failed)?.to_string(),
        Type::FLOAT8 => f64::from_sql(ty, raw).map_err(failed)?.to_string(),
        Type::BOOL => bool::from_sql(ty, raw).map_err(failed)?.to_string(),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            String::from_sql(ty, raw).map_err(failed)?
        }
        Type::TIMESTAMP => chrono::NaiveDateTime::from_sql(ty, raw)
            .map_err(failed)?
            .format("%Y-%m-%d %H:%M:%S%.f")
            .to_string(),
        Type::TIMESTAMPTZ => chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)
            .map_err(failed)?
            .to_rfc3339(),
        Type::DATE => chrono::NaiveDate::from_sql(ty, raw)
            .map_err(failed)?
            .to_string(),
        _ => {
            return Err(user_error(
                "0A000",
                format!(
                    "parameter ${n}: binary values of type {} are not supported; send it as text",
                    ty.name()
                ),
            ))
        }
    })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `sql` with every `$n` replaced by its literal; `literals[n - 1]` is `$n`'s. Only the
/// placeholders' own characters are replaced: the rest of the text stays as written (quotes,
/// escapes and comments included).
pub(crate) fn substitute(sql: &str, literals: &[String]) -> PgWireResult<String> {
    if literals.is_empty() {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| user_error("42601", format!("syntax error: {e}")))?;
    // Byte offset of each line's start, to turn (line, column) into a byte range.
    let mut line_starts = vec![0usize];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let skip = usize::try_from(column).ok()?.checked_sub(1)?;
        let rest = sql.get(start..)?;
        Some(start + rest.char_indices().nth(skip).map_or(rest.len(), |(i, _)| i))
    };
    let mut out = String::with_capacity(sql.len() + literals.len() * 8);
    let mut copied = 0;
    for t in tokens {
        let Token::Placeholder(p) = &t.token else {
            continue;
        };
        let literal = index(p).and_then(|n| literals.get(n - 1)).ok_or_else(|| {
            user_error(
                "08P01",
                format!(
                    "the statement uses {p}, but {} parameter(s) were bound",
                    literals.len()
                ),
            )
        })?;
        let from = offset(t.span.start.line, t.span.start.column);
        let to = offset(t.span.end.line, t.span.end.column);
        let (Some(from), Some(to)) = (from, to) else {
            return Err(user_error(
                "XX000",
                format!("cannot locate {p} in the statement"),
            ));
        };
        if from < copied || to < from {
            return Err(user_error(
                "XX000",
                format!("cannot locate {p} in the statement"),
            ));
        }
        out.push_str(&sql[copied..from]);
        out.push_str(literal);
        copied = to;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// The literals of a portal's bound parameters.
pub(crate) fn bound(
    values: &[Option<Bytes>],
    types: &[Option<Type>],
    format: &Format,
) -> PgWireResult<Vec<String>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ty = types.get(i).cloned().flatten().unwrap_or(Type::UNKNOWN);
            literal(v.as_ref(), &ty, format.is_binary(i), i + 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_typed_literals_and_never_syntax() -> PgWireResult<()> {
        let lits = vec![
            literal(Some(&Bytes::from("42")), &Type::INT8, false, 1)?,
            literal(Some(&Bytes::from("o'neil; DROP")), &Type::TEXT, false, 2)?,
            literal(None, &Type::TEXT, false, 3)?,
        ];
        let sql = "SELECT '$1', a FROM t WHERE a = $1 AND b = $2 OR c IS $3 -- $2";
        assert_eq!(count(sql), 3);
        assert_eq!(
            substitute(sql, &lits)?,
            "SELECT '$1', a FROM t WHERE a = 42 AND b = 'o''neil; DROP' OR c IS NULL -- $2"
        );
        assert!(literal(Some(&Bytes::from("1; DROP")), &Type::INT8, false, 1).is_err());
        assert!(substitute("SELECT $2", &lits[..1]).is_err());
        Ok(())
    }

    #[test]
    fn the_text_around_placeholders_stays_as_written() -> PgWireResult<()> {
        let minus_five = literal(Some(&Bytes::from("-5")), &Type::INT4, false, 1)?;
        // Escaped quotes, quoted identifiers, several lines, non-ASCII text.
        let sql = "INSERT INTO \"t \"\"x\"\"\" VALUES ('O''Brien', 'é',\n b-$1)";
        assert_eq!(
            substitute(sql, &[minus_five])?,
            "INSERT INTO \"t \"\"x\"\"\" VALUES ('O''Brien', 'é',\n b-(-5))"
        );
        Ok(())
    }
}
