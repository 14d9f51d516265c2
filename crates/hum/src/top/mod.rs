//! # `hum top`: every cell, live
//!
//! A terminal view of humd's status, refreshed every second: each cell
//! (sid, hive, state, pid, processes, memory, CPU %, turns, cost today, idle
//! time, age), the pool line (cells of the cap, queued, bootstrapping,
//! memory against `nest.maxPoolRssMb`, spend against the daily budget) and
//! the foragers. `s` sorts by the next key, ↑/↓ select, `d` tears the
//! selected cell down (after a `y`: through a `cleanup`, the same path as
//! any bee's), `q` quits and gives the terminal back as it was. When
//! stdout is not a terminal, one plain line per refresh.
//!
//! - [`model`]: what is shown, from status answers and keys (pure).
//! - [`view`]: how it is drawn (ratatui).

pub mod model;
pub mod view;

use model::{Action, Key, Top};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Milliseconds between refreshes.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Stop after this many refreshes (default: until q, or a signal).
    #[arg(long)]
    pub iterations: Option<u64>,
}

/// The shortest refresh allowed: each one is a status request to humd.
const MIN_INTERVAL_MS: u64 = 100;

/// The longest: an hour (refresh times are computed from it and must not
/// overflow the clock).
const MAX_INTERVAL_MS: u64 = 3_600_000;

/// How long a status answer may take before the screen says so.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

pub fn run(args: TopArgs) -> ExitCode {
    let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    let interval = Duration::from_millis(args.interval_ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS));
    if std::io::stdout().is_terminal() {
        interactive(&rt, &socket, interval, args.iterations)
    } else {
        plain(&rt, &socket, interval, args.iterations)
    }
}

/// Asks humd and folds the answer in; a failure is said, not fatal.
fn refresh(
    rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    top: &mut Top,
    clock: Instant,
) -> bool {
    let answer = rt.block_on(async {
        tokio::time::timeout(ANSWER_WITHIN, crate::client::fetch_status(socket)).await
    });
    match answer {
        Ok(Ok(status)) => {
            top.update(&status, clock.elapsed().as_millis() as u64);
            if top
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("humd:"))
            {
                top.message = None;
            }
            true
        }
        Ok(Err(e)) => {
            top.message = Some(format!("humd: {e} ({})", socket.display()));
            false
        }
        Err(_) => {
            top.message = Some("humd: no answer in time".into());
            false
        }
    }
}

fn plain(
    rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    interval: Duration,
    iterations: Option<u64>,
) -> ExitCode {
    use std::io::Write;
    let clock = Instant::now();
    let mut top = Top::default();
    let mut n = 0u64;
    let mut stop = rt.block_on(async { crate::stop::StopSignals::install() });
    loop {
        let ok = refresh(rt, socket, &mut top, clock);
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let line = if ok {
            format!("{stamp} {}", top.plain_line())
        } else {
            format!(
                "{stamp} {}",
                top.message.as_deref().unwrap_or("humd: unreachable")
            )
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`hum top | head`) ends it quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return ExitCode::SUCCESS;
        }
        let stopped = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = stop.next() => true,
            }
        });
        if stopped {
            return ExitCode::SUCCESS;
        }
    }
}

fn key_of(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Char('q')),
        KeyCode::Char(c) => Some(Key::Char(c)),
        KeyCode::Up => Some(Key::Up),
        KeyCode::Down => Some(Key::Down),
        KeyCode::Esc => Some(Key::Esc),
        KeyCode::Enter => Some(Key::Enter),
        _ => None,
    }
}

/// Sends a `cleanup` for `sid`: humd hands it to the worker holding it,
/// which tears the cell down through its one teardown path.
fn tear_down(
    rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    sid: &str,
) -> Result<(), String> {
    rt.block_on(async {
        let client = crate::client::Client::asker(socket, "hum top")
            .await
            .map_err(|e| e.to_string())?;
        let tone = thrum::Tone::new(thrum::Cleanup::default()).with_sid(sid);
        client.send(&tone).await.map_err(|e| e.to_string())?;
        client.close();
        // Flushed before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(1), client.outbox().closed()).await;
        Ok(())
    })
}

fn interactive(
    rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    interval: Duration,
    iterations: Option<u64>,
) -> ExitCode {
    // Raw mode and the alternate screen; a panic restores the terminal too.
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hum top: cannot take the terminal: {e}");
            return ExitCode::from(1);
        }
    };
    let clock = Instant::now();
    let mut top = Top::default();
    let mut n = 0u64;
    let mut next = Instant::now();
    let code = loop {
        if Instant::now() >= next {
            refresh(rt, socket, &mut top, clock);
            next = Instant::now() + interval;
            n += 1;
        }
        let title = format!(
            "hum top — {} — every {} ms",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            interval.as_millis()
        );
        if let Err(e) = terminal.draw(|f| view::draw(f, &top, &title)) {
            ratatui::restore();
            eprintln!("hum top: cannot draw: {e}");
            return ExitCode::from(1);
        }
        if iterations.is_some_and(|max| n >= max) {
            break ExitCode::SUCCESS;
        }
        let wait = next.saturating_duration_since(Instant::now());
        match event::poll(wait) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                ratatui::restore();
                eprintln!("hum top: cannot read the terminal: {e}");
                return ExitCode::from(1);
            }
        }
        match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                let Some(key) = key_of(k.code, k.modifiers) else {
                    continue;
                };
                match top.key(key) {
                    Action::Quit => break ExitCode::SUCCESS,
                    Action::TearDown(sid) => {
                        if let Err(e) = tear_down(rt, socket, &sid) {
                            top.message = Some(format!("cleanup of {sid} failed: {e}"));
                        }
                        // Show the cell going without waiting a whole interval.
                        next = Instant::now();
                    }
                    Action::None => {}
                }
            }
            // A resize is drawn at the top of the loop, at the new size.
            Ok(_) => {}
            Err(e) => {
                ratatui::restore();
                eprintln!("hum top: cannot read the terminal: {e}");
                return ExitCode::from(1);
            }
        }
    };
    ratatui::restore();
    code
}
