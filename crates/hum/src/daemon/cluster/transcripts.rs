//! Sessions' transcripts kept in the cluster: after every turn that ended
//! well, the node serving a sid puts the transcript its worker names into
//! a JetStream object store (one object per sid, the newest wins); the
//! node a sid moves to fetches it into a private file the worker puts in
//! place before the cell starts (`--resume` then finds it).

use super::sidmap::key;
use async_nats::jetstream::{self, object_store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The largest transcript kept: a claude session of many hours is a few
/// MiB; past this the copy stops (and the session moves without it).
const MAX_TRANSCRIPT_BYTES: u64 = 64 * 1024 * 1024;

/// Copies going to or coming from NATS at once: turns end in bursts, and
/// each copy holds a transcript in memory.
const COPIES_AT_ONCE: usize = 4;

#[derive(Clone)]
pub struct Transcripts {
    store: object_store::ObjectStore,
    /// Where fetched transcripts wait for the worker (humd's own, private).
    dir: PathBuf,
    copies: Arc<tokio::sync::Semaphore>,
    /// Sids being copied now, each with the newest transcript to copy once
    /// the copy under way is done (if a turn ended meanwhile): a sid is
    /// copied once at a time, and turns that end faster than copies go
    /// cost one copy, not one each (each copy is the whole file).
    copying: Arc<std::sync::Mutex<HashMap<String, Option<PathBuf>>>>,
}

impl Transcripts {
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Transcripts, String> {
        let store = match js.get_object_store(bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.to_owned(),
                    description: Some("hum: each session's transcript".into()),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?,
        };
        let dir = crate::os::paths::default_state_dir().join("cluster-transcripts");
        crate::private_fs::create_private_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        // Files no worker took (a humd that stopped before they were used).
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            crate::private_fs::remove_own_file(&entry.path());
        }
        Ok(Transcripts {
            store,
            dir,
            copies: Arc::new(tokio::sync::Semaphore::new(COPIES_AT_ONCE)),
            copying: Default::default(),
        })
    }

    /// Keeps a copy of `sid`'s transcript at `path` (in a task of its own,
    /// after the copy of `sid` under way, if any).
    pub fn keep(&self, sid: String, path: PathBuf) {
        {
            let mut copying = self.copying.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(next) = copying.get_mut(&sid) {
                *next = Some(path);
                return;
            }
            copying.insert(sid.clone(), None);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut path = path;
            loop {
                this.copy(&sid, &path).await;
                let mut copying = this.copying.lock().unwrap_or_else(|p| p.into_inner());
                match copying.get_mut(&sid).and_then(Option::take) {
                    Some(newer) => path = newer,
                    None => {
                        copying.remove(&sid);
                        return;
                    }
                }
            }
        });
    }

    /// One copy of `sid`'s transcript at `path` into the store.
    async fn copy(&self, sid: &str, path: &std::path::Path) {
        let Ok(_permit) = self.copies.acquire().await else {
            return;
        };
        let bytes = match read_bounded(path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(event = "cluster.transcript_not_kept", sid = %sid, path = %path.display(), error = %e, "the transcript was not copied");
                return;
            }
        };
        let len = bytes.len();
        match self
            .store
            .put(key(sid).as_str(), &mut bytes.as_slice())
            .await
        {
            Ok(_) => {
                tracing::debug!(event = "cluster.transcript_kept", sid = %sid, bytes = len, "transcript copied to the cluster")
            }
            Err(e) => {
                tracing::warn!(event = "cluster.transcript_not_kept", sid = %sid, error = %e, "the transcript was not copied")
            }
        }
    }

    /// The cluster's copy of `sid`'s transcript, in a private file for the
    /// worker; none if there is none (or it cannot be had).
    pub async fn fetch(&self, sid: &str) -> Option<PathBuf> {
        let _permit = self.copies.acquire().await.ok()?;
        let mut object = match self.store.get(key(sid)).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(event = "cluster.transcript_unfetched", sid = %sid, error = %e, "the session moves without its history");
                return None;
            }
        };
        let mut bytes = Vec::new();
        if let Err(e) = (&mut object)
            .take(MAX_TRANSCRIPT_BYTES)
            .read_to_end(&mut bytes)
            .await
        {
            tracing::warn!(event = "cluster.transcript_unfetched", sid = %sid, error = %e, "the session moves without its history");
            return None;
        }
        let path = self.dir.join(format!(
            "{}-{}.jsonl",
            key(sid),
            uuid::Uuid::new_v4().simple()
        ));
        match crate::private_fs::write_private_file(&path, &bytes) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(event = "cluster.transcript_unfetched", sid = %sid, error = %e, "the session moves without its history");
                None
            }
        }
    }
}

/// A file's bytes, refused past the bound rather than cut (a cut transcript
/// is a damaged one).
async fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await?;
    let mut bytes = Vec::new();
    file.take(MAX_TRANSCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() as u64 > MAX_TRANSCRIPT_BYTES {
        return Err(std::io::Error::other(format!(
            "over {MAX_TRANSCRIPT_BYTES} bytes"
        )));
    }
    Ok(bytes)
}
