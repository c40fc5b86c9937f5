//! Hidden metadata columns: `SELECT *` over the catalog's streams and tables lists their
//! declared columns, not `_key`, `_timestamp`, `_partition` and `_offset` (as ksqlDB's
//! `ROWTIME` and RisingWave's hidden columns), so `INSERT INTO copy SELECT * FROM s` and
//! `CREATE SINK … AS SELECT *` carry the row, not its record's metadata. Naming a metadata
//! column selects it.
//!
//! DataFusion has no hidden columns, so the query's AST is rewritten before planning: in each
//! `SELECT` whose `FROM` names only catalog relations, a bare `*` becomes `* EXCLUDE (…)`
//! (one relation) or `r.* EXCLUDE (…)` per relation (a join), and a `r.*` of such a relation
//! gets the same exclusion. A `SELECT` over a derived table or a function is left alone: its
//! inner `SELECT`s are rewritten themselves.

use datafusion::sql::sqlparser::ast::{
    ExcludeSelectItem, Ident, ObjectName, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableFactor, WildcardAdditionalOptions,
};

use crate::format::META_COLUMNS;

/// Rewrites every `SELECT` of `query` (its CTEs, set operations and derived tables too);
/// `is_relation` says whether a (lower-cased) name is a stream or table of the catalog.
pub(crate) fn hide_metadata(query: &mut Query, is_relation: &dyn Fn(&str) -> bool) {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            hide_metadata(&mut cte.query, is_relation);
        }
    }
    set_expr(&mut query.body, is_relation);
}

fn set_expr(body: &mut SetExpr, is_relation: &dyn Fn(&str) -> bool) {
    match body {
        SetExpr::Select(s) => select(s, is_relation),
        SetExpr::Query(q) => hide_metadata(q, is_relation),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr(left, is_relation);
            set_expr(right, is_relation);
        }
        _ => {}
    }
}

/// The name a relation of the `FROM` clause is referred to by: its alias, else its name.
fn referred_as(factor: &TableFactor, is_relation: &dyn Fn(&str) -> bool) -> Option<String> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    let name = crate::parser::object_name(name);
    if !is_relation(&name) {
        return None;
    }
    Some(
        alias
            .as_ref()
            .map_or(name, |a| crate::parser::ident(&a.name)),
    )
}

fn select(s: &mut Select, is_relation: &dyn Fn(&str) -> bool) {
    let mut relations = Vec::new();
    let mut only_relations = !s.from.is_empty();
    for t in &mut s.from {
        for factor in
            std::iter::once(&mut t.relation).chain(t.joins.iter_mut().map(|j| &mut j.relation))
        {
            if let TableFactor::Derived { subquery, .. } = factor {
                hide_metadata(subquery, is_relation);
            }
            match referred_as(factor, is_relation) {
                Some(name) => relations.push(name),
                None => only_relations = false,
            }
        }
    }
    let mut items = Vec::with_capacity(s.projection.len());
    for item in std::mem::take(&mut s.projection) {
        match item {
            SelectItem::Wildcard(options) if only_relations && untouched(&options) => {
                if relations.len() == 1 {
                    items.push(SelectItem::Wildcard(excluding(options)));
                } else {
                    for r in &relations {
                        items.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(ObjectName::from(vec![
                                Ident::with_quote('"', r.clone()),
                            ])),
                            excluding(options.clone()),
                        ));
                    }
                }
            }
            SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(n),
                options,
            ) if untouched(&options) && relations.contains(&crate::parser::object_name(&n)) => {
                items.push(SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    excluding(options),
                ));
            }
            other => items.push(other),
        }
    }
    s.projection = items;
}

/// A wildcard without options of its own (a user's `EXCLUDE` or `EXCEPT` is kept as written).
fn untouched(o: &WildcardAdditionalOptions) -> bool {
    o.opt_exclude.is_none() && o.opt_except.is_none() && o.opt_ilike.is_none()
}

fn excluding(mut o: WildcardAdditionalOptions) -> WildcardAdditionalOptions {
    o.opt_exclude = Some(ExcludeSelectItem::Multiple(
        META_COLUMNS
            .iter()
            .map(|c| ObjectName::from(vec![Ident::new(*c)]))
            .collect(),
    ));
    o
}
