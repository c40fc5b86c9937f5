//! The interval join's part of a query's task: each side's rows read and run through their
//! steps, then into the join (one task over both sides) or to the side's repartition topic
//! keyed by the join key; after a repartition, the records into the join. Joined rows run
//! through the steps after the join to the sink.

use weir_engine::join::Side;
use weir_engine::{Origin, TaskContext};
use weir_log::{Record, Timestamp};

use super::super::interval::{Joined, SideRow, StreamJoin};
use super::{run_steps, QueryProcessor, Role, Rows};
use crate::error::{Result, SqlError};

/// Operator ids, as the plan lists them.
const LEFT_OPERATOR: usize = 0;
const RIGHT_OPERATOR: usize = 1;
pub(crate) const JOIN_OPERATOR: usize = 2;

impl QueryProcessor {
    /// One input batch of an interval join's task: the operator it counts under and the rows
    /// it produced (joined, or sent to a repartition topic).
    pub(super) fn stream_join_batch(
        &mut self,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(usize, usize)> {
        let query = self.query.clone();
        let Some((join, _)) = &query.join else {
            return Ok((JOIN_OPERATOR, 0));
        };
        let side = match (&self.role, ctx.input_index()) {
            (Role::Shuffle(_), _) => Side::Left,
            (Role::ShuffleRight(_), _) => Side::Right,
            (_, 0) => Side::Left,
            _ => Side::Right,
        };
        if self.role == Role::Aggregate {
            let rows = repartitioned_rows(ctx);
            return Ok((JOIN_OPERATOR, self.join_rows(ctx, join, side, rows)?));
        }
        let (source, steps) = match side {
            Side::Left => (&query.source, &query.steps),
            Side::Right => (&join.right, &join.right_steps),
        };
        let (batch, origin) = self.read_stream(ctx, source)?;
        let times = self.times(ctx, source, &batch)?;
        let batch = match join.tumble {
            Some(size) => super::super::interval::fill_windows(batch, &times, size)?,
            None => batch,
        };
        let codec = join.codec(side)?;
        let mut out = 0;
        for rows in self.process_rows(ctx, steps, &batch, &origin)? {
            let keys = join.key_bytes(side, &rows.batch)?;
            let values = codec.encode(&rows.batch)?;
            let input = ctx.input();
            let side_rows: Vec<SideRow> = keys
                .into_iter()
                .zip(values)
                .zip(rows.from.values())
                .map(|((key, value), &d)| {
                    let o = origin[d as usize] as usize;
                    SideRow {
                        key,
                        ts: times[d as usize],
                        seq: (input.get(o).map_or(-1, |r| r.offset.0), 0),
                        value,
                        origin: Origin::input(o),
                    }
                })
                .collect();
            out += match &self.role {
                Role::Shuffle(topic) | Role::ShuffleRight(topic) => {
                    send(ctx, join, side, topic, side_rows)?
                }
                _ => self.join_rows(ctx, join, side, side_rows)?,
            };
        }
        let operator = match side {
            Side::Left => LEFT_OPERATOR,
            Side::Right => RIGHT_OPERATOR,
        };
        Ok((operator, out))
    }

    /// Rows of one side into the join; the pairs they complete to the sink.
    fn join_rows(
        &mut self,
        ctx: &mut TaskContext<'_>,
        join: &StreamJoin,
        side: Side,
        rows: Vec<SideRow>,
    ) -> Result<usize> {
        let Some(task) = &mut self.interval else {
            return Ok(0);
        };
        let joined = task.push(ctx, join, side, rows)?;
        self.write_stream_joined(ctx, joined, true)
    }

    /// Expires the rows no match can reach; a `LEFT` join's unmatched rows to the sink.
    pub(super) fn expire_stream_join(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let query = self.query.clone();
        let (Some((join, _)), Some(task)) = (&query.join, &mut self.interval) else {
            return Ok(());
        };
        let joined = task.expire(ctx, join)?;
        self.write_stream_joined(ctx, joined, false)?;
        Ok(())
    }

    /// Joined rows through the steps after the join, to the sink.
    fn write_stream_joined(
        &self,
        ctx: &mut TaskContext<'_>,
        joined: Joined,
        from_input: bool,
    ) -> Result<usize> {
        let Some((_, after)) = &self.query.join else {
            return Ok(0);
        };
        if joined.batch.num_rows() == 0 {
            return Ok(0);
        }
        let rows: Rows = run_steps(after, joined.batch)?;
        let origin: Vec<u32> = joined
            .origins
            .iter()
            .map(|o| o.index().map_or(u32::MAX, |i| i as u32))
            .collect();
        let origin = from_input.then_some(origin.as_slice());
        self.write(ctx, &rows, &joined.times, origin, None, None)
    }
}

/// A repartition topic's records as rows of its side: keyed by the join key, valued by the row
/// (Arrow's row format), stamped with the row's event time.
fn repartitioned_rows(ctx: &TaskContext<'_>) -> Vec<SideRow> {
    ctx.input()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let value = r.value.clone()?;
            Some(SideRow {
                key: r.key.clone(),
                ts: r.timestamp.0,
                seq: (r.offset.0, 0),
                value,
                origin: Origin::input(i),
            })
        })
        .collect()
}

/// A side's rows to its repartition topic. A row with a NULL key matches nothing: only a
/// `LEFT` join's left rows travel without one (to come out with NULLs).
fn send(
    ctx: &mut TaskContext<'_>,
    join: &StreamJoin,
    side: Side,
    topic: &str,
    rows: Vec<SideRow>,
) -> Result<usize> {
    let keeps_keyless = join.kind == weir_engine::join::JoinType::Left && side == Side::Left;
    let mut sent = 0;
    for row in rows {
        if row.key.is_none() && !keeps_keyless {
            continue;
        }
        let record = Record {
            key: row.key,
            value: Some(row.value),
            timestamp: Some(Timestamp(row.ts)),
            ..Record::default()
        };
        ctx.emit(topic, record)
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        sent += 1;
    }
    Ok(sent)
}
