//! The wire's words: error codes, pulse kinds, chunk kinds, roles. Each is
//! an enum with one spelling table, so a word is written once, checked by
//! the compiler everywhere else, and reads back the same. The open ones
//! keep a word this build does not know as `Other`, byte for byte: a newer
//! peer's word survives forwarding.
//!
//! [`one_spelling!`](crate::one_spelling) is the closed form, for enums of
//! a program's own (a cell's state, a teardown's reason).

/// `as_str`, `Display` and `FromStr` from one table, for a closed enum
/// (every word known), so the spellings cannot drift apart.
#[macro_export]
macro_rules! one_spelling {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),*
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<$ty, String> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    other => Err(format!(
                        "unknown {}: {other} (one of: {})",
                        stringify!($ty).to_lowercase(),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
    };
}

/// An open enum of wire words: the known ones from one table, any other
/// kept as `Other`. Serialises as its string.
macro_rules! open_words {
    ($(#[$meta:meta])* $ty:ident { $($(#[$vmeta:meta])* $variant:ident => $name:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $ty {
            $($(#[$vmeta])* $variant,)*
            /// A word this build does not know, as it came.
            Other(String),
        }

        impl $ty {
            /// Every known word.
            pub const KNOWN: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(&self) -> &str {
                match self {
                    $($ty::$variant => $name,)*
                    $ty::Other(s) => s,
                }
            }
        }

        impl From<&str> for $ty {
            fn from(s: &str) -> Self {
                match s {
                    $($name => $ty::$variant,)*
                    other => $ty::Other(other.to_owned()),
                }
            }
        }

        impl From<String> for $ty {
            fn from(s: String) -> Self {
                match $ty::from(s.as_str()) {
                    $ty::Other(_) => $ty::Other(s),
                    known => known,
                }
            }
        }

        impl From<$ty> for String {
            fn from(w: $ty) -> String {
                match w {
                    $ty::Other(s) => s,
                    known => known.as_str().to_owned(),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_words! {
    /// `error`'s `code`: why a request or a turn failed.
    ErrorCode {
        /// The tone was malformed or not allowed (the message says which).
        BadRequest => "bad_request",
        /// No cell (or connection slot) free in time: retry after
        /// `retryAfterMs`.
        Overloaded => "overloaded",
        /// No worker serves the model asked for.
        NoWorker => "no_worker",
        /// The agent itself reported an error result.
        AgentError => "agent_error",
        /// The agent showed no first event in time, or went silent.
        CellTimeout => "cell_timeout",
        /// The agent died during the turn.
        CellDied => "cell_died",
        /// The agent could not be started.
        SpawnFailed => "spawn_failed",
        /// A `cleanup` of the sid ended the turn.
        CleanedUp => "cleaned_up",
        /// The worker is shutting down.
        ShuttingDown => "shutting_down",
        /// The agent went past its memory limit.
        CellOom => "cell_oom",
        /// A daily budget is spent.
        BudgetExceeded => "budget_exceeded",
        /// The worker serving the turn went away.
        WorkerLost => "worker_lost",
        /// A new connection with this one's `hid` took its place.
        Replaced => "replaced",
        /// The gateway: a wrong or missing token.
        Unauthorized => "unauthorized",
        /// The gateway: humd cannot be reached.
        Unavailable => "unavailable",
        /// The gateway: what the request names (a response) is not known.
        NotFound => "not_found",
    }
}

open_words! {
    /// `pulse`'s `kind`: a cell's life, as it happens.
    PulseKind {
        CellSpawned => "cell-spawned",
        CellReady => "cell-ready",
        CellIdle => "cell-idle",
        CellEvicted => "cell-evicted",
        CellDied => "cell-died",
        CellOom => "cell-oom",
        /// To a forager: another forager owns some of its tools' names.
        ToolConflict => "tool-conflict",
    }
}

open_words! {
    /// `chunk`'s `chunkType`.
    ChunkType {
        TextStart => "text_start",
        ReasoningStart => "reasoning_start",
        TextDelta => "text_delta",
        ReasoningDelta => "reasoning_delta",
        ToolInputDelta => "tool_input_delta",
        ContentBlockStop => "content_block_stop",
        /// A call of a lent tool, finished (humd → the asker).
        ToolExecuted => "tool_executed",
        /// A model call began: its `usage` holds the input and cache
        /// tokens the CLI reported for it.
        MessageStart => "message_start",
        /// An ACP agent's tool call began (its fields beside).
        ToolCall => "tool_call",
        /// An ACP agent's tool call moved on (status, output).
        ToolCallUpdate => "tool_call_update",
        /// An ACP agent's plan, whole each time it changes.
        Plan => "plan",
    }
}

open_words! {
    /// `finish`'s `finishReason`: claude's stop reason, or hum's own
    /// `cancelled`.
    FinishReason {
        EndTurn => "end_turn",
        MaxTokens => "max_tokens",
        ToolUse => "tool_use",
        StopSequence => "stop_sequence",
        Refusal => "refusal",
        PauseTurn => "pause_turn",
        /// The turn was cancelled (its asker's `cancel`, or humd's).
        Cancelled => "cancelled",
    }
}

open_words! {
    /// `release-permit`'s `decision`: may the agent use the tool.
    Decision {
        Allow => "allow",
        Deny => "deny",
    }
}

open_words! {
    /// A role a hello's `bee` names.
    Role {
        Asker => "asker",
        Worker => "worker",
        Forager => "forager",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(known: &[T])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
        T: From<String>,
    {
        for w in known {
            let json = serde_json::to_value(w).unwrap();
            let back: T = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(&back, w, "{json}");
            assert_eq!(T::from(json.as_str().unwrap().to_owned()), back);
        }
        let odd: T = serde_json::from_value(serde_json::json!("never-seen_word")).unwrap();
        assert_eq!(serde_json::to_value(&odd).unwrap(), "never-seen_word");
    }

    #[test]
    fn every_word_reads_back_as_itself_and_unknown_ones_survive() {
        round_trips(ErrorCode::KNOWN);
        round_trips(PulseKind::KNOWN);
        round_trips(ChunkType::KNOWN);
        round_trips(Role::KNOWN);
        round_trips(Decision::KNOWN);
        round_trips(FinishReason::KNOWN);
        assert_eq!(ErrorCode::from("bad_request"), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::from("teapot"), ErrorCode::Other("teapot".into()));
        assert_eq!(PulseKind::CellOom.to_string(), "cell-oom");
    }

    #[test]
    fn no_two_words_share_a_spelling() {
        fn distinct(words: Vec<&str>) {
            let set: std::collections::HashSet<&str> = words.iter().copied().collect();
            assert_eq!(set.len(), words.len(), "{words:?}");
        }
        distinct(ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect());
        distinct(PulseKind::KNOWN.iter().map(PulseKind::as_str).collect());
        distinct(ChunkType::KNOWN.iter().map(ChunkType::as_str).collect());
        distinct(Role::KNOWN.iter().map(Role::as_str).collect());
        distinct(
            FinishReason::KNOWN
                .iter()
                .map(FinishReason::as_str)
                .collect(),
        );
    }
}
