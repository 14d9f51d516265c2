//! A turn's usage as a cluster's nodes share it: every node tells the
//! others each turn its askers' turns cost (their budgets are the
//! cluster's), and the cluster's usage stream keeps them for
//! `hum usage --cluster`.

use super::db::TurnRecord;
use super::record::{Spent, Tally};
use serde::{Deserialize, Serialize};

/// One turn, as recorded on the node of its asker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SharedTurn {
    /// The node that recorded it (set by that node's cluster loop).
    pub node: String,
    pub ended_at_ms: i64,
    pub sid: String,
    pub bee: String,
    pub hive: String,
    pub model: String,
    pub total: Tally,
    pub models: Vec<(String, Tally)>,
    pub duration_ms: u64,
    pub outcome: String,
}

impl SharedTurn {
    /// What a node shares of a turn it recorded.
    pub fn of(record: &TurnRecord) -> SharedTurn {
        SharedTurn {
            node: String::new(),
            ended_at_ms: record.ended_at_ms,
            sid: record.sid.clone(),
            bee: record.bee.clone(),
            hive: record.hive.clone(),
            model: record.model.clone(),
            total: record.spent.total,
            models: record.models.clone(),
            duration_ms: record.duration_ms,
            outcome: record.outcome.clone(),
        }
    }

    /// The turn as a usage database keeps it (for a report of the whole
    /// cluster); its cost is what the recording node said it was.
    pub fn record(&self) -> TurnRecord {
        TurnRecord {
            ended_at_ms: self.ended_at_ms,
            sid: self.sid.clone(),
            bee: self.bee.clone(),
            hive: self.hive.clone(),
            model: self.model.clone(),
            spent: Spent {
                total: self.total,
                models: self.models.clone(),
                cost_known: true,
                session_cost: None,
            },
            models: self.models.clone(),
            duration_ms: self.duration_ms,
            outcome: self.outcome.clone(),
            session_cost_usd: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_turn_travels_as_json_and_comes_back_as_the_record_it_was() {
        let tally = Tally {
            input_tokens: 10,
            output_tokens: 20,
            cost_usd: 0.25,
            ..Default::default()
        };
        let record = SharedTurn {
            node: "b".into(),
            ended_at_ms: 1_700_000_000_000,
            sid: "s".into(),
            bee: "bee".into(),
            hive: "sim".into(),
            model: "sim".into(),
            total: tally,
            models: vec![("sim".into(), tally)],
            duration_ms: 40,
            outcome: "done".into(),
        };
        let wire = serde_json::to_vec(&record).unwrap();
        let back: SharedTurn = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back, record);
        let turn = back.record();
        assert_eq!(turn.spent.total.cost_usd, 0.25);
        assert_eq!((turn.sid.as_str(), turn.outcome.as_str()), ("s", "done"));
        assert_eq!(
            SharedTurn::of(&turn),
            SharedTurn {
                node: String::new(),
                ..record
            }
        );
        // Whatever another node sends, reading it never panics.
        assert!(serde_json::from_slice::<SharedTurn>(b"{\"total\": 3}").is_err());
        assert!(serde_json::from_slice::<SharedTurn>(b"{}").is_ok());
    }
}
