//! Sessions' transcripts kept in the cluster: after every turn that ended
//! well, the node serving a sid sends what the turn added to the
//! transcript its worker names (or the whole file, when it is not the one
//! sent before plus more) to a JetStream stream, on the sid's own subject
//! (`hum.<name>.transcript.<key>` in `hum-<name>-transcripts`); the node a
//! sid moves to reads that subject back into a private file the worker
//! puts in place before the cell starts (`--resume` then finds it). A turn
//! costs the bytes it added, not the whole session again: a session of
//! hours is a few MiB, and copying it whole after every turn kept NATS and
//! humd busy enough to slow every node's turns (see BENCHMARKS.md).
//!
//! - `segments`: what to send, and how the kept messages add up (pure).
//!
//! Sids kept by an earlier hum, one object each in the object store
//! `hum-<name>-transcripts`, are still found there.

mod segments;

use super::sidmap::key;
use async_nats::jetstream::{self, object_store, stream};
use segments::{Assembly, Piece, Plan, Sent};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The largest transcript kept: a claude session of many hours is a few
/// MiB; past this the copy stops (and the session moves without it).
const MAX_TRANSCRIPT_BYTES: u64 = 64 * 1024 * 1024;

/// Copies going to or coming from NATS at once: turns end in bursts, and
/// each copy holds a turn's bytes (or a transcript) in memory.
const COPIES_AT_ONCE: usize = 4;

/// Sids whose last copy this node remembers; past this many one is
/// forgotten, and its next copy is the whole file (correct, only dearer).
const MAX_SENT: usize = 100_000;

/// The headers of a kept message: its copy, where its bytes go, and the
/// length the send it belongs to reaches.
const COPY_HEADER: &str = "Hum-Copy";
const OFFSET_HEADER: &str = "Hum-Offset";
const UPTO_HEADER: &str = "Hum-Upto";

/// The most messages read back for one sid: a copy starts over whole every
/// [`segments::REBASE_AFTER`] appends, so a few hundred at most are kept
/// (more only while a whole copy is under way).
const MAX_PIECES: usize = 4096;

/// The stream of a cluster's transcripts and the subjects it keeps.
pub fn stream_names(cluster: &str) -> (String, String) {
    (
        format!("hum-{cluster}-transcripts"),
        format!("hum.{cluster}.transcript.*"),
    )
}

#[derive(Clone)]
pub struct Transcripts {
    js: jetstream::Context,
    stream: stream::Stream,
    cluster: String,
    /// Where an earlier hum kept them, if that bucket is there.
    legacy: Option<object_store::ObjectStore>,
    /// Where fetched transcripts wait for the worker (humd's own, private).
    dir: PathBuf,
    copies: Arc<tokio::sync::Semaphore>,
    /// Sids being copied now, each with the newest transcript to copy once
    /// the copy under way is done (if a turn ended meanwhile): a sid is
    /// copied once at a time, and turns that end faster than copies go
    /// cost one copy, not one each (each copy is the whole file).
    copying: Arc<std::sync::Mutex<HashMap<String, Option<PathBuf>>>>,
    /// What this node last sent of each sid's transcript.
    sent: Arc<std::sync::Mutex<HashMap<String, Sent>>>,
}

impl Transcripts {
    pub async fn open(js: &jetstream::Context, cluster: &str) -> Result<Transcripts, String> {
        let (name, subjects) = stream_names(cluster);
        let stream = match js.get_stream(&name).await {
            Ok(s) => s,
            Err(_) => match js
                .create_stream(stream::Config {
                    name: name.clone(),
                    description: Some(
                        "hum: each session's transcript, as each turn added to it".into(),
                    ),
                    subjects: vec![subjects],
                    storage: stream::StorageType::File,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
            {
                Ok(s) => s,
                // Another node made it first.
                Err(e) if e.to_string().contains("already in use") => {
                    js.get_stream(&name).await.map_err(|e| e.to_string())?
                }
                Err(e) => return Err(e.to_string()),
            },
        };
        let legacy = js.get_object_store(&name).await.ok();
        let dir = crate::os::paths::default_state_dir().join("cluster-transcripts");
        crate::private_fs::create_private_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        // Files no worker took (a humd that stopped before they were used).
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            crate::private_fs::remove_own_file(&entry.path());
        }
        Ok(Transcripts {
            js: js.clone(),
            stream,
            cluster: cluster.to_owned(),
            legacy,
            dir,
            copies: Arc::new(tokio::sync::Semaphore::new(COPIES_AT_ONCE)),
            copying: Default::default(),
            sent: Default::default(),
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

    /// One copy of `sid`'s transcript at `path` into the stream: what the
    /// turn added, or the whole file; once more whole when the stream
    /// refused the added bytes, if this file still holds all it keeps.
    async fn copy(&self, sid: &str, path: &std::path::Path) {
        let Ok(_permit) = self.copies.acquire().await else {
            return;
        };
        for attempt in 0..2 {
            match self.send(sid, path).await {
                Ok(sent) => {
                    tracing::debug!(event = "cluster.transcript_kept", sid = %sid, bytes = sent, "transcript copied to the cluster");
                    return;
                }
                Err(e) => {
                    self.sent_lock().remove(sid);
                    if attempt == 1 || !e.again {
                        tracing::warn!(event = "cluster.transcript_not_kept", sid = %sid, path = %path.display(), error = %e.why, "the transcript was not copied");
                        return;
                    }
                    // Refused (or not acknowledged): another node may have
                    // written the sid's copy since, and then its copy is
                    // newer, unless it is the start of this file (the sid
                    // came back here). Never a stale copy over a newer one.
                    if !self.ours_is_newer(sid, path).await {
                        tracing::info!(event = "cluster.transcript_superseded", sid = %sid, "a newer copy of this transcript is kept by another node; this one is not sent");
                        return;
                    }
                }
            }
        }
    }

    /// Whether the file at `path` holds all the cluster keeps of `sid`'s
    /// transcript and maybe more (or the cluster keeps none).
    async fn ours_is_newer(&self, sid: &str, path: &std::path::Path) -> bool {
        let kept = match self.read_back(sid).await {
            Ok(kept) => kept.unwrap_or_default(),
            Err(_) => return false,
        };
        read_bounded(path)
            .await
            .is_ok_and(|ours| ours.starts_with(&kept))
    }

    fn sent_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sent>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subject(&self, sid: &str) -> String {
        format!("hum.{}.transcript.{}", self.cluster, key(sid))
    }

    /// Sends what [`segments::plan`] says; the bytes sent.
    async fn send(&self, sid: &str, path: &std::path::Path) -> Result<usize, SendError> {
        let mut file = tokio::fs::File::open(path).await?;
        let meta = file.metadata().await?;
        let (len, ino) = (meta.len(), meta.ino());
        if len > MAX_TRANSCRIPT_BYTES {
            return Err(SendError::from(format!(
                "over {MAX_TRANSCRIPT_BYTES} bytes"
            )));
        }
        let prev = self.sent_lock().get(sid).cloned();
        let tail_now = match &prev {
            Some(p) if p.ino == ino && p.len <= len => {
                read_at(&mut file, p.len - p.tail.len() as u64, p.tail.len())
                    .await
                    .ok()
            }
            _ => None,
        };
        let (from, mut copy) = match (
            segments::plan(prev.as_ref(), len, ino, tail_now.as_deref()),
            prev,
        ) {
            (Plan::Nothing, _) => return Ok(0),
            (Plan::Append { from }, Some(p)) => (from, p),
            _ => (
                0,
                Sent {
                    base: uuid::Uuid::new_v4().simple().to_string(),
                    len: 0,
                    ino,
                    tail: Vec::new(),
                    last_seq: 0,
                    messages: 0,
                },
            ),
        };
        let bytes = read_at(&mut file, from, (len - from) as usize).await?;
        let subject = self.subject(sid);
        let mut offset = from;
        // A whole empty file is still one message: the copy begins.
        let pieces: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[]]
        } else {
            bytes.chunks(segments::SEGMENT).collect()
        };
        for piece in pieces {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(COPY_HEADER, copy.base.as_str());
            headers.insert(OFFSET_HEADER, offset.to_string());
            headers.insert(UPTO_HEADER, len.to_string());
            if offset != 0 {
                // Only right after the copy's last message: if another
                // node wrote to this sid's subject since, this is refused
                // (and `copy` decides whether to send the file whole).
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    copy.last_seq.to_string(),
                );
            }
            let ack = self
                .js
                .publish_with_headers(
                    subject.clone(),
                    headers,
                    bytes::Bytes::copy_from_slice(piece),
                )
                .await
                .map_err(|e| SendError::again(e.to_string()))?
                .await
                .map_err(|e| SendError::again(e.to_string()))?;
            copy.last_seq = ack.sequence;
            copy.messages += 1;
            offset += piece.len() as u64;
        }
        if from == 0 {
            // The copies before this one are read no more: the subject
            // keeps this copy's messages, the last ones on it. (A purge up
            // to a sequence would be simpler, but the 2.9 server Debian
            // ships purges that sequence too when a subject is given.)
            let purged = self
                .stream
                .purge()
                .filter(subject)
                .keep(u64::from(copy.messages))
                .await;
            if let Err(e) = purged {
                tracing::debug!(event = "cluster.transcript_unpurged", sid = %sid, error = %e, "older copies stay until the next whole one");
            }
        }
        copy.tail = segments::tail_after(&copy.tail, &bytes);
        copy.len = len;
        let mut sent = self.sent_lock();
        if sent.len() >= MAX_SENT && !sent.contains_key(sid) {
            if let Some(other) = sent.keys().next().cloned() {
                sent.remove(&other);
            }
        }
        sent.insert(sid.to_owned(), copy);
        Ok(bytes.len())
    }

    /// The cluster's copy of `sid`'s transcript, in a private file for the
    /// worker; none if there is none (or it cannot be had).
    pub async fn fetch(&self, sid: &str) -> Option<PathBuf> {
        let _permit = self.copies.acquire().await.ok()?;
        let bytes = match self.read_back(sid).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => self.fetch_legacy(sid).await?,
            Err(e) => {
                tracing::warn!(event = "cluster.transcript_unfetched", sid = %sid, error = %e, "the session moves without its history");
                return None;
            }
        };
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

    /// The newest copy of `sid`'s transcript in the stream, read message
    /// by message to the last one there (a copy that a node sends while
    /// this reads, or that replaces the one read, is read too: a purge
    /// only removes what came before it); none if it has none.
    async fn read_back(&self, sid: &str) -> Result<Option<Vec<u8>>, String> {
        let subject = self.subject(sid);
        let mut assembly = Assembly::default();
        let mut next = 1;
        for _ in 0..MAX_PIECES {
            let m = match self
                .stream
                .raw_message_builder()
                .next_by_subject(subject.clone())
                .sequence(next)
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(assembly.done());
                }
                Err(e) => return Err(e.to_string()),
            };
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
            if let (Some(base), Some(offset), Some(upto)) = (
                header(COPY_HEADER),
                number(OFFSET_HEADER),
                number(UPTO_HEADER),
            ) {
                assembly.add(
                    Piece {
                        base: &base,
                        offset,
                        upto,
                        bytes: &m.payload,
                    },
                    MAX_TRANSCRIPT_BYTES,
                )?;
            }
            next = m.sequence + 1;
        }
        Err(format!("over {MAX_PIECES} messages"))
    }

    /// `sid`'s transcript as an earlier hum kept it, one object per sid.
    async fn fetch_legacy(&self, sid: &str) -> Option<Vec<u8>> {
        let store = self.legacy.as_ref()?;
        let mut object = match store.get(key(sid)).await {
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
        Some(bytes)
    }
}

/// Why a copy was not sent, and whether to try once more, whole (the
/// stream refused bytes that no longer follow its copy).
struct SendError {
    why: String,
    again: bool,
}

impl SendError {
    fn again(why: String) -> SendError {
        SendError { why, again: true }
    }
}

impl From<String> for SendError {
    fn from(why: String) -> SendError {
        SendError { why, again: false }
    }
}

impl From<std::io::Error> for SendError {
    fn from(e: std::io::Error) -> SendError {
        SendError::from(e.to_string())
    }
}

/// A file's bytes, refused past the bound rather than cut.
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

/// `n` bytes of `file` from `at`.
async fn read_at(file: &mut tokio::fs::File, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
    file.seek(std::io::SeekFrom::Start(at)).await?;
    let mut bytes = vec![0; n];
    file.read_exact(&mut bytes).await?;
    Ok(bytes)
}
