//! A transcript kept as the bytes each turn appended: what a node sends
//! after a turn (the new bytes, or the whole file again when it is not the
//! one sent before plus more), and how the messages kept add up to the
//! file again. Pure: no NATS, no files.

/// What is known of the copy this node last sent of a sid's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The copy's id: every message of one copy carries it, so messages
    /// of another copy (another node's, an older one) never join it.
    pub base: String,
    /// Bytes sent so far.
    pub len: u64,
    /// The file's inode then: a file written anew (a rename) starts over.
    pub ino: u64,
    /// The last bytes sent (up to [`TAIL`]), found again at the same place
    /// in a file that only grew.
    pub tail: Vec<u8>,
    /// The stream sequence of the last message sent: the next must follow
    /// it directly on the sid's subject, or the copy starts over.
    pub last_seq: u64,
    /// Messages in the copy: past [`REBASE_AFTER`] it starts over, so a
    /// session of thousands of turns comes back in few messages.
    pub messages: u32,
}

/// Bytes of a transcript's end compared before only its growth is sent.
pub const TAIL: usize = 256;

/// Appended messages after which a copy starts over as a whole file.
pub const REBASE_AFTER: u32 = 64;

/// The largest message of a copy (NATS refuses a message past the
/// server's `max_payload`, 1 MiB unless configured).
pub const SEGMENT: usize = 128 * 1024;

/// What to send after a turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing new.
    Nothing,
    /// The bytes from `from` on, after the copy's last message.
    Append { from: u64 },
    /// The whole file, as a new copy.
    Whole,
}

/// The plan for a file of `len` bytes and inode `ino` whose bytes just
/// before `prev.len` are `tail_now` (read where `prev.tail` was).
pub fn plan(prev: Option<&Sent>, len: u64, ino: u64, tail_now: Option<&[u8]>) -> Plan {
    let Some(p) = prev else { return Plan::Whole };
    let grew_only = p.ino == ino && len >= p.len && tail_now == Some(p.tail.as_slice());
    if !grew_only || p.messages >= REBASE_AFTER {
        return Plan::Whole;
    }
    if len == p.len {
        Plan::Nothing
    } else {
        Plan::Append { from: p.len }
    }
}

/// The last [`TAIL`] bytes of `before` followed by `added`.
pub fn tail_after(before: &[u8], added: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(TAIL);
    let need_before = TAIL.saturating_sub(added.len()).min(before.len());
    t.extend_from_slice(&before[before.len() - need_before..]);
    t.extend_from_slice(&added[added.len() - (added.len().min(TAIL))..]);
    t
}

/// One kept message of a sid's transcript, as read back.
#[derive(Debug, Clone)]
pub struct Piece<'a> {
    pub base: &'a str,
    pub offset: u64,
    /// The length the send this piece belongs to reaches: the copy is
    /// whole up to there once its last piece is in.
    pub upto: u64,
    pub bytes: &'a [u8],
}

/// Adds the pieces read back (in the stream's order) up to the newest
/// copy: a piece at offset 0 starts a copy; one of the same copy that
/// starts where the copy ends continues it; any other is left out. What
/// comes out is the copy as of its last send that got all its pieces in
/// (a node that died or failed mid-send leaves a cut file otherwise), or,
/// while the newest copy has none, the copy before it. `Err` past `max`
/// bytes (a cut transcript is a damaged one).
#[derive(Debug, Default)]
pub struct Assembly {
    base: Option<String>,
    bytes: Vec<u8>,
    /// Where the current copy's last complete send ended.
    whole_to: Option<usize>,
    /// The copy before, as of its last complete send, until the current
    /// one has one.
    before: Option<Vec<u8>>,
}

impl Assembly {
    pub fn add(&mut self, piece: Piece<'_>, max: u64) -> Result<(), String> {
        if piece.offset == 0 {
            if let Some(to) = self.whole_to.take() {
                self.bytes.truncate(to);
                self.before = Some(std::mem::take(&mut self.bytes));
            }
            self.base = Some(piece.base.to_owned());
            self.bytes.clear();
        } else if self.base.as_deref() != Some(piece.base)
            || piece.offset != self.bytes.len() as u64
        {
            return Ok(());
        }
        if (self.bytes.len() + piece.bytes.len()) as u64 > max {
            return Err(format!("over {max} bytes"));
        }
        self.bytes.extend_from_slice(piece.bytes);
        if self.bytes.len() as u64 == piece.upto {
            self.whole_to = Some(self.bytes.len());
            self.before = None;
        }
        Ok(())
    }

    /// The transcript, if any send got all its pieces in.
    pub fn done(mut self) -> Option<Vec<u8>> {
        match self.whole_to {
            Some(to) => {
                self.bytes.truncate(to);
                Some(self.bytes)
            }
            None => self.before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(len: u64, tail: &[u8]) -> Sent {
        Sent {
            base: "b".into(),
            len,
            ino: 7,
            tail: tail.to_vec(),
            last_seq: 3,
            messages: 1,
        }
    }

    #[test]
    fn only_a_file_that_grew_from_what_was_sent_sends_its_growth() {
        let p = sent(10, b"abc");
        assert_eq!(plan(None, 10, 7, None), Plan::Whole);
        assert_eq!(
            plan(Some(&p), 15, 7, Some(b"abc")),
            Plan::Append { from: 10 }
        );
        assert_eq!(plan(Some(&p), 10, 7, Some(b"abc")), Plan::Nothing);
        // Shorter, rewritten before the end, or another file: all of it.
        assert_eq!(plan(Some(&p), 9, 7, Some(b"abc")), Plan::Whole);
        assert_eq!(plan(Some(&p), 15, 7, Some(b"abd")), Plan::Whole);
        assert_eq!(plan(Some(&p), 15, 8, Some(b"abc")), Plan::Whole);
        assert_eq!(plan(Some(&p), 15, 7, None), Plan::Whole);
        let many = Sent {
            messages: REBASE_AFTER,
            ..p
        };
        assert_eq!(plan(Some(&many), 15, 7, Some(b"abc")), Plan::Whole);
    }

    #[test]
    fn the_tail_is_the_last_bytes_of_what_was_sent_and_what_was_added() {
        assert_eq!(tail_after(b"abc", b"de"), b"abcde");
        let long = vec![1u8; TAIL + 10];
        assert_eq!(tail_after(b"abc", &long), vec![1u8; TAIL]);
        let mut expect = vec![9u8; TAIL - 2];
        expect.extend_from_slice(b"xy");
        assert_eq!(tail_after(&vec![9u8; TAIL], b"xy"), expect);
    }

    #[test]
    fn pieces_add_up_to_the_newest_copy_and_strays_are_left_out() {
        let mut a = Assembly::default();
        let piece = |base, offset, upto, bytes| Piece {
            base,
            offset,
            upto,
            bytes,
        };
        for p in [
            piece("old", 0, 5, b"stale".as_slice()),
            piece("new", 0, 6, b"hello "),
            piece("old", 5, 16, b" more stale"),
            piece("new", 6, 11, b"world"),
            // A gap (a message lost): not joined.
            piece("new", 20, 22, b"??"),
            piece("new", 11, 12, b"!"),
        ] {
            a.add(p, 1024).unwrap();
        }
        assert_eq!(a.done().unwrap(), b"hello world!");
        assert_eq!(Assembly::default().done(), None, "no copy began");
        let mut big = Assembly::default();
        assert!(big.add(piece("b", 0, 5, b"12345"), 4).is_err());
    }

    #[test]
    fn a_send_cut_short_is_left_out_and_a_copy_cut_short_leaves_the_one_before() {
        let piece = |base, offset, upto, bytes| Piece {
            base,
            offset,
            upto,
            bytes,
        };
        // A whole copy, then an append of two pieces of which one came.
        let mut a = Assembly::default();
        for p in [
            piece("c1", 0, 4, b"turn".as_slice()),
            piece("c1", 4, 10, b" one"),
        ] {
            a.add(p, 1024).unwrap();
        }
        assert_eq!(a.done().unwrap(), b"turn");
        // A new whole copy of two pieces, cut after the first: the one
        // before stands (a resumed session one turn short, not a cut file).
        let mut a = Assembly::default();
        for p in [
            piece("c1", 0, 4, b"turn".as_slice()),
            piece("c1", 4, 8, b" one"),
            piece("c2", 0, 12, b"turn one"),
        ] {
            a.add(p, 1024).unwrap();
        }
        assert_eq!(a.done().unwrap(), b"turn one");
        // Once it is in, it is the copy.
        let mut a = Assembly::default();
        for p in [
            piece("c1", 0, 4, b"turn".as_slice()),
            piece("c2", 0, 12, b"turn one"),
            piece("c2", 8, 12, b" two"),
        ] {
            a.add(p, 1024).unwrap();
        }
        assert_eq!(a.done().unwrap(), b"turn one two");
        // A copy that never got a send in: none.
        let mut a = Assembly::default();
        a.add(piece("c", 0, 9, b"cut"), 1024).unwrap();
        assert_eq!(a.done(), None);
    }
}
