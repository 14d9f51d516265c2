//! Session affinity for HTTP clients: which sid a request belongs to, and
//! whether its cell already holds the conversation. Pure; no I/O.
//!
//! The rule, first that applies:
//! 1. an explicit session header: `x-hum-session`, else
//!    `X-Claude-Code-Session-Id`;
//! 2. the body's user id: OpenAI's `user`, Anthropic's `metadata.user_id`;
//! 3. the conversation so far: every message but the new last one is hashed,
//!    and looked up among the conversations this gateway has answered (each
//!    remembered under the hash of its messages plus the reply); a hit gives
//!    the same sid back, a miss starts a new sid.
//!
//! Whatever the source, the cell is sent only the new user turn when the
//! gateway knows that sid already holds exactly the earlier messages;
//! otherwise (a new sid for a conversation with history, an edited history,
//! a restarted gateway) the earlier messages are replayed in the prompt so
//! nothing is lost.

use lru::LruCache;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;

/// Conversations remembered; the least recently used is forgotten past
/// this.
pub const REMEMBERED: usize = 10_000;

/// One message of a request, reduced to what the cell needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub text: String,
}

impl Message {
    pub fn new(role: &str, text: &str) -> Message {
        Message {
            role: role.to_owned(),
            text: text.to_owned(),
        }
    }
}

/// Where the sid came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    User,
    History,
    New,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub sid: String,
    pub source: Source,
    /// The text to send the cell: the new user turn, or the replayed
    /// history followed by it.
    pub prompt: String,
    pub replayed: bool,
}

pub type Digest32 = [u8; 32];

/// The digest of a conversation's messages, roles and texts.
pub fn digest(messages: &[Message]) -> Digest32 {
    let mut h = Sha256::new();
    for m in messages {
        feed(&mut h, m);
    }
    h.finalize().into()
}

fn feed(h: &mut Sha256, m: &Message) {
    h.update(m.role.as_bytes());
    h.update([0]);
    h.update(m.text.as_bytes());
    h.update([0]);
}

/// The digest of every prefix of `messages` (`[k]` is [`digest`] of
/// `messages[..k]`), in one pass over them: what a request is compared
/// with many conversations by, without hashing it again for each.
pub fn prefix_digests(messages: &[Message]) -> Vec<Digest32> {
    let mut h = Sha256::new();
    let mut out = Vec::with_capacity(messages.len() + 1);
    out.push(h.clone().finalize().into());
    for m in messages {
        feed(&mut h, m);
        out.push(h.clone().finalize().into());
    }
    out
}

/// The gateway's memory of conversations.
#[derive(Debug)]
pub struct Affinity {
    /// hash(conversation including the last reply) → sid.
    by_history: LruCache<Digest32, String>,
    /// sid → hash of what its cell holds.
    held: LruCache<String, Digest32>,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity::with_capacity(REMEMBERED)
    }
}

/// The earlier messages written out for a cell that has not seen them.
fn replay(earlier: &[Message], last: &str) -> String {
    let mut out = String::from("(Earlier in this conversation:)\n");
    for m in earlier {
        out.push_str(&format!("[{}] {}\n", m.role, m.text));
    }
    out.push_str("(Now:)\n");
    out.push_str(last);
    out
}

impl Affinity {
    pub fn with_capacity(capacity: usize) -> Affinity {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Affinity {
            by_history: LruCache::new(capacity),
            held: LruCache::new(capacity),
        }
    }

    /// Decides the sid and the prompt for `messages` (the last one is the
    /// new user turn; system messages are not part of it). A conversation
    /// found counts as used: the ones forgotten first are those nobody
    /// continued for longest. A history whose sid is `busy` (another
    /// request's turn is on it: the same history sent twice at once) gets
    /// a new sid and is replayed, rather than share a cell with a
    /// conversation that is now another.
    pub fn decide(
        &mut self,
        header: Option<&str>,
        user: Option<&str>,
        messages: &[Message],
        busy: impl Fn(&str) -> bool,
    ) -> Decision {
        let (earlier, last) = match messages.split_last() {
            Some((last, earlier)) => (earlier, last.text.as_str()),
            None => (&[][..], ""),
        };
        let key = digest(earlier);
        let clean = |s: &str| s.trim().to_owned();
        let (sid, source) = if let Some(h) = header.filter(|h| !h.trim().is_empty()) {
            (clean(h), Source::Header)
        } else if let Some(u) = user.filter(|u| !u.trim().is_empty()) {
            (format!("user-{}", clean(u)), Source::User)
        } else if let Some(sid) = self
            .by_history
            .get(&key)
            .filter(|sid| !earlier.is_empty() && !busy(sid))
        {
            (sid.clone(), Source::History)
        } else {
            (
                format!("conv-{}", uuid::Uuid::new_v4().simple()),
                Source::New,
            )
        };
        // Nothing earlier: nothing to replay.
        let holds = earlier.is_empty() || self.held.get(&sid) == Some(&key);
        if holds {
            Decision {
                sid,
                source,
                prompt: last.to_owned(),
                replayed: false,
            }
        } else {
            Decision {
                sid,
                source,
                prompt: replay(earlier, last),
                replayed: true,
            }
        }
    }

    /// Records that `sid` answered `messages` with `reply`: its cell now
    /// holds them all, and the next request of the conversation finds it.
    pub fn remember(&mut self, sid: &str, messages: &[Message], reply: &str) {
        let mut all = messages.to_vec();
        all.push(Message::new("assistant", reply));
        let key = digest(&all);
        self.by_history.put(key, sid.to_owned());
        self.held.put(sid.to_owned(), key);
    }
}

/// The conversation a request belongs to, as far as tool results go: only
/// a request of the same conversation may answer a parked turn's calls (a
/// client holding the gateway token cannot answer another conversation's
/// calls, even knowing their ids). A conversation is named by its session
/// header or user id when the request gave one, else by its messages: a
/// continuation carries the earlier messages again, unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Named(String),
    History { digest: Digest32, len: usize },
}

impl Owner {
    /// The conversation of a request with this session header, user id and
    /// messages.
    pub fn of(header: Option<&str>, user: Option<&str>, messages: &[Message]) -> Owner {
        match header.or(user) {
            Some(name) => Owner::Named(name.to_owned()),
            None => Owner::History {
                digest: digest(messages),
                len: messages.len(),
            },
        }
    }

    /// Whether a request (header, user, messages) continues this
    /// conversation: the same name, or messages that begin with the ones
    /// this conversation had.
    pub fn continued_by(
        &self,
        header: Option<&str>,
        user: Option<&str>,
        messages: &[Message],
    ) -> bool {
        match self {
            Owner::Named(name) => header.or(user) == Some(name.as_str()),
            Owner::History { digest, len } => {
                header.or(user).is_none()
                    && messages.len() >= *len
                    && self::digest(&messages[..*len]) == *digest
            }
        }
    }

    /// Whether a request is a later message of this conversation: the
    /// same name, or messages that begin with this conversation's and go
    /// on past them (a request with the same messages only is a new run of
    /// the same task, not a continuation). `prefixes` are the request's
    /// [`prefix_digests`].
    pub fn extended_by(
        &self,
        header: Option<&str>,
        user: Option<&str>,
        prefixes: &[Digest32],
    ) -> bool {
        match self {
            Owner::Named(name) => header.or(user) == Some(name.as_str()),
            Owner::History { digest, len } => {
                header.or(user).is_none() && prefixes.len() > *len + 1 && prefixes[*len] == *digest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, text: &str) -> Message {
        Message::new(role, text)
    }

    #[test]
    fn a_later_message_extends_a_conversation_but_the_same_messages_again_do_not() {
        let first = vec![m("user", "do x")];
        let owner = Owner::of(None, None, &first);
        let later = vec![m("user", "do x"), m("assistant", ""), m("user", "new")];
        assert!(owner.extended_by(None, None, &prefix_digests(&later)));
        // The same task run again from scratch is not a continuation…
        assert!(!owner.extended_by(None, None, &prefix_digests(&first)));
        // …though its results would be answered by it.
        assert!(owner.continued_by(None, None, &first));
        // Another history, or a request naming a session, is not it.
        assert!(!owner.extended_by(
            None,
            None,
            &prefix_digests(&[m("user", "do y"), m("user", "new")])
        ));
        assert!(!owner.extended_by(Some("s"), None, &prefix_digests(&later)));
        let named = Owner::of(Some("s"), None, &first);
        assert!(named.extended_by(Some("s"), None, &prefix_digests(&first)));
        assert!(!named.extended_by(None, None, &prefix_digests(&later)));
        // Every prefix's digest is the digest of that prefix.
        let p = prefix_digests(&later);
        assert_eq!(p.len(), later.len() + 1);
        for (k, d) in p.iter().enumerate() {
            assert_eq!(*d, digest(&later[..k]));
        }
    }

    #[test]
    fn the_next_request_of_a_conversation_finds_its_sid_without_replay() {
        let mut a = Affinity::default();
        let first = vec![m("user", "hi")];
        let d1 = a.decide(None, None, &first, |_| false);
        assert_eq!(
            (d1.source, d1.prompt.as_str(), d1.replayed),
            (Source::New, "hi", false)
        );
        a.remember(&d1.sid, &first, "hello!");
        let second = vec![
            m("user", "hi"),
            m("assistant", "hello!"),
            m("user", "how are you"),
        ];
        let d2 = a.decide(None, None, &second, |_| false);
        assert_eq!(
            (d2.sid.as_str(), d2.source, d2.prompt.as_str()),
            (d1.sid.as_str(), Source::History, "how are you")
        );
    }

    #[test]
    fn a_history_whose_sid_has_a_turn_on_it_gets_a_new_sid_and_is_replayed() {
        let mut a = Affinity::default();
        let first = vec![m("user", "hi")];
        let d1 = a.decide(None, None, &first, |_| false);
        a.remember(&d1.sid, &first, "hello!");
        let next = vec![m("user", "hi"), m("assistant", "hello!"), m("user", "on")];
        let d = a.decide(None, None, &next, |sid| sid == d1.sid);
        assert_ne!(d.sid, d1.sid);
        assert_eq!(d.source, Source::New);
        assert!(d.replayed && d.prompt.contains("[user] hi"), "{}", d.prompt);
        // The session a client names is its own choice: kept, busy or not.
        let named = a.decide(Some("mine"), None, &next, |_| true);
        assert_eq!((named.sid.as_str(), named.source), ("mine", Source::Header));
        // Free again: the history finds its sid.
        assert_eq!(a.decide(None, None, &next, |_| false).sid, d1.sid);
    }

    #[test]
    fn an_unknown_history_gets_a_new_sid_and_is_replayed() {
        let mut a = Affinity::default();
        let msgs = vec![
            m("user", "hi"),
            m("assistant", "hello!"),
            m("user", "and then?"),
        ];
        let d = a.decide(None, None, &msgs, |_| false);
        assert_eq!(d.source, Source::New);
        assert!(d.replayed);
        assert!(
            d.prompt.contains("[user] hi")
                && d.prompt.contains("[assistant] hello!")
                && d.prompt.ends_with("and then?")
        );
    }

    #[test]
    fn headers_win_then_user_ids() {
        let mut a = Affinity::default();
        let msgs = vec![m("user", "x")];
        assert_eq!(
            a.decide(Some("sess-1"), Some("u"), &msgs, |_| false).sid,
            "sess-1"
        );
        assert_eq!(
            a.decide(None, Some("alice"), &msgs, |_| false).sid,
            "user-alice"
        );
        assert_eq!(
            a.decide(Some("  "), Some("alice"), &msgs, |_| false).source,
            Source::User
        );
    }

    #[test]
    fn a_header_sid_whose_cell_holds_the_history_gets_only_the_new_turn() {
        let mut a = Affinity::default();
        let first = vec![m("user", "one")];
        a.remember("sess", &first, "r1");
        let next = vec![m("user", "one"), m("assistant", "r1"), m("user", "two")];
        let d = a.decide(Some("sess"), None, &next, |_| false);
        assert_eq!((d.prompt.as_str(), d.replayed), ("two", false));
        // An edited history is replayed.
        let edited = vec![m("user", "ONE"), m("assistant", "r1"), m("user", "two")];
        assert!(a.decide(Some("sess"), None, &edited, |_| false).replayed);
    }

    #[test]
    fn memory_is_bounded() {
        let mut a = Affinity::with_capacity(3);
        for i in 0..10 {
            a.remember(&format!("s{i}"), &[m("user", &format!("q{i}"))], "r");
        }
        assert_eq!(a.by_history.len(), 3);
        assert_eq!(a.held.len(), 3);
    }

    #[test]
    fn a_conversation_that_goes_on_is_remembered_over_older_idle_ones() {
        let mut a = Affinity::with_capacity(2);
        let first = vec![m("user", "keep")];
        let d = a.decide(None, None, &first, |_| false);
        a.remember(&d.sid, &first, "r");
        a.remember("other-1", &[m("user", "o1")], "r");
        // The first conversation goes on (found, so used)...
        let next = vec![m("user", "keep"), m("assistant", "r"), m("user", "more")];
        assert_eq!(
            a.decide(None, None, &next, |_| false).source,
            Source::History
        );
        // ...so a newcomer pushes out the idle one, not it.
        a.remember("other-2", &[m("user", "o2")], "r");
        let again = a.decide(None, None, &next, |_| false);
        assert_eq!((again.sid, again.source), (d.sid, Source::History));
    }
}
