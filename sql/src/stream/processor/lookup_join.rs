//! The joins with a table in a query's task: a stream's rows (or a table's signed rows)
//! looked up in the table's store here, or sent to the table's partition of their key; after
//! the repartition, those rows and the table's changes — a stream–table lookup updates its
//! store, a join of tables also turns each change of either side into joined change rows.
//! Joined rows run through the steps after the join to the sink.

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use weir_engine::TaskContext;
use weir_log::{Record, Timestamp};

use super::super::table_join;
use super::{run_steps, QueryProcessor, Role, Rows, Signs};
use crate::error::{Result, SqlError};

impl QueryProcessor {
    /// Stream rows of a join: joined here (and written), or sent to the table's partition of
    /// their key.
    pub(super) fn lookup_rows(
        &mut self,
        ctx: &mut TaskContext<'_>,
        rows: &Rows,
        times: &[i64],
        origin: &[u32],
        signs: Option<&Signs>,
    ) -> Result<usize> {
        let query = self.query.clone();
        let Some((lookup, _)) = &query.lookup else {
            return Ok(0);
        };
        let from = rows.from.values();
        if let (Role::Shuffle(topic), Some(codec)) = (&self.role, &self.left_codec) {
            let keys = lookup.stream_keys(&rows.batch)?;
            let values = codec.encode(&rows.batch)?;
            let mut sent = 0;
            for (r, (key, value)) in keys.into_iter().zip(values).enumerate() {
                // A row without a key matches nothing: only a LEFT join keeps it.
                if key.is_none() && !lookup.left_join {
                    continue;
                }
                let d = from[r] as usize;
                let mut record = Record {
                    key,
                    value: Some(value),
                    timestamp: Some(Timestamp(times[d])),
                    ..Record::default()
                };
                if let Some(signs) = signs {
                    table_join::mark(&mut record, signs, d);
                }
                ctx.emit(topic, record)
                    .map_err(|e| SqlError::Execution(e.to_string()))?;
                sent += 1;
            }
            return Ok(sent);
        }
        let (joined, matched) = lookup.join(ctx, &rows.batch)?;
        let origin_rows: Vec<u32> = matched.values().iter().map(|&m| from[m as usize]).collect();
        self.write_joined(ctx, joined, &origin_rows, times, origin)
    }

    /// Joined rows through the steps after the join, to the sink: joined row `j` came from
    /// source row `source[j]`.
    fn write_joined(
        &self,
        ctx: &mut TaskContext<'_>,
        joined: RecordBatch,
        source: &[u32],
        times: &[i64],
        origin: &[u32],
    ) -> Result<usize> {
        let Some((_, after)) = &self.query.lookup else {
            return Ok(0);
        };
        let out = run_steps(after, joined)?;
        let from: UInt32Array = out
            .from
            .values()
            .iter()
            .map(|&j| source[j as usize])
            .collect();
        let rows = Rows {
            batch: out.batch,
            from,
        };
        self.write(ctx, &rows, times, Some(origin), None, None)
    }

    /// A join of tables: the right table's changes, or the left table's signed rows, as
    /// joined changes through the steps after the join to the sink.
    pub(super) fn join_tables(&mut self, ctx: &mut TaskContext<'_>, right: bool) -> Result<usize> {
        let query = self.query.clone();
        let (Some((lookup, after)), Some(codec)) = (&query.lookup, &self.left_codec) else {
            return Ok(0);
        };
        let changes = match right {
            true => table_join::right_changes(ctx, lookup, codec)?,
            false => table_join::left_rows(ctx, lookup, codec)?,
        };
        let out = run_steps(after, changes.batch)?;
        let from: UInt32Array = out
            .from
            .values()
            .iter()
            .map(|&j| changes.source[j as usize])
            .collect();
        let rows = Rows {
            batch: out.batch,
            from,
        };
        let (keys, ops) = (Some(changes.keys.as_slice()), Some(&changes.ops));
        self.write(ctx, &rows, &changes.times, Some(&changes.origin), keys, ops)
    }

    /// The joined table's records: into its store.
    pub(super) fn update_table(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let query = self.query.clone();
        match &query.lookup {
            Some((lookup, _)) => lookup.update_table(ctx),
            None => Ok(()),
        }
    }

    /// A join's part after the repartition: stream rows (by their key's table partition) or the
    /// table's records.
    pub(super) fn join_repartitioned(&mut self, ctx: &mut TaskContext<'_>) -> Result<usize> {
        let query = self.query.clone();
        let (Some((lookup, _)), Some(codec)) = (&query.lookup, &self.left_codec) else {
            return Ok(0);
        };
        let input = ctx.input();
        let batch = codec.decode(input.iter().map(|r| r.value.as_deref().unwrap_or_default()))?;
        let times: Vec<i64> = input.iter().map(|r| r.timestamp.0).collect();
        let origin: Vec<u32> = (0..input.len() as u32).collect();
        let (joined, matched) = lookup.join(ctx, &batch)?;
        self.write_joined(ctx, joined, matched.values(), &times, &origin)
    }
}
