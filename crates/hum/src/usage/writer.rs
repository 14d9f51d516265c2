//! The usage database's one writer: a thread of its own (SQLite blocks)
//! fed through a bounded queue. humd's router hands it finished turns with
//! [`UsageWriter::record`], which never waits: a full queue (the disk
//! stalled for seconds) drops the record and counts it, as the router must
//! never wait on anything it does not own.

use super::db::{TurnRecord, UsageDb};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Turns waiting to be written. A herd ends a few hundred turns at once;
/// this holds many herds while the disk catches up, and bounds memory at a
/// few MiB.
const QUEUE: usize = 4096;

/// Turns written per transaction at most: one commit (one fsync of the
/// WAL at most) per batch, not per turn.
const BATCH: usize = 256;

/// How often old turns are pruned (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the writer counts, for status.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    /// Turns dropped: the queue was full, or a write failed.
    pub dropped: AtomicU64,
}

pub struct UsageWriter {
    tx: Option<SyncSender<TurnRecord>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Disconnected when the thread has written everything and ended.
    done: Option<Receiver<()>>,
    pub stats: Arc<WriterStats>,
}

impl UsageWriter {
    /// Starts the writer over an open database; turns older than
    /// `retention` are pruned now and every hour.
    pub fn start(db: UsageDb, retention: Duration) -> UsageWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let s = stats.clone();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("usage-writer".into())
            .spawn(move || {
                let _done = done_tx;
                write_loop(db, rx, retention, &s)
            })
            .ok();
        if thread.is_none() {
            tracing::error!(
                event = "usage.writer_failed",
                "cannot start the usage writer thread; usage is not recorded"
            );
        }
        UsageWriter {
            tx: thread.as_ref().map(|_| tx),
            thread,
            done: Some(done),
            stats,
        }
    }

    /// Queues a turn; never waits. False when it was dropped.
    pub fn record(&self, turn: TurnRecord) -> bool {
        let Some(tx) = &self.tx else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        match tx.try_send(turn) {
            Ok(()) => true,
            Err(TrySendError::Full(t)) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 100 == 1 {
                    tracing::warn!(event = "usage.dropped", sid = %t.sid, dropped = n, "the usage writer is behind; a turn's usage is not recorded");
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Writes what is queued and stops; waits at most `within`.
    pub fn finish(mut self, within: Duration) {
        drop(self.tx.take());
        let (Some(t), Some(done)) = (self.thread.take(), self.done.take()) else {
            return;
        };
        match done.recv_timeout(within) {
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    event = "usage.writer_slow",
                    "the usage writer did not finish in time; the last turns may be lost"
                );
            }
            _ => {
                let _ = t.join();
            }
        }
    }
}

fn write_loop(mut db: UsageDb, rx: Receiver<TurnRecord>, retention: Duration, stats: &WriterStats) {
    let mut next_prune = Instant::now();
    loop {
        if Instant::now() >= next_prune {
            let before = crate::usage::unix_ms().saturating_sub(retention.as_millis() as i64);
            match db.prune(before) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    event = "usage.pruned",
                    turns = n,
                    "forgot turns past the retention"
                ),
                Err(e) => {
                    tracing::warn!(event = "usage.prune_failed", error = %e, "could not prune old usage")
                }
            }
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(t) => t,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(t) => batch.push(t),
                Err(_) => break,
            }
        }
        match db.record(&batch) {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(event = "usage.write_failed", turns = batch.len(), error = %e, "turns' usage not recorded");
            }
        }
    }
}
