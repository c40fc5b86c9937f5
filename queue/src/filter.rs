//! Subscription filters: which records of a subscribed topic a queue takes.
//!
//! - A key pattern, as RabbitMQ's topic exchanges bind: the key's words (split at `.`)
//!   against the pattern's, where `*` is exactly one word and `#` zero or more
//!   (`order.*.created`, `#.error`).
//! - A filter policy on the record's headers, as SNS's: a JSON object of header names, each
//!   with a list of conditions, any of which may match — a string (equal), a number (equal as
//!   a number), `{"prefix": "…"}`, `{"numeric": [">=", 10, "<", 20]}`, `{"anything-but":
//!   […]}`, `{"exists": true|false}`. A record matches when every named header matches.
//!
//! Both are checked when the subscription is made, so a bad one is refused with the reason.

use serde_json::Value;

use crate::error::{QueueError, Result};

/// A compiled filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    key: Option<Vec<String>>,
    policy: Vec<(String, Vec<Condition>)>,
}

#[derive(Debug, Clone)]
enum Condition {
    Exact(String),
    Number(f64),
    Prefix(String),
    Range(Vec<(String, f64)>),
    AnythingBut(Vec<Value>),
    Exists(bool),
}

fn bad(why: String) -> QueueError {
    QueueError::InvalidSetting(format!("subscription filter: {why}"))
}

impl Filter {
    /// Compiles a key pattern and a filter policy (JSON), either optional.
    pub fn new(key_pattern: Option<&str>, policy: Option<&str>) -> Result<Filter> {
        let key = match key_pattern {
            None => None,
            Some(p) if p.is_empty() || p.split('.').any(str::is_empty) => {
                return Err(bad(format!("key pattern `{p}` has an empty word")))
            }
            Some(p) => Some(p.split('.').map(str::to_string).collect()),
        };
        let policy = match policy {
            None => Vec::new(),
            Some(text) => parse_policy(text)?,
        };
        Ok(Filter { key, policy })
    }

    /// Whether a record with this key and these headers passes.
    pub fn matches<'a>(
        &self,
        key: Option<&[u8]>,
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> bool {
        if let Some(pattern) = &self.key {
            let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
                return false;
            };
            let words: Vec<&str> = key.split('.').collect();
            let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
            if !words_match(&pattern, &words) {
                return false;
            }
        }
        self.policy.iter().all(|(name, conditions)| {
            let value = header(name).and_then(|v| std::str::from_utf8(v).ok());
            conditions.iter().any(|c| c.matches(value))
        })
    }
}

/// RabbitMQ's topic matching: `*` one word, `#` zero or more.
fn words_match(pattern: &[&str], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((&"#", rest)) => (0..=words.len()).any(|skip| words_match(rest, &words[skip..])),
        Some((&p, rest)) => match words.split_first() {
            Some((&w, more)) if p == "*" || p == w => words_match(rest, more),
            _ => false,
        },
    }
}

fn parse_policy(text: &str) -> Result<Vec<(String, Vec<Condition>)>> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("policy is not JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(bad("a policy is a JSON object of header names".into()));
    };
    let mut out = Vec::new();
    for (name, conditions) in map {
        let list = match conditions {
            Value::Array(list) if !list.is_empty() => list,
            other => vec![other],
        };
        let parsed = list
            .into_iter()
            .map(|c| parse_condition(&name, c))
            .collect::<Result<Vec<_>>>()?;
        out.push((name, parsed));
    }
    Ok(out)
}

fn parse_condition(name: &str, c: Value) -> Result<Condition> {
    let number = |v: &Value| {
        v.as_f64()
            .ok_or_else(|| bad(format!("`{name}`: `{v}` is not a number")))
    };
    Ok(match c {
        Value::String(s) => Condition::Exact(s),
        Value::Number(n) => Condition::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Object(o) if o.len() == 1 => {
            let (op, arg) = o
                .into_iter()
                .next()
                .ok_or_else(|| bad(format!("`{name}`: empty condition")))?;
            match (op.as_str(), arg) {
                ("prefix", Value::String(p)) => Condition::Prefix(p),
                ("exists", Value::Bool(b)) => Condition::Exists(b),
                ("anything-but", Value::Array(vs)) => Condition::AnythingBut(vs),
                ("anything-but", v) => Condition::AnythingBut(vec![v]),
                ("numeric", Value::Array(parts)) => {
                    let mut bounds = Vec::new();
                    for pair in parts.chunks(2) {
                        let [op, v] = pair else {
                            return Err(bad(format!(
                                "`{name}`: numeric takes operator, number pairs"
                            )));
                        };
                        let op = op.as_str().unwrap_or_default().to_string();
                        if !["=", "<", "<=", ">", ">="].contains(&op.as_str()) {
                            return Err(bad(format!("`{name}`: unknown numeric operator `{op}`")));
                        }
                        bounds.push((op, number(v)?));
                    }
                    Condition::Range(bounds)
                }
                (op, _) => return Err(bad(format!("`{name}`: unsupported condition `{op}`"))),
            }
        }
        other => return Err(bad(format!("`{name}`: unsupported condition `{other}`"))),
    })
}

impl Condition {
    fn matches(&self, value: Option<&str>) -> bool {
        let num = || value.and_then(|v| v.trim().parse::<f64>().ok());
        match self {
            Condition::Exists(want) => value.is_some() == *want,
            Condition::Exact(s) => value == Some(s.as_str()),
            Condition::Number(n) => num() == Some(*n),
            Condition::Prefix(p) => value.is_some_and(|v| v.starts_with(p.as_str())),
            Condition::AnythingBut(vs) => value.is_some_and(|v| {
                !vs.iter().any(|x| match x {
                    Value::String(s) => s == v,
                    Value::Number(n) => n.as_f64() == v.trim().parse::<f64>().ok(),
                    _ => false,
                })
            }),
            Condition::Range(bounds) => num().is_some_and(|x| {
                bounds.iter().all(|(op, b)| match op.as_str() {
                    "=" => x == *b,
                    "<" => x < *b,
                    "<=" => x <= *b,
                    ">" => x > *b,
                    _ => x >= *b,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pattern: &str, key: &str) -> bool {
        Filter::new(Some(pattern), None)
            .expect("valid")
            .matches(Some(key.as_bytes()), |_| None)
    }

    #[test]
    fn topic_exchange_patterns() {
        assert!(key("order.*.created", "order.eu.created"));
        assert!(!key("order.*.created", "order.eu.west.created"));
        assert!(key("#.error", "error"));
        assert!(key("#.error", "billing.payment.error"));
        assert!(!key("#.error", "billing.error.retried"));
        assert!(key("order.#", "order"));
        assert!(key("#", "anything.at.all"));
        assert!(!key("a.*", "a"));
        assert!(Filter::new(Some("a..b"), None).is_err());
    }

    #[test]
    fn filter_policies() {
        let f = Filter::new(
            None,
            Some(r#"{"type": ["order", {"prefix": "pay"}], "amount": [{"numeric": [">=", 10, "<", 20]}],
                     "region": [{"anything-but": ["test"]}], "trace": [{"exists": false}]}"#),
        )
        .expect("valid");
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.as_bytes())
            }
        };
        assert!(f.matches(
            None,
            headers(&[("type", "payment"), ("amount", "12.5"), ("region", "eu")])
        ));
        assert!(!f.matches(
            None,
            headers(&[("type", "refund"), ("amount", "12"), ("region", "eu")])
        ));
        assert!(!f.matches(
            None,
            headers(&[("type", "order"), ("amount", "20"), ("region", "eu")])
        ));
        assert!(!f.matches(
            None,
            headers(&[("type", "order"), ("amount", "15"), ("region", "test")])
        ));
        assert!(!f.matches(
            None,
            headers(&[
                ("type", "order"),
                ("amount", "15"),
                ("region", "eu"),
                ("trace", "x")
            ])
        ));
        assert!(Filter::new(None, Some(r#"{"a": [{"numeric": ["~", 1]}]}"#)).is_err());
        assert!(Filter::new(None, Some("[1]")).is_err());
    }
}
