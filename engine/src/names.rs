//! The names of everything a pipeline creates outside its process: internal topics, state
//! directories and transactional ids.
//!
//! Every name is `APP.PART.KIND` (or `APP.PART.PARTITION`), where the application id and the
//! parts (store, repartition and task names) are made of letters, digits, `-` and `_` only.
//! The `.` therefore separates unambiguously: `a` + `b-1` and `a-b` + `1` give `a.b-1.…` and
//! `a-b.1.…`, never the same name, so two applications can neither fence each other's
//! transactions nor read each other's changelogs. Names come from the user (`.named(…)`) or
//! from the plan's structure, never from build order, so adding an operator does not rename
//! the state of another.
//!
//! Earlier versions named these `APP-aggregate-N-changelog`, `APP-table-N-changelog` and
//! `APP-repartition-N`; [`legacy_topics`] finds them so that the runtime can refuse to start
//! over them with a message saying what to do (`weir pipeline reset APP`).

use weir_log::Log;

use crate::error::{EngineError, Result};

/// Longest application id: internal topic names add a part and a suffix, and Kafka limits a
/// topic name to 249 characters.
pub const APP_ID_MAX_CHARS: usize = 100;
/// Longest store, repartition or task name, for the same reason.
pub const NAME_MAX_CHARS: usize = 100;

fn check(what: &str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() {
        return Err(EngineError::Plan(format!("{what} must not be empty")));
    }
    if name.chars().count() > max {
        return Err(EngineError::Plan(format!(
            "{what} `{name}` is longer than {max} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(EngineError::Plan(format!(
            "{what} `{name}` contains {c:?}: use letters, digits, `-` and `_` (a `.` separates the parts of internal topic names)"
        )));
    }
    Ok(())
}

/// Checks an application id.
pub fn validate_app(app: &str) -> Result<()> {
    check("application id", app, APP_ID_MAX_CHARS)
}

/// Checks a store, repartition or task name.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    check(what, name, NAME_MAX_CHARS)
}

/// A name part made from free text (a topic name): characters other than letters, digits,
/// `-` and `_` become `_`. Two texts can map to one part; plans check their names are unique.
pub fn part_from(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(NAME_MAX_CHARS)
        .collect();
    if s.is_empty() {
        "_".to_string()
    } else {
        s
    }
}

/// The changelog topic of a store.
pub fn changelog_topic(app: &str, store: &str) -> String {
    format!("{app}.{store}.changelog")
}

/// An internal repartition topic.
pub fn repartition_topic(app: &str, name: &str) -> String {
    format!("{app}.{name}.repartition")
}

/// The dead-letter topic of an application.
pub fn dead_letter_topic(app: &str) -> String {
    format!("{app}.dlq")
}

/// The transactional id of one task (a sub-plan's partition).
pub fn transactional_id(app: &str, task: &str, partition: u32) -> String {
    format!("{app}.{task}.{partition}")
}

/// The internal topics of an application that exist in the log: changelogs, repartition
/// topics and the dead-letter topic.
pub fn internal_topics(log: &Log, app: &str) -> Vec<String> {
    let prefix = format!("{app}.");
    log.list_topics()
        .into_iter()
        .filter(|t| {
            t.strip_prefix(&prefix).is_some_and(|rest| {
                rest == "dlq"
                    || rest.rsplit_once('.').is_some_and(|(part, kind)| {
                        !part.contains('.') && (kind == "changelog" || kind == "repartition")
                    })
            })
        })
        .collect()
}

/// Internal topics of `app` named the way earlier versions did (`APP-aggregate-N-changelog`,
/// `APP-table-N-changelog`, `APP-repartition-N`): a user topic that merely starts with the
/// application id does not match.
pub fn legacy_topics(log: &Log, app: &str) -> Vec<String> {
    let numbered = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let prefix = format!("{app}-");
    log.list_topics()
        .into_iter()
        .filter(|t| {
            let Some(rest) = t.strip_prefix(&prefix) else {
                return false;
            };
            if let Some(n) = rest.strip_prefix("repartition-") {
                return numbered(n);
            }
            rest.strip_suffix("-changelog").is_some_and(|store| {
                ["aggregate-", "table-"]
                    .iter()
                    .any(|k| store.strip_prefix(k).is_some_and(numbered))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_dashes_do_not_collide() {
        assert_ne!(
            transactional_id("a", "b-1", 0),
            transactional_id("a-b", "1", 0)
        );
        assert_ne!(changelog_topic("a", "b-c"), changelog_topic("a-b", "c"));
        assert!(validate_app("a.b").is_err());
        assert!(validate_app("orders_v2-eu").is_ok());
        assert!(validate_name("store name", "").is_err());
        assert_eq!(part_from("orders.v1"), "orders_v1");
    }
}
