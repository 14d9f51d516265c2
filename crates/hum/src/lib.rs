//! # hum
//!
//! A bounded pool of agent CLI processes ("cells") shared by many long-lived
//! agent sessions ("bees"), which never leaks a process. The wire lives in
//! the `thrum` crate; this crate holds everything else.
//!
//! Map of the crate. Its modules sit in layers, and each imports only
//! lower ones (`docs/architecture.md` draws them; `tests/layers.rs` holds
//! the code to them). Only the faces are `pub` (marked below with a link):
//! the command line `main` runs, and the layers the integration tests and
//! fuzz targets drive; the rest is the crate's own.
//!
//! - [`cli`]: the `hum` command line and its subcommands.
//! - [`cell`]: cells — spawning an agent CLI into containment, one teardown
//!   path that leaves no process, the ledger, the sentinel, observation.
//! - `acp_agent`: `hum acp`, hum as an ACP agent for editors.
//! - `config`: `hum.json`, read and checked once for every program.
//! - `doctor`: `hum doctor`, what containment this machine offers.
//! - `drain`: `hum drain`, a cluster node's sessions moved to the others.
//! - `os`: what the OS offers (the process table; Linux's cgroups,
//!   subreaper, pidfds in `os/linux/`, their absence elsewhere), where
//!   files go per OS, and hum's companion binaries beside it; the one
//!   place a target OS is named.
//! - `stack`: hum's own programs as children, started and stopped one way
//!   (`hum up`'s supervisor uses it), and humd and a worker of a command's
//!   own (`hum demo`, `hum bench`), started in order, each awaited until
//!   ready, stopped in reverse.
//! - `cellhost`: `hum cell-host`, cells without pool or daemon (tests).
//! - [`pool`]: the admission policy — events in, commands out, no I/O.
//! - [`hive`]: how an agent CLI is started and understood (argv, sessions,
//!   stream-json → thrum).
//! - `worker`: `hum worker` — thrum ↔ pool ↔ cells.
//! - [`daemon`]: `hum daemon` (humd) — routes bees to workers.
//! - [`prompt`]: `hum prompt` — one turn from the shell.
//! - `up`: `hum up` — the daemon and a worker, supervised.
//! - [`usage`]: what turns cost (the usage database), budgets, `hum usage`.
//! - [`client`]: the one typed thrum client every hum bee is made of.
//! - `status`: `hum status` — cells, pool, peers, containment.
//! - `top`: `hum top` — every cell live, in a terminal.
//! - [`reports`]: the typed `worker-status` and `status` every reader uses.
//! - `demo`: `hum demo` — the herd, watched, with the leak count at the end.
//! - `bench`: `hum bench` — herd makespan, routing overhead, throughput.
//! - `human`: bytes and durations as people read them.
//! - `http_guard`: the Host and Origin checks of every HTTP endpoint.
//! - `http_serve`: every HTTP listener served within bounds (connections,
//!   header and idle timeouts).
//! - `lifeline`: a supervised child stops when the parent that started
//!   it is gone, on any OS (a pipe's EOF).
//! - `logging`: how every hum process logs (text or JSON), and which.
//! - `logsafe`: log fields escaped so a peer cannot forge a log line.
//! - [`private_fs`]: umask 077 and private directories for all hum writes.
//! - `backoff`: waiting longer after each failure, with jitter.
//! - `stop`: the runtime every command runs on, and SIGTERM/SIGINT, the one
//!   way each is told to stop.
//! - `sim`: `hum sim-agent` (also its own binary, `hum-sim`), a faithful
//!   stand-in for the `claude` CLI with knobs for every failure hum must
//!   survive.
//!

pub(crate) mod acp_agent;
pub(crate) mod backoff;
pub(crate) mod bench;
pub mod cell;
pub(crate) mod cellhost;
pub mod cli;
pub mod client;
pub(crate) mod config;
pub mod daemon;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod drain;
pub mod gateway;
pub mod hive;
pub(crate) mod http_guard;
pub(crate) mod http_serve;
pub(crate) mod human;
pub(crate) mod lifeline;
pub(crate) mod logging;
pub(crate) mod logsafe;
pub(crate) mod os;
pub mod pool;
pub mod private_fs;
pub mod prompt;
pub mod reports;
pub(crate) mod sim;
pub(crate) mod stack;
pub(crate) mod status;
pub(crate) mod stop;
pub(crate) mod top;
pub(crate) mod up;
pub mod usage;
pub(crate) mod worker;
