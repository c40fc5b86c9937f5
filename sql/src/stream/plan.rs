//! [`QueryPlan`]: a compiled query as the engine's plan — its sub-plans (one, or a `select`
//! part writing the repartition topic and an `aggregate`/`join` part reading it), inputs,
//! stores and internal topics — and the processor each task gets.

use std::sync::Arc;

use weir_engine::{
    EventTime, InputKind, InputSpec, Plan, PlanShape, Processor, SubPlan, TaskSetup,
};

use super::{processor, Aggregate, Compiled, QueryProcessor, SinkTarget, Source};
use crate::parser::EmitMode;

/// A compiled query as the engine's plan: one task per partition of its source; a windowed
/// aggregate over several partitions repartitions its rows by group first (an internal topic),
/// so that every group meets in one task.
#[derive(Debug)]
pub struct QueryPlan {
    shape: PlanShape,
    compiled: Arc<Compiled>,
    /// The repartition topic, when the aggregate runs after one.
    repartition: Option<String>,
    /// The topic a joined table of several partitions is repartitioned into by its key.
    table_repartition: Option<String>,
}

impl QueryPlan {
    /// The plan of `compiled` under application id `app`, over a source of `partitions` (and a
    /// joined table of `table_partitions`).
    pub fn new(app: &str, compiled: Compiled, partitions: u32, table_partitions: u32) -> QueryPlan {
        if let Some((join, _)) = &compiled.join {
            let right = (join.right.relation.name.clone(), source_input(&join.right));
            let store = join_store(&compiled.source, join);
            let parts = [partitions, table_partitions];
            return QueryPlan::stream_join(app, compiled, right, store, parts);
        }
        let rel = &compiled.source.relation;
        let input = source_input(&compiled.source);
        let mut stores = Vec::new();
        let mut operators = vec![format!("select from {}", rel.name)];
        let mut subplans = Vec::new();
        let mut internal_topics = Vec::new();
        let mut repartition = None;
        if let Some((agg, _)) = &compiled.aggregate {
            operators.push(match &agg.window {
                Some(w) => format!("window {}", w.name),
                None => "group by".to_string(),
            });
            if partitions > 1 {
                let topic = weir_engine::names::repartition_topic(app, "group");
                subplans.push(SubPlan {
                    name: "select".into(),
                    inputs: vec![input.clone()],
                    stores: table_source_store(&compiled.source),
                });
                internal_topics.push(weir_engine::InternalTopic {
                    name: topic.clone(),
                    partitions_like: rel.topic.clone(),
                    partitions: None,
                });
                repartition = Some(topic);
            } else {
                stores.extend(window_stores(agg));
                stores.extend(table_source_store(&compiled.source));
            }
        }
        let mut table_input = None;
        let mut table_repartition = None;
        if let Some((l, _)) = &compiled.lookup {
            operators.push(format!("join {}", l.table.name));
            // A table join always repartitions: its left rows are signed by their own task.
            if partitions > 1 || table_partitions != 1 || l.table_join {
                // Stream rows go to the table's partition of their key.
                let topic = weir_engine::names::repartition_topic(app, "join");
                subplans.push(SubPlan {
                    name: "select".into(),
                    inputs: vec![input.clone()],
                    stores: table_source_store(&compiled.source),
                });
                internal_topics.push(weir_engine::InternalTopic {
                    name: topic.clone(),
                    partitions_like: rel.topic.clone(),
                    partitions: Some(table_partitions),
                });
                repartition = Some(topic);
            }
            table_input = Some(InputSpec::topic(&l.table.topic, InputKind::Table));
            if l.table_join && table_partitions > 1 {
                // The table's records go to the partition of their key as Weir encodes it
                // (whatever partitioned its topic: a Kafka Connect key in its schema wrapper
                // hashes elsewhere), where the left rows that look them up go. (A stream's
                // rows join the table as of when they arrive, so a stream–table lookup reads
                // the table's topic itself: one more hop would let rows overtake the table.)
                let topic = weir_engine::names::repartition_topic(app, "table");
                subplans.push(SubPlan {
                    name: "select-table".into(),
                    inputs: table_input.take().into_iter().collect(),
                    stores: Vec::new(),
                });
                internal_topics.push(weir_engine::InternalTopic {
                    name: topic.clone(),
                    partitions_like: l.table.topic.clone(),
                    partitions: Some(table_partitions),
                });
                table_input = Some(InputSpec {
                    internal: true,
                    ..InputSpec::topic(&topic, InputKind::Table)
                });
                table_repartition = Some(topic);
            }
            stores.push(weir_engine::StoreSpec::key_value(
                super::table_state::TABLE_STORE_NAME,
                &format!(
                    "sql lookup {} {:?} entries-v2",
                    l.table.name, l.table.format
                ),
            ));
            if l.table_join {
                stores.push(weir_engine::StoreSpec {
                    name: super::table_join::LEFT_INDEX_STORE.into(),
                    kind: weir_engine::StoreKind::Sorted,
                    descriptor: format!(
                        "sql table join index {} [{}] arrow-row",
                        compiled.source.relation.name,
                        l.left_schema()
                            .fields()
                            .iter()
                            .map(|f| f.data_type().to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                });
            }
        }
        let (name, input) = match &repartition {
            Some(topic) => (
                if table_input.is_some() {
                    "join"
                } else {
                    "aggregate"
                },
                InputSpec {
                    internal: true,
                    ..InputSpec::topic(topic, InputKind::Stream)
                },
            ),
            None => ("query", input),
        };
        if let (Some(_), Some((agg, _))) = (&repartition, &compiled.aggregate) {
            stores.extend(window_stores(agg));
        }
        subplans.push(SubPlan {
            name: name.into(),
            inputs: std::iter::once(input).chain(table_input).collect(),
            stores,
        });
        let parts = (subplans, internal_topics, operators);
        let mut plan = QueryPlan::assemble(app, compiled, parts, repartition);
        plan.table_repartition = table_repartition;
        plan
    }
}

impl QueryPlan {
    /// The plan of `compiled` from its parts: sub-plans, internal topics, operator names.
    fn assemble(
        app: &str,
        compiled: Compiled,
        (subplans, internal_topics, operators): (
            Vec<SubPlan>,
            Vec<weir_engine::InternalTopic>,
            Vec<String>,
        ),
        repartition: Option<String>,
    ) -> QueryPlan {
        let sinks = match &compiled.sink {
            SinkTarget::Topic { topic, .. } => vec![topic.clone()],
            SinkTarget::Blackhole => Vec::new(),
        };
        QueryPlan {
            shape: PlanShape {
                app: app.to_string(),
                subplans,
                sinks,
                internal_topics,
                operators,
            },
            compiled: Arc::new(compiled),
            repartition,
            table_repartition: None,
        }
    }
}

/// The store of a table source's rows (in the tasks that read it), if the source is a table.
fn table_source_store(source: &Source) -> Vec<weir_engine::StoreSpec> {
    match &source.table {
        None => Vec::new(),
        Some(_) => vec![weir_engine::StoreSpec::key_value(
            super::table_state::SOURCE_STORE_NAME,
            &format!(
                "sql table source {} {:?}",
                source.relation.name, source.relation.format
            ),
        )],
    }
}

/// A source's input: its topic (or generator), its event time extracted by the processor
/// when it declares one.
fn source_input(source: &Source) -> InputSpec {
    let event_time = match &source.event_time {
        Some((_, lag)) => EventTime {
            source: weir_engine::TimeSource::Extracted,
            out_of_orderness: *lag,
        },
        None => EventTime::default(),
    };
    InputSpec {
        event_time,
        generated: source.datagen.as_ref().map(|g| g.input()),
        ..InputSpec::topic(&source.relation.topic, InputKind::Stream)
    }
}

impl QueryPlan {
    /// An interval join of two streams: one task over both when each has one partition; else
    /// each side's rows repartitioned by the join key into a topic of its own (as many
    /// partitions as the larger side), and the join's tasks read both.
    fn stream_join(
        app: &str,
        compiled: Compiled,
        (right_name, right_input): (String, InputSpec),
        store: weir_engine::StoreSpec,
        [left_parts, right_parts]: [u32; 2],
    ) -> QueryPlan {
        let left_name = &compiled.source.relation.name;
        let left_input = source_input(&compiled.source);
        let operators = vec![
            format!("select from {left_name}"),
            format!("select from {right_name}"),
            format!("interval join {left_name} {right_name}"),
        ];
        let mut subplans = Vec::new();
        let mut internal_topics = Vec::new();
        let mut repartition = None;
        let inputs = if left_parts == 1 && right_parts == 1 {
            vec![left_input, right_input]
        } else {
            let n = left_parts.max(right_parts);
            let mut inputs = Vec::new();
            for (side, input) in [("left", left_input), ("right", right_input)] {
                let topic = weir_engine::names::repartition_topic(app, &format!("join-{side}"));
                internal_topics.push(weir_engine::InternalTopic {
                    name: topic.clone(),
                    partitions_like: input.topic.clone(),
                    partitions: Some(n),
                });
                subplans.push(SubPlan {
                    name: format!("select-{side}"),
                    inputs: vec![input],
                    stores: Vec::new(),
                });
                inputs.push(InputSpec {
                    internal: true,
                    ..InputSpec::topic(&topic, InputKind::Stream)
                });
            }
            repartition = Some(inputs[0].topic.clone());
            inputs
        };
        subplans.push(SubPlan {
            name: "join".into(),
            inputs,
            stores: vec![store],
        });
        let parts = (subplans, internal_topics, operators);
        QueryPlan::assemble(app, compiled, parts, repartition)
    }
}

/// The store of an interval join; its descriptor names the sides, the join and its window, so
/// a changed query never restores another's state.
fn join_store(left: &Source, join: &super::interval::StreamJoin) -> weir_engine::StoreSpec {
    weir_engine::StoreSpec {
        name: "join".into(),
        kind: weir_engine::StoreKind::Window {
            retention: join.window.retention(),
        },
        descriptor: format!(
            "sql interval join {:?} {:?} {} {} arrow-row",
            join.kind, join.window, left.relation.name, join.right.relation.name
        ),
    }
}

/// The stores of an aggregate: its windows (or groups), and, for windows that emit changes,
/// the results last emitted.
fn window_stores(agg: &Aggregate) -> Vec<weir_engine::StoreSpec> {
    let mut stores = vec![window_store(agg)];
    if let (Some(w), EmitMode::Changes) = (&agg.window, agg.emit) {
        let retention = weir_engine::WindowSpec::new(w.kind).retention();
        stores.push(weir_engine::StoreSpec {
            name: "emitted".into(),
            kind: weir_engine::StoreKind::Window { retention },
            descriptor: format!("sql emitted {}", window_store(agg).descriptor),
        });
    }
    stores
}

/// The window store of a windowed aggregate; its descriptor names the aggregates and key
/// types, so a changed query never restores another query's state.
fn window_store(agg: &Aggregate) -> weir_engine::StoreSpec {
    let keys: Vec<String> = agg
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    let aggs: Vec<String> = agg
        .aggregates
        .iter()
        .map(|a| format!("{:?}", a.kind))
        .collect();
    let Some(window) = &agg.window else {
        return weir_engine::StoreSpec::key_value(
            "groups",
            &format!(
                "sql updating [{}] [{}] arrow-row{}",
                keys.join(","),
                aggs.join(","),
                if agg.retracting { " retracting" } else { "" }
            ),
        );
    };
    let spec = weir_engine::WindowSpec::new(window.kind);
    let retention = spec.retention();
    let kind = match window.kind {
        weir_engine::WindowKind::Session { .. } => weir_engine::StoreKind::Session { retention },
        _ => weir_engine::StoreKind::Window { retention },
    };
    weir_engine::StoreSpec {
        name: "window".into(),
        kind,
        descriptor: format!(
            "sql {:?} [{}] [{}] arrow-row",
            window.kind,
            keys.join(","),
            aggs.join(",")
        ),
    }
}

impl Plan for QueryPlan {
    fn shape(&self) -> &PlanShape {
        &self.shape
    }

    fn processor(&self, task: TaskSetup<'_>) -> weir_engine::Result<Box<dyn Processor>> {
        let internal = |i: usize| self.shape.internal_topics.get(i).map(|t| t.name.clone());
        let role = match (&self.repartition, task.spec.name.as_str()) {
            (Some(_), "select-left") => processor::Role::Shuffle(internal(0).unwrap_or_default()),
            (Some(_), "select-right") => {
                processor::Role::ShuffleRight(internal(1).unwrap_or_default())
            }
            (Some(topic), "select") => processor::Role::Shuffle(topic.clone()),
            (Some(_), "select-table") => {
                processor::Role::ShuffleTable(self.table_repartition.clone().unwrap_or_default())
            }
            (Some(_), _) => processor::Role::Aggregate,
            (None, _) => processor::Role::Whole,
        };
        let processor = QueryProcessor::new(self.compiled.clone(), task.partition, role)
            .map_err(|e| weir_engine::EngineError::Plan(e.to_string()))?;
        Ok(Box::new(processor))
    }
}
