//! The ledger: every live cell of a worker instance, on disk, so that what a
//! crashed instance left can be found and ended by the next one.
//!
//! One append-only JSON-lines file per instance, `<state>/cells/<instance>.jsonl`:
//! first the worker (pid and start time, so a live worker's ledger is never
//! swept by another), then `live` and `gone` records. Appends are single
//! writes; a torn last line (a crash mid-write) is skipped on reading, as is
//! any line that does not parse. The file is rewritten (temp file + rename)
//! when gone records outnumber live ones.

use super::procs::{ProcId, StartClock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thrum::{each_line, RawLine};

/// Longest ledger line read back; records are a few hundred bytes.
const MAX_RECORD: usize = 64 * 1024;

/// Compact once this many gone records have piled up.
const COMPACT_AFTER: usize = 256;

/// The worker a ledger belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub instance: String,
    pub pid: i32,
    pub start_time: u64,
    /// What this ledger's start times count (the worker's process table).
    /// Ledgers written before there was a choice counted boot ticks.
    #[serde(default)]
    pub clock: StartClock,
    pub cgroup_root: Option<String>,
}

impl WorkerRecord {
    pub fn proc_id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// A live cell, as recorded at spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell_id: String,
    pub pid: i32,
    pub pgid: i32,
    /// In the ledger's [`WorkerRecord::clock`].
    pub start_time: u64,
    pub instance: String,
    pub cgroup: Option<String>,
}

impl CellRecord {
    pub fn proc_id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Worker(WorkerRecord),
    Live(CellRecord),
    Gone { cell_id: String },
}

/// A ledger read back from disk.
#[derive(Debug, Default)]
pub struct ReadLedger {
    pub worker: Option<WorkerRecord>,
    /// Cells recorded live and never recorded gone, in spawn order.
    pub live: Vec<CellRecord>,
    /// Lines skipped as torn or unreadable.
    pub bad_lines: usize,
}

/// Reads a ledger, skipping what cannot be read.
pub fn read(path: &Path) -> io::Result<ReadLedger> {
    let mut out = ReadLedger::default();
    let mut live: BTreeMap<String, (usize, CellRecord)> = BTreeMap::new();
    let mut order = 0;
    each_line(
        BufReader::new(File::open(path)?),
        MAX_RECORD,
        |line| match line {
            RawLine::TooLong { .. } => out.bad_lines += 1,
            RawLine::Line(line) => match serde_json::from_slice::<Record>(line) {
                Ok(Record::Worker(w)) => out.worker = Some(w),
                Ok(Record::Live(c)) => {
                    order += 1;
                    live.insert(c.cell_id.clone(), (order, c));
                }
                Ok(Record::Gone { cell_id }) => {
                    live.remove(&cell_id);
                }
                Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                Err(_) => out.bad_lines += 1,
            },
        },
    )?;
    let mut cells: Vec<(usize, CellRecord)> = live.into_values().collect();
    cells.sort_by_key(|(n, _)| *n);
    out.live = cells.into_iter().map(|(_, c)| c).collect();
    Ok(out)
}

/// Where ledgers live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cells")
}

/// Ledger files other than `own_instance`'s.
pub fn others(state_dir: &Path, own_instance: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let own = format!("{own_instance}.jsonl");
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .filter(|p| p.file_name().is_some_and(|n| *n != *own))
        .collect();
    paths.sort();
    paths
}

/// The ledger of the running worker instance.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    worker: WorkerRecord,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    live: BTreeMap<String, CellRecord>,
    gone_since_compaction: usize,
}

impl Ledger {
    /// Creates the instance's ledger (and the state directory, mode 0700).
    pub fn create(state_dir: &Path, worker: WorkerRecord) -> io::Result<Ledger> {
        let dir = dir(state_dir);
        fs::create_dir_all(&dir)?;
        restrict(state_dir);
        restrict(&dir);
        let path = dir.join(format!("{}.jsonl", worker.instance));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        file.write_all(&line(&Record::Worker(worker.clone())))?;
        Ok(Ledger {
            path,
            worker,
            state: Mutex::new(State {
                file,
                live: BTreeMap::new(),
                gone_since_compaction: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a cell as live. Written before the cell is handed out, so a
    /// crash right after still leaves a trace.
    pub fn live(&self, cell: CellRecord) -> io::Result<()> {
        let mut st = self.state.lock().expect("ledger lock");
        st.file.write_all(&line(&Record::Live(cell.clone())))?;
        st.live.insert(cell.cell_id.clone(), cell);
        Ok(())
    }

    /// Records a cell as gone, compacting when worthwhile.
    pub fn gone(&self, cell_id: &str) -> io::Result<()> {
        let mut st = self.state.lock().expect("ledger lock");
        st.file.write_all(&line(&Record::Gone {
            cell_id: cell_id.to_owned(),
        }))?;
        st.live.remove(cell_id);
        st.gone_since_compaction += 1;
        if st.gone_since_compaction >= COMPACT_AFTER.max(st.live.len()) {
            self.compact(&mut st)?;
        }
        Ok(())
    }

    /// Cells recorded live now.
    pub fn live_cells(&self) -> Vec<CellRecord> {
        self.state
            .lock()
            .expect("ledger lock")
            .live
            .values()
            .cloned()
            .collect()
    }

    fn compact(&self, st: &mut State) -> io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = Vec::new();
        out.extend(line(&Record::Worker(self.worker.clone())));
        for cell in st.live.values() {
            out.extend(line(&Record::Live(cell.clone())));
        }
        fs::write(&tmp, &out)?;
        fs::rename(&tmp, &self.path)?;
        st.file = OpenOptions::new().append(true).open(&self.path)?;
        st.gone_since_compaction = 0;
        Ok(())
    }

    /// Removes the ledger; called at clean shutdown once no cell is live.
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_file(&self.path)
    }
}

fn line(record: &Record) -> Vec<u8> {
    let mut l = serde_json::to_vec(record).expect("ledger records serialize");
    l.push(b'\n');
    l
}

/// State directories hold pids and paths of other people's processes: keep
/// them private.
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(id: &str, pid: i32) -> CellRecord {
        CellRecord {
            cell_id: id.into(),
            pid,
            pgid: pid,
            start_time: 7,
            instance: "i".into(),
            cgroup: None,
        }
    }

    fn worker() -> WorkerRecord {
        WorkerRecord {
            instance: "inst".into(),
            pid: 1,
            start_time: 2,
            clock: StartClock::UnixSeconds,
            cgroup_root: None,
        }
    }

    #[test]
    fn a_ledger_from_before_the_clock_field_counted_boot_ticks() {
        let old = r#"{"op":"worker","instance":"i","pid":5,"start_time":9,"cgroup_root":null}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.jsonl");
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let w = read(&path).unwrap().worker.unwrap();
        assert_eq!(w.clock, StartClock::BootTicks);
        // And a new one keeps what it says.
        let mut new = worker();
        new.clock = StartClock::UnixSeconds;
        let back: WorkerRecord =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }

    #[test]
    fn live_minus_gone_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::create(dir.path(), worker()).unwrap();
        ledger.live(cell("a", 10)).unwrap();
        ledger.live(cell("b", 11)).unwrap();
        ledger.gone("a").unwrap();
        ledger.live(cell("c", 12)).unwrap();
        // A crash mid-append.
        OpenOptions::new()
            .append(true)
            .open(ledger.path())
            .unwrap()
            .write_all(br#"{"op":"live","cell_id":"d","pi"#)
            .unwrap();
        let read = read(ledger.path()).unwrap();
        assert_eq!(read.worker, Some(worker()));
        assert_eq!(read.live, vec![cell("b", 11), cell("c", 12)]);
        assert_eq!(read.bad_lines, 1);
    }

    #[test]
    fn garbage_and_huge_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let mut bytes = b"\xff\xfe garbage\n".to_vec();
        bytes.extend(vec![b'{'; MAX_RECORD + 10]);
        bytes.extend(b"\n");
        bytes.extend(line(&Record::Live(cell("z", 5))));
        fs::write(&path, bytes).unwrap();
        let read = read(&path).unwrap();
        assert_eq!(read.live, vec![cell("z", 5)]);
        assert_eq!(read.bad_lines, 2);
        assert_eq!(read.worker, None);
    }

    #[test]
    fn compaction_keeps_live_cells_only() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::create(dir.path(), worker()).unwrap();
        ledger.live(cell("keep", 1)).unwrap();
        for i in 0..COMPACT_AFTER + 5 {
            ledger.live(cell(&format!("t{i}"), 100 + i as i32)).unwrap();
            ledger.gone(&format!("t{i}")).unwrap();
        }
        let text = fs::read_to_string(ledger.path()).unwrap();
        assert!(
            text.lines().count() < 30,
            "ledger was not compacted: {} lines",
            text.lines().count()
        );
        assert_eq!(read(ledger.path()).unwrap().live, vec![cell("keep", 1)]);
        assert_eq!(ledger.live_cells(), vec![cell("keep", 1)]);
    }

    #[test]
    fn others_lists_foreign_ledgers_only() {
        let dir = tempfile::tempdir().unwrap();
        let _own = Ledger::create(dir.path(), worker()).unwrap();
        let other = WorkerRecord {
            instance: "old".into(),
            ..worker()
        };
        let _old = Ledger::create(dir.path(), other).unwrap();
        let found = others(dir.path(), "inst");
        assert_eq!(found.len(), 1);
        assert!(found[0].ends_with("cells/old.jsonl"));
    }
}
