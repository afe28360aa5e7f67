//! Read transactions: a pinned snapshot (I4) and zero-copy reads of it.

use std::fmt;
use std::sync::Arc;

#[cfg(doc)]
use super::Readable;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::meta::Snapshot;
use crate::shared::{ReaderCtx, Shared, meta_signature};
use crate::storage::View;
use crate::storage::registry::Pin;
use crate::trie::Reader;

#[cfg(test)]
thread_local! {
    /// Run once between a reader's choice of snapshot and its pin (tests widen the race).
    pub(crate) static BEFORE_PIN: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// A read-only snapshot of the heap: every read sees the commit that was latest when it began.
/// Never blocks and is never blocked by the writer. `Send + Sync`. Its reads are
/// [`Readable`]'s (on `&ReadTxn`: its top-level map).
///
/// The slices it returns borrow the transaction: they stay valid (the file's bytes under them
/// are neither reused nor unmapped) until it is dropped.
///
/// ```
/// use pheap::prelude::*;
/// # let dir = tempfile::tempdir()?;
/// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
/// # let mut tx = heap.begin_write()?;
/// # tx.insert(b"a", b"1")?;
/// # tx.commit()?;
/// let rx = heap.begin_read()?;
/// for entry in rx.iter() {
///     let (key, value) = entry?;
///     println!("{key:?} = {value:?}");
/// }
/// # Ok::<(), pheap::Error>(())
/// ```
pub struct ReadTxn {
    pub(super) ctx: Arc<ReaderCtx>,
    pub(super) snap: Snapshot,
    pin: Pin,
}

impl fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTxn").field("txn", &self.snap.txn.0).finish()
    }
}

impl ReadTxn {
    /// Pin the latest commit (I4): publish it, fence, and check that it is still the latest;
    /// a writer either sees the pin or has published a newer commit that the check sees.
    /// The thread's context is reused while the meta slots read as when it was made (two atomic
    /// loads per slot); a slot being written changes its transaction id (stored first) or its
    /// checksum (stored last), so a new or torn slot always misses it.
    pub(crate) fn begin(shared: &Arc<Shared>) -> Result<ReadTxn> {
        shared.check()?;
        let local = shared.thread_readers.get_or_default();
        let (mut cached, spare) = {
            let mut l = local.lock();
            (l.ctx.clone(), l.spare.take())
        };
        let pin = match spare {
            Some(i) => Pin::Slot(i),
            None => shared.registry.enter()?,
        };
        let pinned = (|| loop {
            let ctx = match cached.take() {
                Some(c) if meta_signature(&c.view) == c.sig => c,
                _ => {
                    let (snap, view, sig) = shared.latest_cached()?;
                    let c = Arc::new(ReaderCtx { shared: shared.clone(), view, snap, sig });
                    local.lock().ctx = Some(c.clone());
                    c
                }
            };
            #[cfg(test)]
            BEFORE_PIN.with(|hook| hook.take().map(|f| f()));
            shared.registry.pin(pin, ctx.snap.txn, ctx.snap.alloc.end);
            // No slot written since the choice (the common case), or the full choice agrees.
            if meta_signature(&ctx.view) == ctx.sig || shared.latest()?.0.txn == ctx.snap.txn {
                return Ok(ctx);
            }
        })();
        match pinned {
            Ok(ctx) => Ok(ReadTxn { snap: ctx.snap, ctx, pin }),
            Err(e) => {
                shared.registry.leave(pin);
                Err(e)
            }
        }
    }

    /// The handle's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.ctx.shared
    }

    /// The mapping the snapshot is read through.
    pub(crate) fn view(&self) -> &Arc<View> {
        &self.ctx.view
    }

    pub(super) fn reader(&self) -> Reader<'_> {
        Reader { view: &self.ctx.view, limit: self.snap.alloc.end }
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The snapshot's transaction id.
    pub fn txn_id(&self) -> u64 {
        self.snap.txn.0
    }
}

impl Drop for ReadTxn {
    /// Unpin; the slot becomes the ending thread's spare if it has none, else goes back to the
    /// handle's pool.
    fn drop(&mut self) {
        let shared = &self.ctx.shared;
        // A forked child's copy must leave the parent's pin alone.
        if shared.forked() {
            return;
        }
        if let Pin::Slot(i) = self.pin {
            shared.registry.unpin(i);
            if let Some(local) = shared.thread_readers.get() {
                let mut l = local.lock();
                if l.spare.is_none() {
                    l.spare = Some(i);
                    return;
                }
            }
            shared.registry.release(i);
        } else {
            shared.registry.leave(self.pin);
        }
    }
}
