//! Ollama's listings, read from humd's status: `/api/tags` (the models
//! hum serves, each with its hive as its family), `/api/show` (one of
//! them), `/api/ps` (the warm cells, each with the model it runs) and
//! `/api/version`. Pure shapes over a [`DaemonStatus`]; the handlers that
//! fetch it are in [`super::door`].

use crate::reports::DaemonStatus;
use serde_json::{json, Value};
use sha2::Digest;

/// The Ollama API version whose shapes these are: clients that check a
/// minimum (for tools, structured output) find it met.
pub const API_VERSION: &str = "0.12.0";

/// Every model hum serves, with its hive, sorted by name.
pub fn models(status: &DaemonStatus) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for w in &status.workers {
        for m in &w.models {
            let hive = w
                .hives
                .iter()
                .find(|h| h.models.contains(m))
                .map(|h| h.hive.clone())
                .unwrap_or_else(|| w.hive.clone());
            if !all.iter().any(|(n, _)| n == m) {
                all.push((m.clone(), hive));
            }
        }
    }
    all.sort();
    all
}

/// A stable digest for a model that has no weights: its name's.
fn digest(model: &str) -> String {
    let d = sha2::Sha256::digest(model.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn details(hive: &str) -> Value {
    json!({"parent_model": "", "format": "hum", "family": hive, "families": [hive],
           "parameter_size": "", "quantization_level": ""})
}

/// `/api/tags`.
pub fn tags(status: &DaemonStatus, now: &str) -> Value {
    let models: Vec<Value> = models(status)
        .iter()
        .map(|(m, hive)| {
            json!({"name": m, "model": m, "modified_at": now, "size": 0,
                   "digest": digest(m), "details": details(hive)})
        })
        .collect();
    json!({"models": models})
}

/// `/api/show` of `model`, if hum serves it.
pub fn show(status: &DaemonStatus, model: &str, now: &str) -> Option<Value> {
    let (_, hive) = models(status).into_iter().find(|(m, _)| m == model)?;
    Some(json!({
        "modelfile": format!("# {model}: served by hum, from its {hive} hive\n"),
        "parameters": "",
        "template": "",
        "details": details(&hive),
        "model_info": {"general.architecture": hive},
        "capabilities": ["completion", "tools"],
        "modified_at": now,
    }))
}

/// `/api/ps`: one entry per warm cell, its memory as its size. Not its sid
/// or pid: a sid is a handle on a conversation (a bee's too), and this door
/// lets in callers the bees never chose.
pub fn ps(status: &DaemonStatus) -> Value {
    let served = models(status);
    let mut warm: Vec<&crate::reports::CellStatus> = status
        .cells()
        .filter(|c| c.state != crate::pool::CellState::TearingDown)
        .collect();
    warm.sort_by(|a, b| a.sid.cmp(&b.sid));
    let cells: Vec<Value> = warm
        .into_iter()
        .map(|c| {
            let model = c.model.clone().unwrap_or_else(|| c.hive.clone());
            let hive = served
                .iter()
                .find(|(m, _)| *m == model)
                .map_or(c.hive.as_str(), |(_, h)| h.as_str());
            json!({"name": model, "model": model, "size": c.rss_bytes, "size_vram": 0,
                   "digest": digest(&model), "details": details(hive),
                   "hum": {"hive": c.hive, "state": c.state}})
        })
        .collect();
    json!({"models": cells})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::{CellStatus, HiveModels, WorkerEntry, WorkerStatus};

    fn status() -> DaemonStatus {
        let cell = |sid: &str, hive: &str, model: Option<&str>| CellStatus {
            sid: sid.into(),
            hive: hive.into(),
            state: crate::pool::CellState::Idle,
            pid: Some(7),
            pids: vec![7],
            rss_bytes: 1000,
            cpu_ms: 0,
            age_ms: 0,
            idle_ms: Some(1),
            turns_served: 1,
            cell_id: None,
            builtins_off: Vec::new(),
            history_not_carried: false,
            model: model.map(str::to_owned),
        };
        let worker = WorkerStatus {
            hive: Some("claude-cli".into()),
            models: vec!["sonnet".into(), "gemini-2.5-flash".into()],
            cells: vec![
                cell("b", "gemini", Some("gemini-2.5-flash")),
                cell("a", "claude-cli", None),
            ],
            ..Default::default()
        };
        DaemonStatus {
            daemon: Default::default(),
            workers: vec![WorkerEntry {
                conn: 1,
                hive: "claude-cli".into(),
                models: worker.models.clone(),
                hives: vec![
                    HiveModels {
                        hive: "claude-cli".into(),
                        models: vec!["sonnet".into()],
                    },
                    HiveModels {
                        hive: "gemini".into(),
                        models: vec!["gemini-2.5-flash".into()],
                    },
                ],
                in_flight: 0,
                status: Some(worker),
            }],
        }
    }

    #[test]
    fn each_model_is_listed_once_with_its_own_hive() {
        assert_eq!(
            models(&status()),
            vec![
                ("gemini-2.5-flash".to_owned(), "gemini".to_owned()),
                ("sonnet".to_owned(), "claude-cli".to_owned())
            ]
        );
        let t = tags(&status(), "now");
        assert_eq!(t["models"][0]["name"], "gemini-2.5-flash");
        assert_eq!(t["models"][0]["details"]["family"], "gemini");
        assert_eq!(t["models"][1]["digest"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn show_knows_only_served_models() {
        let s = show(&status(), "sonnet", "now").unwrap();
        assert_eq!(s["details"]["family"], "claude-cli");
        assert!(s["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("tools")));
        assert!(show(&status(), "llama3", "now").is_none());
    }

    #[test]
    fn ps_lists_the_warm_cells_with_their_models() {
        let p = ps(&status());
        let listed = p["models"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        // A cell on its CLI's default model is named by its hive.
        assert_eq!(listed[0]["name"], "claude-cli");
        assert_eq!(
            listed[0]["hum"],
            json!({"hive": "claude-cli", "state": "idle"})
        );
        assert!(!p.to_string().contains("\"pid\""), "no sid or pid: {p}");
        assert_eq!(listed[1]["name"], "gemini-2.5-flash");
        assert_eq!(listed[1]["details"]["family"], "gemini");
        assert_eq!(listed[1]["size"], 1000);
    }
}
