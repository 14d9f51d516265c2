//! The knobs that make a turn fail: stalls, crashes, pauses, aborts.

use super::*;

impl Agent {
    /// Stall or crash after `sent` deltas, when a knob says so. A stall
    /// lasts until an interrupt (true), as a turn waiting on a hung API
    /// does in claude; nothing else ends it, stdin EOF included.
    pub(super) fn maybe_fail_mid_turn(&mut self, faulty: bool, sent: usize) -> bool {
        if !faulty {
            return false;
        }
        if self.args.sim_stall_after_chunks == Some(sent) {
            return self.wait_for_interrupt(None);
        }
        if sent == 1 {
            if let Some(file) = self.args.sim_hold_until_file.clone() {
                while !file.exists() {
                    if self.wait_for_interrupt(Some(20)) {
                        return true;
                    }
                }
            }
        }
        if self.args.sim_crash_after_chunks == Some(sent) {
            // A crash leaves the children to whoever contains us.
            let _ = io::stdout().flush();
            std::process::exit(self.args.sim_crash_code);
        }
        false
    }

    /// Sleeps `ms` unless interrupted first (true).
    pub(super) fn pause(&mut self, ms: u64) -> bool {
        if ms == 0 {
            // Still notice an interrupt already waiting.
            return self.wait_for_interrupt(Some(0));
        }
        self.wait_for_interrupt(Some(ms))
    }

    /// Ends an interrupted turn the way claude 2.1.332 does: the partial
    /// assistant message, a `[Request interrupted by user]` user message,
    /// the stream closed, an `error_during_execution` result with
    /// `terminal_reason: aborted_streaming`. The process lives on.
    pub(super) fn abort(
        &mut self,
        turn: &Turn,
        usage: Usage,
        said: &str,
        number: u64,
        prompt: &str,
        started: Instant,
    ) {
        self.helpers.lock().expect("helpers lock").kill_bash_tools();
        let stream = self.args.output_format == OutputFormat::StreamJson;
        if stream {
            let mut partial_msg = turn.assistant(None, said, usage);
            partial_msg["aborted"] = Value::Bool(true);
            emit_line(&partial_msg);
            emit_line(&turn.interrupted_marker());
        }
        if stream && self.args.include_partial_messages {
            emit_line(&turn.message_stop());
        }
        let elapsed = started.elapsed().as_millis() as u64;
        self.note_turn("interrupted", prompt);
        match self.args.output_format {
            OutputFormat::Text => emit_text(""),
            _ => {
                self.spent = self.spent.plus(&usage);
                emit_line(&turn.aborted(self.spent, 1, elapsed))
            }
        }
        self.memory.turns = number;
        self.memory.last_prompt = Some(prompt.to_owned());
    }
}
