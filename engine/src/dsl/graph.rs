//! The DSL's operator graph: built once as factories, instantiated per task.
//!
//! At build time a stream is an [`Outlet`]: the list of factories of the operators it feeds.
//! When a task starts, its processor calls the factories of its inputs' entry operators, each
//! of which builds its children through its outlet — so every task owns a private tree of
//! operator instances ([`Op`]) and an operator can keep per-task state (window buffers,
//! timers) without sharing it. Operators exchange whole batches; a fork clones the batch for
//! all children but the last.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::Result;
use crate::plan::TaskSetup;
use crate::processor::TaskContext;

use super::Batch;

/// One task's instance of an operator fed with `Batch<K, V>`.
pub(crate) trait Op<K, V>: Send {
    /// Processes a batch (never empty).
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()>;
    /// Time moved (watermark or processing-time tick): fire timers, then pass it on.
    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;
    /// A commit is next: write caches to stores, emit coalesced results, then pass it on.
    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;
}

/// Builds one task's instance of an operator (and, through its outlet, of its children).
pub(crate) type OpFactory<K, V> =
    Arc<dyn Fn(&TaskSetup<'_>) -> Result<Box<dyn Op<K, V>>> + Send + Sync>;

/// The operators a stream feeds, as factories. Filled while the pipeline is built, read when
/// tasks start; the lock is never taken on the processing path.
pub(crate) struct Outlet<K, V>(Arc<Mutex<Vec<OpFactory<K, V>>>>);

impl<K, V> Clone for Outlet<K, V> {
    fn clone(&self) -> Self {
        Outlet(self.0.clone())
    }
}

impl<K: Clone + Send + 'static, V: Clone + Send + 'static> Outlet<K, V> {
    pub(crate) fn new() -> Self {
        Outlet(Arc::new(Mutex::new(Vec::new())))
    }

    pub(crate) fn add(&self, f: OpFactory<K, V>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(f);
    }

    /// One task's instances of the operators this stream feeds.
    pub(crate) fn build(&self, task: &TaskSetup<'_>) -> Result<Children<K, V>> {
        let factories = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ops = Vec::with_capacity(factories.len());
        for f in factories {
            ops.push(f(task)?);
        }
        Ok(Children(ops))
    }
}

/// One task's instances of the operators a stream feeds.
pub(crate) struct Children<K, V>(Vec<Box<dyn Op<K, V>>>);

impl<K: Clone, V: Clone> Children<K, V> {
    /// Hands a batch to every child: clones for all but the last, which takes it.
    pub(crate) fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.0.split_last_mut() {
            None => Ok(()),
            Some((last, rest)) => {
                for c in rest {
                    c.push(ctx, batch.clone())?;
                }
                last.push(ctx, batch)
            }
        }
    }

    pub(crate) fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for c in &mut self.0 {
            c.on_time(ctx)?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for c in &mut self.0 {
            c.flush(ctx)?;
        }
        Ok(())
    }
}

/// A per-task function from a batch to a batch.
pub(crate) type StageFn<K, V, K2, V2> =
    Box<dyn FnMut(&mut TaskContext<'_>, Batch<K, V>) -> Result<Batch<K2, V2>> + Send>;

/// An operator that maps a batch to a batch and feeds its children; it counts its records
/// and its own time (children excluded) as operator `id`.
pub(crate) struct Stage<K, V, K2, V2> {
    pub(crate) id: usize,
    pub(crate) f: StageFn<K, V, K2, V2>,
    pub(crate) children: Children<K2, V2>,
}

impl<K, V, K2, V2> Op<K, V> for Stage<K, V, K2, V2>
where
    K: Send,
    V: Send,
    K2: Clone + Send,
    V2: Clone + Send,
{
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        let (n, started) = (batch.len(), Instant::now());
        let out = (self.f)(ctx, batch)?;
        ctx.record_operator(self.id, n, out.len(), started.elapsed());
        self.children.push(ctx, out)
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.on_time(ctx)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.flush(ctx)
    }
}

/// A per-task function consuming a batch; returns how many records it wrote.
pub(crate) type SinkFn<K, V> =
    Box<dyn FnMut(&mut TaskContext<'_>, Batch<K, V>) -> Result<usize> + Send>;

/// A terminal operator.
pub(crate) struct Terminal<K, V> {
    pub(crate) id: usize,
    pub(crate) f: SinkFn<K, V>,
}

impl<K: Send, V: Send> Op<K, V> for Terminal<K, V> {
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        let (n, started) = (batch.len(), Instant::now());
        let out = (self.f)(ctx, batch)?;
        ctx.record_operator(self.id, n, out, started.elapsed());
        Ok(())
    }

    fn on_time(&mut self, _ctx: &mut TaskContext<'_>) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self, _ctx: &mut TaskContext<'_>) -> Result<()> {
        Ok(())
    }
}

/// One task's instance of the operator reading an input: it turns the context's records into
/// a typed batch for its children.
pub(crate) trait Entry: Send {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;
    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;
    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;
}

/// Builds one task's instance of an entry operator.
pub(crate) type EntryFactory = Arc<dyn Fn(&TaskSetup<'_>) -> Result<Box<dyn Entry>> + Send + Sync>;

/// Per task (partition), one instance of something two operators share — the core of a join,
/// which both of its inputs' operators feed. The first operator built for a task builds it;
/// the second finds it. A restarted task builds a new one (the old one went with the old
/// processor).
pub(crate) struct PerTask<T>(
    Arc<Mutex<std::collections::BTreeMap<u32, std::sync::Weak<Mutex<T>>>>>,
);

impl<T> Clone for PerTask<T> {
    fn clone(&self) -> Self {
        PerTask(self.0.clone())
    }
}

impl<T> PerTask<T> {
    pub(crate) fn new() -> Self {
        PerTask(Arc::default())
    }

    /// The task's instance, built by `build` if it has none.
    pub(crate) fn get_or_build(
        &self,
        task: &TaskSetup<'_>,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<Mutex<T>>> {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(core) = live.get(&task.partition).and_then(std::sync::Weak::upgrade) {
            return Ok(core);
        }
        let core = Arc::new(Mutex::new(build()?));
        live.insert(task.partition, Arc::downgrade(&core));
        Ok(core)
    }
}
