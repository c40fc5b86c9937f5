//! The Postgres-only syntax of catalog queries rewritten into what DataFusion plans, and the
//! queries that are empty by construction (they read a catalog Weir keeps empty).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, Ident, ObjectName, ObjectNamePart, Statement, VisitMut, VisitorMut,
};

use super::{EMPTY, SCHEMA};

/// Whether a statement reads the catalogs (a table of `pg_catalog`, or one named `pg_…`).
pub(crate) fn reads_catalogs(statement: &Statement) -> bool {
    let mut found = false;
    let _ = ast::visit_relations(statement, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().to_lowercase())
            .collect();
        found |= parts.first().is_some_and(|s| s == SCHEMA)
            || (parts.len() == 1 && parts[0].starts_with("pg_"));
        ControlFlow::<()>::Continue(())
    });
    found
}

/// The column names of a catalog query that is empty by construction: every branch of it
/// reads (in its `FROM`, or an inner join) a catalog Weir keeps empty — no policies,
/// statistics, publications, inheritance, indexes, constraints, triggers or rules — so it has
/// no rows whatever its expressions (which may use Postgres features DataFusion lacks, such
/// as `array(SELECT …)`). `None` for any other statement.
pub(crate) fn empty_result(statement: &Statement) -> Option<Vec<String>> {
    let Statement::Query(q) = statement else {
        return None;
    };
    let mut names = None;
    empty_set(&q.body, &mut names).then(|| names.unwrap_or_default())
}

fn empty_set(body: &ast::SetExpr, names: &mut Option<Vec<String>>) -> bool {
    match body {
        ast::SetExpr::SetOperation { left, right, .. } => {
            empty_set(left, names) && empty_set(right, names)
        }
        ast::SetExpr::Select(select) => {
            let reads_empty = select.from.iter().any(|t| {
                empty_factor(&t.relation)
                    || t.joins.iter().any(|j| {
                        matches!(
                            j.join_operator,
                            ast::JoinOperator::Join(_) | ast::JoinOperator::Inner(_)
                        ) && empty_factor(&j.relation)
                    })
            });
            if reads_empty && names.is_none() {
                *names = Some(
                    select
                        .projection
                        .iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            ast::SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                            ast::SelectItem::UnnamedExpr(Expr::Identifier(id)) => id.value.clone(),
                            ast::SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => p
                                .last()
                                .map_or_else(|| format!("column{i}"), |l| l.value.clone()),
                            _ => format!("column{}", i + 1),
                        })
                        .collect(),
                );
            }
            reads_empty
        }
        _ => false,
    }
}

fn empty_factor(f: &ast::TableFactor) -> bool {
    let ast::TableFactor::Table { name, .. } = f else {
        return false;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().to_lowercase())
        .collect();
    let table = match parts.as_slice() {
        [schema, t] if schema == SCHEMA => t,
        [t] => t,
        _ => return false,
    };
    EMPTY
        .iter()
        .any(|(n, _)| n == table && !matches!(*n, "pg_am" | "pg_collation"))
}

/// Rewrites the Postgres-only syntax of catalog queries into what DataFusion plans.
/// `catalogs`: the statement reads the catalogs, whose scalar subqueries (one row per key,
/// as in Postgres) are also made aggregates, as DataFusion needs to decorrelate them.
pub(crate) fn rewrite(statement: &mut Statement, catalogs: bool) {
    let _ = statement.visit(&mut Rewriter { catalogs });
}

struct Rewriter {
    catalogs: bool,
}

/// A catalog query's scalar subquery `(SELECT x FROM … WHERE …)` in the shape DataFusion
/// decorrelates: `(SELECT MAX(x) …)` (Postgres's catalogs have one row per key), conditions
/// on the outer query alone moved out into `CASE WHEN … THEN (subquery) END`, and outer
/// columns that an equality pins to a column of the subquery replaced by that column. All of
/// it keeps the subquery's value.
fn decorrelate_scalar_subquery(expr: &mut Expr) {
    let Expr::Subquery(query) = expr else {
        return;
    };
    let guards = match query.body.as_mut() {
        ast::SetExpr::Select(select) => split_outer_conditions(select),
        _ => Vec::new(),
    };
    aggregate_scalar_subquery(query);
    if let Some(guard) = guards.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    }) {
        *expr = Expr::Case {
            case_token: ast::helpers::attached_token::AttachedToken::empty(),
            end_token: ast::helpers::attached_token::AttachedToken::empty(),
            operand: None,
            conditions: vec![ast::CaseWhen {
                condition: guard,
                result: expr.clone(),
            }],
            else_result: None,
        };
    }
}

/// The aliases a `SELECT`'s `FROM` introduces.
fn local_aliases(select: &ast::Select) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |f: &ast::TableFactor| {
        if let ast::TableFactor::Table { name, alias, .. } = f {
            match alias {
                Some(a) => names.push(a.name.value.to_lowercase()),
                None => names.extend(name.0.last().map(|p| p.to_string().to_lowercase())),
            }
        }
    };
    for t in &select.from {
        add(&t.relation);
        for j in &t.joins {
            add(&j.relation);
        }
    }
    names
}

/// Whether a qualified column belongs to the subquery (`Some(true)`), the outer query
/// (`Some(false)`), or is no qualified column.
fn is_local(e: &Expr, locals: &[String]) -> Option<bool> {
    match e {
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            Some(locals.contains(&parts[0].value.to_lowercase()))
        }
        _ => None,
    }
}

fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner) => conjuncts(*inner, out),
        e => out.push(e),
    }
}

/// Rewrites a subquery's `WHERE` (see [`decorrelate_scalar_subquery`]); returns the
/// conditions on the outer query alone, removed from it.
fn split_outer_conditions(select: &mut ast::Select) -> Vec<Expr> {
    let Some(selection) = select.selection.take() else {
        return Vec::new();
    };
    let locals = local_aliases(select);
    let mut parts = Vec::new();
    conjuncts(selection, &mut parts);
    // Outer columns an equality pins to a local one.
    let mut pinned: Vec<(Expr, Expr)> = Vec::new();
    for p in &parts {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = p
        {
            match (is_local(left, &locals), is_local(right, &locals)) {
                (Some(true), Some(false)) => pinned.push(((**right).clone(), (**left).clone())),
                (Some(false), Some(true)) => pinned.push(((**left).clone(), (**right).clone())),
                _ => {}
            }
        }
    }
    let mut kept = Vec::new();
    let mut guards = Vec::new();
    for mut p in parts {
        let is_pin = pinned.iter().any(|(o, l)| {
            matches!(&p, Expr::BinaryOp { left, op: BinaryOperator::Eq, right }
                if (**left == *o && **right == *l) || (**left == *l && **right == *o))
        });
        if !is_pin {
            let _ = ast::visit_expressions_mut(&mut p, |e: &mut Expr| {
                if let Some((_, local)) = pinned.iter().find(|(o, _)| o == e) {
                    *e = local.clone();
                }
                ControlFlow::<()>::Continue(())
            });
        }
        let (mut any_local, mut any_outer) = (false, false);
        let _ = ast::visit_expressions(&p, |e: &Expr| {
            match is_local(e, &locals) {
                Some(true) => any_local = true,
                Some(false) => any_outer = true,
                None => {}
            }
            ControlFlow::<()>::Continue(())
        });
        match (any_local, any_outer) {
            (false, true) => guards.push(p),
            _ => kept.push(p),
        }
    }
    select.selection = kept.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    guards
}

/// `(SELECT x FROM … WHERE …)` as `(SELECT MAX(x) FROM … WHERE …)`, when it is not one yet.
fn aggregate_scalar_subquery(query: &mut ast::Query) {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let grouped = !matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if grouped || select.projection.len() != 1 {
        return;
    }
    let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) =
        &mut select.projection[0]
    else {
        return;
    };
    if let Expr::Function(f) = e {
        let name = f.name.to_string().to_lowercase();
        if [
            "max",
            "min",
            "count",
            "sum",
            "avg",
            "array_agg",
            "string_agg",
            "bool_and",
        ]
        .contains(&name.as_str())
        {
            return;
        }
    }
    let arg = ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e.clone()));
    *e = Expr::Function(ast::Function {
        name: ObjectName::from(vec![Ident::new("max")]),
        uses_odbc_syntax: false,
        parameters: ast::FunctionArguments::None,
        args: ast::FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![arg],
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    });
    query.limit_clause = None;
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn post_visit_relation(&mut self, name: &mut ObjectName) -> ControlFlow<()> {
        // `pg_type` alone means `pg_catalog.pg_type` (its schema is always searched first).
        if let [ObjectNamePart::Identifier(id)] = name.0.as_slice() {
            if id.quote_style.is_none() && id.value.to_lowercase().starts_with("pg_") {
                let table = id.value.to_lowercase();
                name.0 = vec![
                    ObjectNamePart::Identifier(Ident::new(SCHEMA)),
                    ObjectNamePart::Identifier(Ident::new(table)),
                ];
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Subquery(_) if self.catalogs => decorrelate_scalar_subquery(expr),
            Expr::BinaryOp { op, .. } => {
                if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                    if let Some(mapped) = parts.last().and_then(|o| operator(o)) {
                        *op = mapped;
                    }
                }
            }
            Expr::Collate {
                expr: inner,
                collation,
            } => {
                let default = collation
                    .0
                    .last()
                    .is_some_and(|p| p.to_string().trim_matches('"') == "default");
                if default {
                    *expr = (**inner).clone();
                }
            }
            Expr::Cast {
                data_type: ast::DataType::Custom(name, _),
                ..
            } => {
                if let Some(t) = name.0.last().and_then(|p| cast_type(&p.to_string())) {
                    if let Expr::Cast { data_type, .. } = expr {
                        *data_type = t;
                    }
                }
            }
            Expr::Function(f) => {
                let schema =
                    f.name.0.len() == 2 && f.name.0[0].to_string().eq_ignore_ascii_case(SCHEMA);
                if schema {
                    f.name.0.remove(0);
                }
                let name = f.name.to_string().to_lowercase();
                if name == "pg_get_viewdef" {
                    if let Some(sub) = viewdef_subquery(f) {
                        *expr = sub;
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// A Postgres operator named in `OPERATOR(schema.op)`.
fn operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "=" => BinaryOperator::Eq,
        "<>" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        _ => return None,
    })
}

/// What a cast to a Postgres catalog type becomes: oids and their `reg…` aliases are
/// integers here, `pg_catalog.text` is text.
fn cast_type(name: &str) -> Option<ast::DataType> {
    match name.trim_matches('"').to_lowercase().as_str() {
        "oid" | "regclass" | "regtype" | "regnamespace" | "regproc" | "regrole" => {
            Some(ast::DataType::BigInt(None))
        }
        "text" | "name" => Some(ast::DataType::Text),
        _ => None,
    }
}

/// `pg_get_viewdef(oid[, pretty])` as a lookup in `pg_catalog.pg_views`.
fn viewdef_subquery(f: &ast::Function) -> Option<Expr> {
    let ast::FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(oid)) = list.args.first()? else {
        return None;
    };
    let sql = format!("(SELECT definition FROM {SCHEMA}.pg_views WHERE viewoid = {oid})");
    datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::GenericDialect {},
    )
    .try_with_sql(&sql)
    .ok()?
    .parse_expr()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_syntax_is_rewritten_into_what_datafusion_plans() {
        let sql = "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname \
                   OPERATOR(pg_catalog.~) '^(bids)$' COLLATE pg_catalog.default \
                   AND pg_catalog.pg_table_is_visible(c.oid) AND c.oid = '1'::pg_catalog.oid";
        let mut s = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .expect("parses")
        .remove(0);
        assert!(reads_catalogs(&s));
        rewrite(&mut s, true);
        let out = s.to_string();
        assert!(out.contains("c.relname ~ '^(bids)$'"), "{out}");
        assert!(out.contains(" pg_table_is_visible(c.oid)"), "{out}");
        assert!(
            out.contains("CAST('1' AS BIGINT)") || out.contains("'1'::BIGINT"),
            "{out}"
        );
    }
}
