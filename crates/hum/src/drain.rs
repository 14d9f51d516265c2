//! `hum drain`: a cluster node takes no new sids, its cells go as their
//! turns end, and their sids move to the other nodes on their next
//! prompts (with their transcripts); it waits until none is left here.
//! `--off` ends it.

use crate::client::{Client, Event};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use thrum::{Body, Tone, Unknown};

#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Stop draining: this node takes sids again.
    #[arg(long)]
    pub off: bool,
    /// Return once asked, without waiting for the cells to go.
    #[arg(long, conflicts_with = "off")]
    pub no_wait: bool,
    /// The longest to wait for this node's cells to go, in seconds (busy
    /// cells go when their turns end).
    #[arg(long, default_value_t = 300)]
    pub within: u64,
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

pub fn run(args: DrainArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(async move {
        let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
        if let Err(e) = ask(&socket, args.off).await {
            eprintln!("hum drain: {e} ({})", socket.display());
            return ExitCode::from(1);
        }
        if args.off {
            println!("hum drain: this node takes sids again");
            return ExitCode::SUCCESS;
        }
        if args.no_wait {
            println!("hum drain: draining; its cells go as their turns end");
            return ExitCode::SUCCESS;
        }
        wait_empty(&socket, Duration::from_secs(args.within)).await
    })
}

/// Asks humd to drain (or not); its refusal is the error.
async fn ask(socket: &std::path::Path, off: bool) -> Result<(), String> {
    let mut client = Client::asker(socket, "hum drain")
        .await
        .map_err(|e| e.to_string())?;
    let request = Tone::new(Unknown {
        chi: crate::reports::DRAIN.into(),
        fields: crate::reports::DrainRequest { off }.fields(),
    });
    let rid = client.request(request).await.map_err(|e| e.to_string())?;
    let answer = async {
        loop {
            match client.event().await.map_err(|e| e.to_string())? {
                Event::Error { sid: None, error } => {
                    return Err(error.message.unwrap_or_else(|| error.code.to_string()))
                }
                Event::Other(t) if t.rid() == Some(rid.as_str()) => {
                    if let Body::Echo(e) = &t.body {
                        return if e.ok {
                            Ok(())
                        } else {
                            Err("humd refused".into())
                        };
                    }
                }
                _ => {}
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap_or_else(|_| Err("humd did not answer".into()));
    client.close();
    result
}

/// Waits until this node's workers hold no cell, saying how many are left
/// as it changes.
async fn wait_empty(socket: &std::path::Path, within: Duration) -> ExitCode {
    // `--within` at the edge of its type: no deadline rather than a panic.
    let deadline = Instant::now().checked_add(within);
    let mut said = None;
    loop {
        let live: Option<usize> = crate::client::fetch_status(socket).await.ok().map(|s| {
            s.workers
                .iter()
                .filter_map(|w| w.status.as_ref())
                .map(|w| w.pool.live)
                .sum()
        });
        if live == Some(0) {
            println!("hum drain: drained: no cell is left on this node");
            return ExitCode::SUCCESS;
        }
        if live != said {
            if let Some(n) = live {
                println!("hum drain: {n} cell(s) left on this node");
            }
            said = live;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "hum drain: cells are still busy after {} s; the node keeps draining",
                within.as_secs()
            );
            return ExitCode::from(4);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
