//! Windowed aggregations in the DSL: `grouped.window(Tumbling::of(10s).grace(2s))
//! .aggregate(init, add).emit(Emit::OnWindowClose)`, over the engine's window operators
//! (`crate::window`), with state in a window or session store per task. Results are keyed by
//! [`Windowed`] (the key and the window's bounds) and stamped `end - 1`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_log::Timestamp;

use crate::error::{EngineError, Result};
use crate::plan::{StoreKind, TaskSetup};
use crate::processor::TaskContext;
use crate::serde::{Json, Serde};
use crate::window::{
    Emit, LatePolicy, SessionWindows, SlicedWindows, WindowFunction, WindowKind, WindowResult,
    WindowSpec,
};

use super::graph::{Children, Op, Outlet};
use super::{slot_name, Batch, Grouped, Item, NameSlot, Stream};

/// Tumbling windows: `Tumbling::of(size).grace(g)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tumbling(WindowSpec);

impl Tumbling {
    /// Fixed windows of `size`, aligned to the epoch.
    pub fn of(size: Duration) -> Tumbling {
        Tumbling(WindowSpec::new(WindowKind::Tumbling { size }))
    }
    /// Records up to `grace` behind the watermark still count.
    pub fn grace(mut self, grace: Duration) -> Tumbling {
        self.0.grace = grace;
        self
    }
}

/// Hopping windows: `Hopping::of(size, advance).grace(g)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hopping(WindowSpec);

impl Hopping {
    /// Windows of `size` starting every `advance` (`size` a multiple of `advance`).
    pub fn of(size: Duration, advance: Duration) -> Hopping {
        Hopping(WindowSpec::new(WindowKind::Hopping { size, advance }))
    }
    /// Records up to `grace` behind the watermark still count.
    pub fn grace(mut self, grace: Duration) -> Hopping {
        self.0.grace = grace;
        self
    }
}

/// Session windows: `Session::with_gap(gap).grace(g)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session(WindowSpec);

impl Session {
    /// Per key, records at most `gap` apart form one session.
    pub fn with_gap(gap: Duration) -> Session {
        Session(WindowSpec::new(WindowKind::Session { gap }))
    }
    /// Records up to `grace` behind the watermark still count.
    pub fn grace(mut self, grace: Duration) -> Session {
        self.0.grace = grace;
        self
    }
}

impl From<Tumbling> for WindowSpec {
    fn from(w: Tumbling) -> Self {
        w.0
    }
}
impl From<Hopping> for WindowSpec {
    fn from(w: Hopping) -> Self {
        w.0
    }
}
impl From<Session> for WindowSpec {
    fn from(w: Session) -> Self {
        w.0
    }
}

/// The key of a windowed result: the grouping key and the window `[start, end)` (ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windowed<K> {
    /// The grouping key.
    pub key: K,
    /// Window start, inclusive.
    pub start: i64,
    /// Window end, exclusive.
    pub end: i64,
    /// Under emit on update, a session merged into another: this result no longer holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retracted: bool,
}

/// A grouped stream with windows, ready to aggregate.
pub struct WindowedGrouped<K, V> {
    grouped: Grouped<K, V>,
    spec: WindowSpec,
}

impl<K, V> std::fmt::Debug for WindowedGrouped<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedGrouped")
            .field("spec", &self.spec)
            .finish()
    }
}

type InitFn<A> = Arc<dyn Fn() -> A + Send + Sync>;
type AddFn<A, V> = Arc<dyn Fn(&mut A, &V, Timestamp) + Send + Sync>;
type MergeFn<A> = Arc<dyn Fn(&mut A, &A) + Send + Sync>;

/// The DSL's aggregate functions as a [`WindowFunction`] (accumulators stored as JSON).
struct DslFn<V, A> {
    init: InitFn<A>,
    add: AddFn<A, V>,
    merge: Option<MergeFn<A>>,
}

impl<V: 'static, A> WindowFunction for DslFn<V, A>
where
    A: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    type In = V;
    type Acc = A;
    fn init(&self) -> A {
        (self.init)()
    }
    fn add(&self, acc: &mut A, ts: i64, input: &V) {
        (self.add)(acc, input, Timestamp(ts))
    }
    fn merge(&self, acc: &mut A, other: &A) {
        if let Some(m) = &self.merge {
            m(acc, other);
        }
    }
    fn encode(&self, acc: &A) -> std::result::Result<Vec<u8>, String> {
        Json.serialize(acc)
    }
    fn decode(&self, bytes: &[u8]) -> std::result::Result<A, String> {
        Json.deserialize(bytes)
    }
}

impl<K, V> Grouped<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
{
    /// Windows the grouped stream by event time: [`Tumbling`], [`Hopping`] or [`Session`].
    pub fn window(&self, windows: impl Into<WindowSpec>) -> WindowedGrouped<K, V> {
        WindowedGrouped {
            grouped: Grouped {
                stream: self.stream.clone_handle(),
                name: self.name.clone(),
            },
            spec: windows.into(),
        }
    }
}

impl<K, V> WindowedGrouped<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
{
    /// What to do with late records (dropped by default; counted either way).
    pub fn late(mut self, policy: LatePolicy) -> Self {
        self.spec.late = policy;
        self
    }

    /// Names the windows' store (letters, digits, `-`, `_`).
    pub fn named(mut self, name: &str) -> Self {
        self.grouped.name = Some(name.to_string());
        self
    }

    /// Folds each window's records into `init()` with `add`. Tumbling windows only: hopping
    /// and session windows merge accumulators, so they need [`Self::aggregate_with`].
    pub fn aggregate<A>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&mut A, &V) + Send + Sync + 'static,
    ) -> WindowedTable<K, A>
    where
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        if !matches!(self.spec.kind, WindowKind::Tumbling { .. }) {
            self.grouped.stream.pipeline.plan_error(
                "hopping and session windows merge accumulators: use aggregate_with(init, add, merge)".into(),
            );
        }
        self.build(DslFn {
            init: Arc::new(init),
            add: Arc::new(move |a: &mut A, v: &V, _| add(a, v)),
            merge: None,
        })
    }

    /// Folds each window's records into `init()` with `add` (which also gets the record's
    /// event time); `merge` combines two accumulators (slices of hopping windows, sessions a
    /// record bridges).
    pub fn aggregate_with<A>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&mut A, &V, Timestamp) + Send + Sync + 'static,
        merge: impl Fn(&mut A, &A) + Send + Sync + 'static,
    ) -> WindowedTable<K, A>
    where
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        self.build(DslFn {
            init: Arc::new(init),
            add: Arc::new(add),
            merge: Some(Arc::new(merge)),
        })
    }

    /// Records per window.
    pub fn count(&self) -> WindowedTable<K, u64> {
        self.aggregate_with(|| 0u64, |n, _, _| *n += 1, |a, b| *a += b)
    }

    /// The sum of `f` over each window's records.
    pub fn sum(&self, f: impl Fn(&V) -> i64 + Send + Sync + 'static) -> WindowedTable<K, i64> {
        self.aggregate_with(|| 0i64, move |s, v, _| *s += f(v), |a, b| *a += b)
    }

    /// The smallest `f` of each window's records.
    pub fn min(&self, f: impl Fn(&V) -> i64 + Send + Sync + 'static) -> WindowedTable<K, i64> {
        self.aggregate_with(
            || i64::MAX,
            move |m, v, _| *m = (*m).min(f(v)),
            |a, b| *a = (*a).min(*b),
        )
    }

    /// The largest `f` of each window's records.
    pub fn max(&self, f: impl Fn(&V) -> i64 + Send + Sync + 'static) -> WindowedTable<K, i64> {
        self.aggregate_with(
            || i64::MIN,
            move |m, v, _| *m = (*m).max(f(v)),
            |a, b| *a = (*a).max(*b),
        )
    }

    /// The mean of `f` over each window's records.
    pub fn avg(&self, f: impl Fn(&V) -> i64 + Send + Sync + 'static) -> WindowedTable<K, Avg> {
        self.aggregate_with(
            Avg::default,
            move |a, v, _| {
                a.sum += f(v);
                a.count += 1;
            },
            |a, b| {
                a.sum += b.sum;
                a.count += b.count;
            },
        )
    }

    fn build<A>(&self, f: DslFn<V, A>) -> WindowedTable<K, A>
    where
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let stream = &self.grouped.stream;
        let pipeline = &stream.pipeline;
        if let Err(e) = self.spec.validate() {
            pipeline.plan_error(match e {
                EngineError::Plan(m) => m,
                other => other.to_string(),
            });
        }
        let name = self
            .grouped
            .name
            .clone()
            .unwrap_or_else(|| pipeline.default_name(&stream.source, "window"));
        let kind = match self.spec.kind {
            WindowKind::Session { .. } => StoreKind::Session {
                retention: self.spec.retention(),
            },
            _ => StoreKind::Window {
                retention: self.spec.retention(),
            },
        };
        let slot: NameSlot = Arc::new(Mutex::new(name.clone()));
        pipeline.add_store(
            &stream.source,
            slot.clone(),
            kind,
            &window_descriptor(&self.spec.kind),
        );
        let id = pipeline.add_operator(format!("window -> {name}"));
        let emit: Arc<Mutex<Emit>> = Arc::new(Mutex::new(self.spec.emit));
        let outlet: Outlet<Windowed<K>, A> = Outlet::new();
        let (o, s, e, f, spec) = (
            outlet.clone(),
            slot.clone(),
            emit.clone(),
            Arc::new(f),
            self.spec,
        );
        stream.outlet.add(Arc::new(move |task: &TaskSetup<'_>| {
            let mut spec = spec;
            spec.emit = *e.lock().unwrap_or_else(|p| p.into_inner());
            let store = task.store_index(&slot_name(&s))?;
            let core = match spec.kind {
                WindowKind::Session { .. } => {
                    Core::Session(SessionWindows::new(f.clone(), &spec, store, id)?)
                }
                _ => Core::Sliced(SlicedWindows::new(f.clone(), &spec, store, id)?),
            };
            let op: Box<dyn Op<K, V>> = Box::new(WindowOp {
                id,
                core,
                children: o.build(task)?,
                out: Vec::new(),
            });
            Ok(op)
        }));
        WindowedTable {
            changes: Stream {
                pipeline: pipeline.clone(),
                source: stream.source.clone(),
                outlet,
                name: None,
            },
            emit,
            store: slot,
        }
    }
}

/// The descriptor of a window store: its windows, in words that stay the same across builds.
fn window_descriptor(kind: &WindowKind) -> String {
    let ms = |d: &Duration| d.as_millis();
    match kind {
        WindowKind::Tumbling { size } => format!("tumbling {}ms json", ms(size)),
        WindowKind::Hopping { size, advance } => {
            format!("hopping {}ms every {}ms json", ms(size), ms(advance))
        }
        WindowKind::Session { gap } => format!("session gap {}ms json", ms(gap)),
    }
}

/// An average: `sum / count`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avg {
    /// Sum of the values.
    pub sum: i64,
    /// How many.
    pub count: u64,
}

impl Avg {
    /// The mean (0 for none).
    pub fn value(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

enum Core<V: 'static, A: Clone + Send + Serialize + DeserializeOwned + 'static> {
    Sliced(SlicedWindows<DslFn<V, A>>),
    Session(SessionWindows<DslFn<V, A>>),
}

/// One task's windowed aggregation operator.
struct WindowOp<K, V: 'static, A: Clone + Send + Serialize + DeserializeOwned + 'static> {
    id: usize,
    core: Core<V, A>,
    children: Children<Windowed<K>, A>,
    out: Vec<WindowResult<A>>,
}

impl<K, V, A> WindowOp<K, V, A>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
    A: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Hands the results gathered in `out` to the children as items stamped `end - 1`.
    fn emit(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(self.out.len());
        for r in self.out.drain(..) {
            let key: K =
                Json.deserialize(&r.key)
                    .map_err(|reason| EngineError::StateCorrupted {
                        store: format!("window operator {}", self.id),
                        reason,
                    })?;
            batch.push(Item {
                origin: r.origin,
                ts: Timestamp(r.end - 1),
                key: Windowed {
                    key,
                    start: r.start,
                    end: r.end,
                    retracted: r.retracted,
                },
                value: r.acc,
            });
        }
        self.children.push(ctx, batch)
    }
}

impl<K, V, A> Op<K, V> for WindowOp<K, V, A>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
    A: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        let (n, started) = (batch.len(), Instant::now());
        let mut added = 0;
        for it in batch {
            let kb = match Json.serialize(&it.key) {
                Ok(kb) => Bytes::from(kb),
                Err(e) => {
                    ctx.poison(it.origin, format!("window key: {e}"));
                    continue;
                }
            };
            let ok = match &mut self.core {
                Core::Sliced(c) => c.add(ctx, it.origin, kb, it.ts.0, &it.value)?,
                Core::Session(c) => c.add(ctx, it.origin, kb, it.ts.0, &it.value, &mut self.out)?,
            };
            added += usize::from(ok);
        }
        ctx.record_operator(self.id, n, added, started.elapsed());
        self.emit(ctx)
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        match &mut self.core {
            Core::Sliced(c) => c.on_time(ctx, &mut self.out)?,
            Core::Session(c) => c.on_time(ctx, &mut self.out)?,
        }
        self.emit(ctx)?;
        self.children.on_time(ctx)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        match &mut self.core {
            Core::Sliced(c) => c.flush(ctx, &mut self.out)?,
            Core::Session(c) => c.flush(ctx, &mut self.out)?,
        }
        self.emit(ctx)?;
        self.children.flush(ctx)
    }
}

/// The results of a windowed aggregation.
pub struct WindowedTable<K, A> {
    changes: Stream<Windowed<K>, A>,
    emit: Arc<Mutex<Emit>>,
    store: NameSlot,
}

impl<K, A> std::fmt::Debug for WindowedTable<K, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedTable")
            .field("store", &slot_name(&self.store))
            .finish()
    }
}

impl<K, A> WindowedTable<K, A>
where
    K: Clone + Send + 'static,
    A: Clone + Send + 'static,
{
    /// When results are emitted: on every update (the default) or once per window on close.
    pub fn emit(self, emit: Emit) -> Self {
        *self.emit.lock().unwrap_or_else(|p| p.into_inner()) = emit;
        self
    }

    /// The results as a stream.
    pub fn to_stream(&self) -> Stream<Windowed<K>, A> {
        self.changes.clone_handle()
    }

    /// Writes the results to a topic.
    pub fn to_topic(&self, topic: &str, key: impl Serde<Windowed<K>>, value: impl Serde<A>) {
        self.changes.to_topic(topic, key, value);
    }

    /// The name of the windows' store.
    pub fn store_name(&self) -> String {
        slot_name(&self.store)
    }
}
