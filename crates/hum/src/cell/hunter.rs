//! The hunts' scans, batched on one thread that yields to everything else.
//!
//! After a release (`release.rs`) every cell is owed a scan of the
//! machine for what of it left its cgroup. Releases come in herds: a
//! round of turns ends and a worker releases every cell it evicts within
//! a few milliseconds, at the very moment it starts their successors. A
//! scan reads two files per process on the machine, and the hunts' scans
//! were the largest share of the workers' CPU in a herd's round change
//! (BENCHMARKS.md). Here one scan answers every hunt gathered over 50
//! milliseconds, and the thread runs at nice 19: the hunt is off every
//! slot's path, so it waits for the cells' starts instead of competing
//! with them for the cores (where the CPU controller is off, as on the
//! machines measured; with it on, nice ranks the thread only against the
//! worker's own). A process found by the scan is then ended by the
//! hunt's own ladder, as before.

use super::census::Census;
use super::procs::{Proc, Procs};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long the hunter gathers hunts after the first of a batch before it
/// scans for them all. A herd's round change releases a worker's cells
/// over some tens of milliseconds: one scan then serves most of them. (A
/// batch that closed 10 ms after its latest hunt instead, so a lone hunt
/// waited less, gathered fewer and made the herd measurably slower.) An
/// escapee lives up to this much longer, and longer while every core is
/// busy (the thread runs at nice 19), against seconds of grace on the
/// ladder's rungs.
const GATHER: Duration = Duration::from_millis(50);

/// A hunt's question: is nothing of this tree left? (`true`: gone.)
type Job = (Census, oneshot::Sender<bool>);

/// The process-wide hunter thread, started on first use; `None` when it
/// could not be started (each hunt then scans for itself).
static HUNTER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

/// Whether nothing of `census`'s tree is left, by a scan that began after
/// this call, shared with the hunts queued meanwhile. `None` when there is
/// no hunter thread to ask: the caller scans for itself.
pub(super) async fn nothing_left(census: Census) -> Option<bool> {
    let jobs = HUNTER.get_or_init(start).as_ref()?;
    let (reply, answer) = oneshot::channel();
    if jobs.send((census, reply)).is_err() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                event = "cell.hunter.gone",
                "the hunter thread ended: each hunt scans for itself"
            );
        });
        return None;
    }
    answer.await.ok()
}

fn start() -> Option<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new()
        .name("hum-hunter".into())
        .spawn(move || {
            if let Err(e) = crate::os::lower_this_threads_priority() {
                tracing::debug!(event = "cell.hunter.priority_kept", error = %e, "the hunter thread runs at the worker's priority");
            }
            while let Ok(first) = queue.recv() {
                std::thread::sleep(GATHER);
                let mut batch = vec![first];
                batch.extend(queue.try_iter());
                // Everything queued by now is owed a scan that begins
                // after it was queued: the one about to be taken. A scan
                // of its own: at nice 19 this thread must not hold up a
                // caller of the shared ones (a teardown's ladder).
                answer(batch, |procs| procs.fresh_tagged_scan());
            }
        });
    match started {
        Ok(_) => Some(jobs),
        Err(e) => {
            tracing::warn!(event = "cell.hunter.unavailable", error = %e, "no hunter thread: each hunt scans for itself");
            None
        }
    }
}

/// Answers every job of `batch` from one scan per process table, each
/// taken after the whole batch was queued.
fn answer(batch: Vec<Job>, mut scan: impl FnMut(Procs) -> Arc<Vec<Proc>>) {
    let mut scans: Vec<(&'static str, Arc<Vec<Proc>>)> = Vec::new();
    for (census, reply) in batch {
        let table = census.procs.table_name();
        let seen = match scans.iter().find(|(name, _)| *name == table) {
            Some((_, seen)) => seen.clone(),
            None => {
                let seen = scan(census.procs);
                scans.push((table, seen.clone()));
                seen
            }
        };
        // A hunt that stopped waiting has nobody to tell.
        let _ = reply.send(census.gone_in(&seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::teardown::Proof;

    /// A census of the tree tagged `tag` (no group, no cgroup, no leader).
    fn census(procs: Procs, tag: &str) -> Census {
        Census {
            procs,
            tag: tag.as_bytes().to_vec(),
            pgid: None,
            cgroup: None,
            own_leader: None,
            proof: Proof::Scanned,
            unclaimed: None,
        }
    }

    /// A process carrying `tag`, ended and reaped on drop.
    struct Tagged(std::process::Child);

    impl Tagged {
        fn start(tag: &str) -> Tagged {
            let (name, value) = tag.split_once('=').unwrap();
            let child = std::process::Command::new("sleep")
                .arg("60")
                .env(name, value)
                .spawn()
                .unwrap();
            let procs = Procs::native();
            // Its environment is readable once it is past exec.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !procs.environ_has(child.id() as i32, tag.as_bytes()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the tagged child never ran"
                );
                std::thread::yield_now();
            }
            Tagged(child)
        }
    }

    impl Drop for Tagged {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn tag(what: &str) -> String {
        format!("HUM_HUNTER_TEST={what}-{}", uuid::Uuid::new_v4().simple())
    }

    #[test]
    fn one_scan_answers_every_hunt_of_a_batch_each_for_its_own_tree() {
        let (left, clean) = (tag("left"), tag("clean"));
        let _child = Tagged::start(&left);
        let procs = Procs::native();
        let mut asked = Vec::new();
        let mut batch = Vec::new();
        for t in [&left, &clean, &clean, &left] {
            let (reply, answer) = oneshot::channel();
            batch.push((census(procs, t), reply));
            asked.push(answer);
        }
        let mut scans = 0;
        answer(batch, |p| {
            scans += 1;
            p.tagged_scan()
        });
        assert_eq!(scans, 1, "one scan for the batch");
        let gone: Vec<bool> = asked
            .into_iter()
            .map(|mut a| a.try_recv().unwrap())
            .collect();
        assert_eq!(gone, [false, true, true, false]);
    }

    #[tokio::test]
    async fn the_hunter_thread_finds_a_tagged_process_and_runs_at_nice_19() {
        let (left, clean) = (tag("left"), tag("clean"));
        let child = Tagged::start(&left);
        let procs = Procs::native();
        assert_eq!(nothing_left(census(procs, &left)).await, Some(false));
        assert_eq!(nothing_left(census(procs, &clean)).await, Some(true));
        drop(child);
        assert_eq!(nothing_left(census(procs, &left)).await, Some(true));
        if cfg!(target_os = "linux") {
            // The hunter is a thread of this process, at nice 19.
            let nice = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| {
                    let dir = t.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                    (comm.trim() == "hum-hunter").then(|| {
                        // Field 19 is the nice value; the name may hold spaces.
                        let after = &stat[stat.rfind(')').unwrap() + 2..];
                        after.split(' ').nth(16).unwrap().parse::<i32>().unwrap()
                    })
                })
                .next();
            assert_eq!(nice, Some(19), "the hunter thread's nice value");
        }
    }
}
