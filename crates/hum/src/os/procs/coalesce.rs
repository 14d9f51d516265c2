//! One scan for everyone who asked meanwhile.
//!
//! A scan of the process table reads a file or two per process on the
//! machine. Teardowns come in herds (a round of turns ends, a worker tears
//! down every cell it evicts within milliseconds), and each must see the
//! table as it is after its own leader left. So a caller is owed a scan
//! that *began after it asked*: the one running when it asks is too old,
//! the next one serves every caller that came while the first ran. Callers
//! block (they run on blocking threads); one of them runs the scan.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Shares scans between callers that ask while one runs.
pub struct Coalesced<T> {
    state: Mutex<State<T>>,
    finished: Condvar,
}

struct State<T> {
    /// Scans begun so far; the number of the latest.
    started: u64,
    /// The number of the latest scan to finish.
    done: u64,
    running: bool,
    /// Callers waiting for a scan to finish.
    waiting: usize,
    latest: Option<Arc<T>>,
}

impl<T> std::fmt::Debug for Coalesced<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Coalesced")
            .field("started", &st.started)
            .field("done", &st.done)
            .field("running", &st.running)
            .finish()
    }
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Coalesced::new()
    }
}

impl<T> Coalesced<T> {
    pub const fn new() -> Coalesced<T> {
        Coalesced {
            state: Mutex::new(State {
                started: 0,
                done: 0,
                running: false,
                waiting: 0,
                latest: None,
            }),
            finished: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The result of a `scan` that began after this call: another
    /// caller's, or one this caller runs.
    pub fn get(&self, scan: impl FnOnce() -> T) -> Arc<T> {
        let mut st = self.lock();
        // Every scan numbered from here on begins after this moment.
        let owed = st.started + 1;
        loop {
            if st.done >= owed {
                if let Some(latest) = &st.latest {
                    return latest.clone();
                }
            }
            if !st.running {
                st.started += 1;
                let mine = st.started;
                st.running = true;
                drop(st);
                // Should the scan panic, the next caller runs one.
                let guard = Running(self);
                let result = Arc::new(scan());
                std::mem::forget(guard);
                let mut st = self.lock();
                st.running = false;
                st.done = mine;
                st.latest = Some(result.clone());
                drop(st);
                self.finished.notify_all();
                return result;
            }
            st.waiting += 1;
            st = self.finished.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
    }
}

/// Clears `running` if a scan unwinds, so its waiters do not wait forever.
struct Running<'a, T>(&'a Coalesced<T>);

impl<T> Drop for Running<'_, T> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;

    #[test]
    fn a_caller_alone_gets_its_own_scan_each_time() {
        let c = Coalesced::new();
        let n = AtomicU64::new(0);
        for want in 1..=3 {
            assert_eq!(*c.get(|| n.fetch_add(1, Ordering::SeqCst) + 1), want);
        }
    }

    #[test]
    fn callers_that_come_while_a_scan_runs_share_the_next_one() {
        let c = Arc::new(Coalesced::new());
        let scans = Arc::new(AtomicU64::new(0));
        // The first scan holds until every other caller is waiting.
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let first = {
            let (c, scans, entered, release) =
                (c.clone(), scans.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                *c.get(|| {
                    entered.wait();
                    release.wait();
                    scans.fetch_add(1, Ordering::SeqCst) + 1
                })
            })
        };
        entered.wait();
        // Eight callers ask while scan 1 runs: scan 1 began before them.
        let asked = Arc::new(Barrier::new(9));
        let late: Vec<_> = (0..8)
            .map(|_| {
                let (c, scans, asked) = (c.clone(), scans.clone(), asked.clone());
                std::thread::spawn(move || {
                    asked.wait();
                    *c.get(|| scans.fetch_add(1, Ordering::SeqCst) + 1)
                })
            })
            .collect();
        asked.wait();
        // Released only once all eight wait for scan 1 to end.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while c.lock().waiting < 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "the callers never waited"
            );
            std::thread::yield_now();
        }
        release.wait();
        assert_eq!(first.join().unwrap(), 1);
        let got: Vec<u64> = late.into_iter().map(|t| t.join().unwrap()).collect();
        // Each got a scan begun after it asked (not scan 1), and one scan
        // served all eight.
        assert_eq!(got, vec![2; 8]);
        assert_eq!(scans.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_scan_that_panics_leaves_the_next_caller_to_scan() {
        let c = Arc::new(Coalesced::<u64>::new());
        let c2 = c.clone();
        let panicked = std::thread::spawn(move || c2.get(|| panic!("scan failed"))).join();
        assert!(panicked.is_err());
        assert_eq!(*c.get(|| 7), 7);
    }
}
