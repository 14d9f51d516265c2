//! The Linux process table against real processes.

use super::*;
use std::time::{Duration, Instant};

/// A child of the test, killed and reaped however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A table of the test's own: other tests' scans (through the shared
/// one) cannot forget what this one kept.
fn own_table() -> ProcFs {
    ProcFs {
        kept: Mutex::new(BTreeMap::new()),
        reads: Mutex::new(BTreeMap::new()),
    }
}

/// `program` with only `PATH` and `tag` in its environment (the
/// test's own may hold other `HUM_` entries: the suite's settings),
/// its stdin a pipe.
fn start(program: &str, args: &[&str], tag: (&str, &str)) -> Child {
    Child(
        std::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(tag.0, tag.1)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (the test needs it): {e}")),
    )
}

fn tags_of(table: &ProcFs, pid: i32) -> Option<Vec<u8>> {
    table
        .snapshot(true)
        .into_iter()
        .find(|p| p.stat.pid == pid)
        .map(|p| p.environ)
}

/// Scans until `pid`'s kept entries are `want`, within a deadline.
fn await_tags(table: &ProcFs, pid: i32, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = tags_of(table, pid);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "scan never showed {:?} for {pid}: {:?}",
            String::from_utf8_lossy(want),
            got.map(|g| String::from_utf8_lossy(&g).into_owned())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_kernel_thread_is_never_read() {
    // This process's own stat line, with the kernel-thread flag set
    // (field 9, the 7th after the command's closing paren).
    let line = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (head, tail) = line.rsplit_once(") ").unwrap();
    let mut fields: Vec<String> = tail.split(' ').map(str::to_owned).collect();
    let flags: u32 = fields[6].parse().unwrap();
    let ours = parse_stat(line.as_bytes()).unwrap().identity;
    assert!(
        matches!(ours, Some(id) if id != EnvIdentity::KERNEL),
        "{ours:?}"
    );
    fields[6] = (flags | PF_KTHREAD).to_string();
    let kthread = format!("{head}) {}", fields.join(" "));
    let kernel = parse_stat(kthread.as_bytes()).unwrap();
    assert_eq!(kernel.identity, Some(EnvIdentity::KERNEL));
    // Kept as nothing, and never read: pid 0 is no process to read.
    let table = own_table();
    assert_eq!(table.tags(0, &kernel), Vec::<u8>::new());
    assert_eq!(table.reads.lock().unwrap().get(&0), None);
}

#[test]
fn a_scan_keeps_only_the_hum_entries_of_an_environment() {
    assert_eq!(
        kept_entries(b"PATH=/bin\0HUM_CELL=a-1\0SECRET=x\0HUM_WORKER_INSTANCE=w\0"),
        b"HUM_CELL=a-1\0HUM_WORKER_INSTANCE=w\0".to_vec()
    );
    assert_eq!(kept_entries(b""), Vec::<u8>::new());
    assert_eq!(kept_entries(b"NOT_HUM=1\0XHUM_A=2"), Vec::<u8>::new());
}

#[test]
fn an_environment_seen_once_is_not_read_again_while_it_is_the_same() {
    let child = start("sleep", &["30"], ("HUM_PROCS_KEPT", "once"));
    let pid = child.0.id() as i32;
    let table = own_table();
    await_tags(&table, pid, b"HUM_PROCS_KEPT=once\0");
    let reads = || table.reads.lock().unwrap().get(&pid).copied().unwrap_or(0);
    let before = reads();
    for _ in 0..5 {
        assert_eq!(tags_of(&table, pid).unwrap(), b"HUM_PROCS_KEPT=once\0");
    }
    // The table is this test's alone: no other scan forgets the child.
    let again = reads() - before;
    assert_eq!(
        again, 0,
        "the same environment was read again {again} times in 5 scans"
    );
    drop(child);
}

#[test]
fn a_process_that_execs_with_another_environment_is_read_again() {
    // The shell is seen with one tag, then (told on its stdin)
    // replaces itself with a process carrying another: same pid, same
    // start time.
    let script = "read go; exec env HUM_PROCS_EXEC=after sleep 30";
    let mut child = start("sh", &["-c", script], ("HUM_PROCS_EXEC", "before"));
    let pid = child.0.id() as i32;
    let table = own_table();
    await_tags(&table, pid, b"HUM_PROCS_EXEC=before\0");
    use std::io::Write;
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    await_tags(&table, pid, b"HUM_PROCS_EXEC=after\0");
}

#[test]
fn a_process_whose_first_thread_exited_is_alive_and_found_by_its_tag() {
    // Its main thread ends (pthread_exit) while another waits on
    // stdin: the leader shows Z, the process runs on.
    let script = "import ctypes, sys, threading\n\
        threading.Thread(target=sys.stdin.read).start()\n\
        ctypes.CDLL(None).pthread_exit(None)\n";
    let child = start("python3", &["-c", script], ("HUM_PROCS_LEADER", "gone"));
    let pid = child.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if raw.rsplit_once(") ").unwrap().1.starts_with('Z') {
            break;
        }
        assert!(Instant::now() < deadline, "the leader never exited: {raw}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let table = own_table();
    let stat = table.stat(pid).unwrap();
    assert!(!stat.exited(), "{stat:?}");
    assert!(
        stat.rss_bytes > 0,
        "its memory, through a live thread: {stat:?}"
    );
    assert_eq!(tags_of(&table, pid).unwrap(), b"HUM_PROCS_LEADER=gone\0");
    let environ = table.environ(pid).unwrap();
    assert!(kept_entries(&environ) == b"HUM_PROCS_LEADER=gone\0");
    drop(child);
}

#[test]
fn tags_longer_than_a_cells_are_read_every_time_not_kept() {
    let long = "x".repeat(MAX_KEPT_BYTES);
    let child = start("sleep", &["30"], ("HUM_PROCS_LONG", &long));
    let pid = child.0.id() as i32;
    let table = own_table();
    let want = format!("HUM_PROCS_LONG={long}\0");
    await_tags(&table, pid, want.as_bytes());
    let reads = || table.reads.lock().unwrap().get(&pid).copied().unwrap_or(0);
    let before = reads();
    assert_eq!(tags_of(&table, pid).unwrap(), want.as_bytes());
    assert_eq!(reads() - before, 1, "read again, not kept");
    assert!(!table.kept.lock().unwrap().contains_key(&pid));
}

#[test]
fn a_killed_process_freeing_its_memory_keeps_its_tags_until_it_is_a_zombie() {
    // dd holds a 1 GiB buffer it has filled (blocked writing it to a pipe
    // nobody reads). SIGKILLed, it releases its memory before it becomes
    // a zombie: for that time `stat` shows it running with no memory
    // and its environment reads empty. The moment is short (shorter with
    // huge pages), so rounds go on until one is seen, each sighting
    // checked.
    let mut memoryless = 0;
    for _ in 0..10 {
        memoryless += one_killed_dd_seen_exiting();
        if memoryless > 0 {
            return;
        }
    }
    panic!("never saw the exit's memoryless moment in 10 rounds");
}

/// One dd killed and watched until it is a zombie: how many times it was
/// seen running with no memory (its tags checked each time).
fn one_killed_dd_seen_exiting() -> usize {
    let mut child = Child(
        std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1G", "count=2", "status=none"])
            .env_clear()
            .env("HUM_PROCS_EXITING", "kept")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dd (the test needs it): {e}")),
    );
    let pid = child.0.id() as i32;
    let table = own_table();
    let deadline = Instant::now() + Duration::from_secs(60);
    while table.stat(pid).map_or(0, |s| s.rss_bytes) < (1 << 30) {
        assert!(Instant::now() < deadline, "dd never filled its buffer");
        std::thread::sleep(Duration::from_millis(5));
    }
    await_tags(&table, pid, b"HUM_PROCS_EXITING=kept\0");
    child.0.kill().unwrap();
    let mut memoryless = 0;
    loop {
        let line = read_stat(pid).expect("a child stays until reaped");
        if line.stat.exited() {
            break;
        }
        if line.identity.is_none() {
            memoryless += 1;
            assert_eq!(
                table.tags(pid, &line),
                b"HUM_PROCS_EXITING=kept\0",
                "running, yet counted untagged: {:?}",
                line.stat
            );
        }
    }
    drop(child);
    memoryless
}
