//! Where a compiled query's output columns come from: the steps pass columns through
//! (selected, or projected as bare columns) or compute new ones, and a column's origin is
//! traced through them — to find the output columns an aggregate's groups or a join of
//! tables' keys reach, which then key the output rows.

use super::{Compiled, SinkTarget, Step};

impl Compiled {
    /// For an aggregate, the output column each group column reaches unchanged (passed
    /// through the steps after the aggregate, not computed from), in the group's order;
    /// `None` when one does not reach the output as itself.
    pub(crate) fn group_columns_in_output(&self) -> Option<Vec<usize>> {
        let (agg, steps) = self.aggregate.as_ref()?;
        // For each column at this point, the group slot it is, if it is one.
        let origin: Vec<Option<usize>> = (0..agg.schema.fields().len())
            .map(|i| (i < agg.slots.len()).then_some(i))
            .collect();
        let origin = trace(steps, origin);
        (0..agg.slots.len())
            .map(|slot| origin.iter().position(|o| *o == Some(slot)))
            .collect()
    }

    /// For a join of tables whose rows can key themselves — an inner join, or a join key
    /// that is part of the left table's key, so no key column is NULL — the output columns of
    /// the left table's key and of the join key, each passed through as itself; `None`
    /// otherwise (the rows are keyed by the left key and `_join`).
    pub(crate) fn table_join_key_in_output(&self) -> Option<Vec<usize>> {
        let (l, after) = self.lookup.as_ref().filter(|(l, _)| l.table_join)?;
        let stored = self.source.relation.stored_schema().ok()?;
        let left_key: Vec<usize> = self
            .source
            .relation
            .key_names()
            .iter()
            .map(|k| stored.index_of(k).ok())
            .collect::<Option<_>>()?;
        if left_key.is_empty() {
            return None;
        }
        // Decoded columns → the join's left columns (its first) → the output.
        let decoded = self.source.decoder.schema().fields().len();
        let before = trace(&self.steps, (0..decoded).map(Some).collect());
        let joined: Vec<Option<usize>> = (0..l.schema.fields().len())
            .map(|i| before.get(i).copied().flatten())
            .collect();
        let out = trace(after, joined);
        let mut columns = Vec::new();
        for k in &left_key {
            columns.push(out.iter().position(|o| *o == Some(*k))?);
        }
        for (_, expr) in &l.keys {
            let any: &dyn std::any::Any = expr.as_ref();
            let c = any.downcast_ref::<datafusion::physical_expr::expressions::Column>()?;
            let decoded_column = before.get(c.index()).copied().flatten()?;
            if l.left_join && !left_key.contains(&decoded_column) {
                return None;
            }
            let at = out.iter().position(|o| *o == Some(decoded_column))?;
            if !columns.contains(&at) {
                columns.push(at);
            }
        }
        Some(columns)
    }

    /// Keys a join of tables' output rows by its left key and join columns when the output
    /// has them ([`Compiled::table_join_key_in_output`]): its rows then look up by key, and a
    /// sink keys by them (a left row that moves to another join key is two keys). Returns the
    /// key columns' names, comma-separated.
    pub(crate) fn key_table_join_by_output(&mut self) -> Option<String> {
        let at = self.table_join_key_in_output()?;
        let names: Vec<String> = at
            .iter()
            .map(|&i| self.output.field(i).name().clone())
            .collect();
        let SinkTarget::Topic { key, .. } = &mut self.sink else {
            return None;
        };
        *key = names.clone();
        Some(names.join(","))
    }
}

/// Which column each output column of `steps` is, given what each input column is
/// (`origin`): a column passed through (selected, or projected as a bare column) keeps its
/// origin; a computed one has none.
fn trace(steps: &[Step], mut origin: Vec<Option<usize>>) -> Vec<Option<usize>> {
    for step in steps {
        origin = match step {
            Step::Filter(_) => origin,
            Step::Columns(indices) => indices
                .iter()
                .map(|&i| origin.get(i).copied().flatten())
                .collect(),
            Step::Project(exprs, _) => exprs
                .iter()
                .map(|e| {
                    let any: &dyn std::any::Any = e.as_ref();
                    any.downcast_ref::<datafusion::physical_expr::expressions::Column>()
                        .and_then(|c| origin.get(c.index()).copied().flatten())
                })
                .collect(),
        };
    }
    origin
}
