//! hum.json: what is read, what is refused and why.
use super::*;

#[test]
fn the_readmes_example_configuration_is_read_as_printed() {
    let readme = include_str!("../../../../README.md");
    let at = readme
        .find("`hum.json` (`~/.config/hum/hum.json`")
        .expect("the README's configuration section");
    let block = &readme[at..];
    let start = block.find("```json\n").expect("its example") + "```json\n".len();
    let end = block[start..].find("```").unwrap();
    let c = Config::parse(&block[start..start + end], "README.md").expect("the example is valid");
    assert_eq!(c.usage.retention_days, 90);
    assert_eq!(c.budgets, crate::usage::Budgets::default());
    assert_eq!(c.nest.max_pool_rss_bytes, None);
}

#[test]
fn budgets_usage_and_memory_limits_are_read_and_checked() {
    let c = Config::parse(
        r#"{"budgets": {"dailyUsd": 50, "perSidDailyUsd": 2.5, "hardStop": true},
            "usage": {"retentionDays": 7}, "nest": {"maxPoolRssMb": 4096, "maxCellRssMb": 512}}"#,
        "t",
    )
    .unwrap();
    assert_eq!(c.budgets.daily_usd, Some(50.0));
    assert!(c.budgets.hard_stop);
    assert_eq!(c.usage.retention_days, 7);
    assert_eq!(c.pool().max_cell_rss_bytes, Some(512 << 20));
    for (bad, key) in [
        (r#"{"budgets": {"dailyUsd": -1}}"#, "budgets.dailyUsd"),
        (r#"{"budgets": {"weeklyUsd": 1}}"#, "budgets"),
        (r#"{"usage": {"retentionDays": 0}}"#, "usage.retentionDays"),
        (r#"{"nest": {"maxCellRssMb": 0}}"#, "nest.maxCellRssMb"),
        (r#"{"budgets": []}"#, "budgets"),
    ] {
        let e = Config::parse(bad, "t").unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[test]
fn an_empty_object_is_the_defaults() {
    let c = Config::parse("{}", "t").unwrap();
    assert_eq!(c, Config::default());
    // One set of defaults: the pool's own.
    assert_eq!(c.pool(), PoolConfig::default());
    assert_eq!(c.pool().eviction_hold_ms, crate::pool::EVICTION_HOLD_MS);
}

#[test]
fn the_replaced_systems_keys_are_read() {
    let c = Config::parse(
        r#"{"nest": {"maxActiveCells": 3, "cellIdlePruneThresholdMs": 1000}}"#,
        "t",
    )
    .unwrap();
    assert_eq!(c.pool().max_active_cells, 3);
    assert_eq!(c.pool().idle_prune_ms, 1000);
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let e = Config::parse(r#"{"nest": {"maxActiveCels": 3}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("maxActiveCels"), "{e}");
    let e = Config::parse(r#"{"nest": {"maxActiveCells": "eight"}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nest.maxActiveCells"), "{e}");
    let e = Config::parse(r#"{"nest": {"maxActiveCells": 0}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nest.maxActiveCells") && e.contains("at least 1"),
        "{e}"
    );
    let e = Config::parse(r#"{"sim": {"models": ["--evil"]}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sim.models"), "{e}");
    let e = Config::parse(r#"{"defaultModel": "nope"}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("defaultModel"), "{e}");
    let e = Config::parse("[", "t").unwrap_err().to_string();
    assert!(e.starts_with("t: "), "{e}");
}

#[test]
fn huge_timeouts_and_non_objects_are_refused_with_the_key_named() {
    for key in [
        "firstEventTimeoutMs",
        "admissionTimeoutMs",
        "cellIdlePruneThresholdMs",
        "cancelGraceMs",
        "closeGraceMs",
        "termGraceMs",
    ] {
        let text = format!(r#"{{"nest": {{"{key}": 18446744073709551615}}}}"#);
        let e = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(
            e.contains(&format!("nest.{key}")) && e.contains("at most"),
            "{e}"
        );
    }
    let ok = format!(r#"{{"nest": {{"firstEventTimeoutMs": {MAX_TIMEOUT_MS}}}}}"#);
    assert!(Config::parse(&ok, "t").is_ok());
    for text in [
        "[]",
        "[{}]",
        "3",
        "null",
        r#"{"nest": []}"#,
        r#"{"sim": [true]}"#,
    ] {
        let e = Config::parse(text, "t").unwrap_err().to_string();
        assert!(e.contains("must be a JSON object"), "{text}: {e}");
    }
}

#[test]
fn useless_configs_are_refused_with_the_key_named() {
    for (json, key) in [
        (
            r#"{"claude": {"enabled": false}, "sim": {"models": []}}"#,
            "sim.models",
        ),
        (
            r#"{"sim": {"enabled": false}, "claude": {"models": []}}"#,
            "claude.models",
        ),
        (
            r#"{"nest": {"maxActiveCells": 100000}}"#,
            "nest.maxActiveCells",
        ),
        (
            r#"{"nest": {"maxQueuedPrompts": 99999999}}"#,
            "nest.maxQueuedPrompts",
        ),
        (r#"{"cwd": "relative/dir"}"#, "cwd"),
        (
            r#"{"tools": {"permissionTimeoutMs": 0}}"#,
            "tools.permissionTimeoutMs",
        ),
        (r#"{"sim": {"env": {"A": "x\u0000y"}}}"#, "sim.env.A"),
        (r#"{"claude": {"env": {"A=B": "x"}}}"#, "claude.env.A=B"),
    ] {
        let e = Config::parse(json, "t").unwrap_err().to_string();
        assert!(e.contains(&format!("t: {key}: ")), "{json}: {e}");
    }
    // What only a worker checks: the machine has them.
    let c = Config::parse(
        r#"{"claude": {"path": "/nonexistent/claude"}, "cwd": "/nonexistent/dir"}"#,
        "t",
    )
    .unwrap();
    let mut c = c;
    let e = c.check_for_worker("t").unwrap_err().to_string();
    assert!(e.contains("claude.path"), "{e}");
    let mut c = Config::parse(
        r#"{"claude": {"enabled": false}, "cwd": "/nonexistent/dir"}"#,
        "t",
    )
    .unwrap();
    let e = c.check_for_worker("t").unwrap_err().to_string();
    assert!(e.contains("t: cwd: "), "{e}");
    let mut c = Config::parse(r#"{"claude": {"path": "/bin/sh"}, "cwd": "/"}"#, "t").unwrap();
    c.check_for_worker("t").unwrap();
}

#[test]
fn a_claude_the_file_does_not_name_and_the_machine_lacks_is_off_with_a_note() {
    let absent = |_: &std::path::Path| false;
    // A hum.json that only sets budgets: the claude hive is the default
    // one; with no claude here it is off, the simulator serves.
    let mut c = Config::parse(r#"{"budgets": {"dailyUsd": 5}}"#, "t").unwrap();
    let note = c.check_for_worker_with("t", absent).unwrap();
    assert!(note.is_some_and(|n| n.contains("claude hive off")));
    assert!(!c.claude.enabled && c.sim.enabled);
    assert_eq!(c.models(), ["sim"]);
    // Named explicitly: an error, as before.
    for named in [
        r#"{"claude": {"enabled": true}}"#,
        r#"{"claude": {"path": "claude"}}"#,
    ] {
        let mut c = Config::parse(named, "t").unwrap();
        let e = c
            .check_for_worker_with("t", absent)
            .unwrap_err()
            .to_string();
        assert!(e.contains("claude.path"), "{named}: {e}");
    }
    // There: on, no note.
    let mut c = Config::parse("{}", "t").unwrap();
    assert_eq!(c.check_for_worker_with("t", |_| true).unwrap(), None);
    assert!(c.claude.enabled);
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    assert!(Config::load(Some(Path::new("/nonexistent/hum.json"))).is_err());
}

#[test]
fn acp_hives_are_read_by_name_and_their_models_join_the_served_ones() {
    let c = Config::parse(
        r#"{"acp": {"gemini": {"command": ["gemini", "--experimental-acp"],
            "models": ["gemini-2.5-flash"], "env": {"GEMINI_API_KEY": "k"},
            "permissionDefault": "allow"}}}"#,
        "t",
    )
    .unwrap();
    let g = &c.acp["gemini"];
    assert_eq!(g.command, ["gemini", "--experimental-acp"]);
    assert!(g.enabled);
    assert_eq!(g.permission_default, PermitDefault::Allow);
    assert!(c.models().contains(&"gemini-2.5-flash".to_owned()));
    let only_acp = Config::parse(
        r#"{"claude": {"enabled": false}, "sim": {"enabled": false},
            "acp": {"q": {"command": ["qwen", "--acp"], "models": ["qwen3"]}}}"#,
        "t",
    )
    .expect("an ACP hive alone is a configuration that serves");
    assert_eq!(only_acp.models(), ["qwen3"]);
}

#[test]
fn an_acp_hive_that_cannot_serve_is_refused_with_its_key() {
    for (bad, key) in [
        (
            r#"{"acp": {"g": {"command": [], "models": ["m"]}}}"#,
            "acp.g.command",
        ),
        (
            r#"{"acp": {"g": {"command": [""], "models": ["m"]}}}"#,
            "acp.g.command",
        ),
        (
            r#"{"acp": {"g": {"command": ["x"], "models": []}}}"#,
            "acp.g.models",
        ),
        (
            r#"{"acp": {"g": {"command": ["x"], "models": ["a b"]}}}"#,
            "acp.g.models",
        ),
        (
            r#"{"acp": {"sim": {"command": ["x"], "models": ["m"]}}}"#,
            "acp.sim",
        ),
        (
            r#"{"acp": {"a/b": {"command": ["x"], "models": ["m"]}}}"#,
            "acp.a/b",
        ),
        (
            r#"{"acp": {"g": {"command": ["x"], "models": ["sim"]}}}"#,
            "acp.g.models",
        ),
        (
            r#"{"acp": {"g": {"command": ["x"], "models": ["m"], "builtinTools": "none"}}}"#,
            "acp.g.builtinTools",
        ),
        (
            r#"{"acp": {"g": {"command": ["x"], "models": ["m"], "env": {"A=B": "1"}}}}"#,
            "acp.g.env",
        ),
        (
            r#"{"acp": {"g": {"command": ["x"], "models": ["m"], "shell": true}}}"#,
            "acp",
        ),
    ] {
        let e = Config::parse(bad, "t").unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[test]
fn a_worker_refuses_an_acp_agent_that_is_not_there() {
    let mut c = Config::parse(
        r#"{"acp": {"g": {"command": ["no-such-agent"], "models": ["m"]}}}"#,
        "t",
    )
    .unwrap();
    let e = c
        .check_for_worker_with("t", |p| p != Path::new("no-such-agent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("acp.g.command"), "{e}");
}

#[test]
fn the_ollama_door_is_at_ollamas_address_unless_moved_or_turned_off() {
    let c = Config::parse("{}", "t").unwrap();
    assert_eq!(
        c.gateway.ollama_addr,
        Some("127.0.0.1:11434".parse().unwrap())
    );
    let c = Config::parse(r#"{"gateway": {"ollamaAddr": null}}"#, "t").unwrap();
    assert_eq!(c.gateway.ollama_addr, None);
    let c = Config::parse(r#"{"gateway": {"ollamaAddr": "127.0.0.1:21434"}}"#, "t").unwrap();
    assert_eq!(c.gateway.ollama_addr.unwrap().port(), 21434);
    let e = Config::parse(r#"{"gateway": {"ollamaAddr": "localhost"}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ollamaAddr"), "{e}");
}

#[test]
fn the_nest_section_is_the_pools_own_knobs_and_refuses_what_it_does_not_know() {
    let c = Config::parse(
        r#"{"nest": {"maxActiveCells": 3, "cellIdlePruneThresholdMs": 9000,
                     "closeGraceMs": 10, "termGraceMs": 20, "maxCellRssMb": 2}}"#,
        "t",
    )
    .unwrap();
    let p = c.pool();
    assert_eq!(
        (p.max_active_cells, p.idle_prune_ms, p.max_cell_rss_bytes),
        (3, 9000, Some(2 << 20))
    );
    assert_eq!(
        p.max_queued_prompts,
        PoolConfig::default().max_queued_prompts
    );
    assert_eq!(c.grace().close, Duration::from_millis(10));
    assert_eq!(c.grace().term, Duration::from_millis(20));
    // A misspelt knob is an error, not a default quietly kept.
    let e = Config::parse(r#"{"nest": {"maxActiveCell": 3}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nest") && e.contains("maxActiveCell"), "{e}");
    // A size no u64 of bytes holds is refused by its own name.
    let e = Config::parse(r#"{"nest": {"maxCellRssMb": 18446744073709551615}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nest.maxCellRssMb"), "{e}");
    let e = Config::parse(r#"{"nest": {"maxPoolRssMb": 0}}"#, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nest.maxPoolRssMb") && e.contains("1 to"), "{e}");
}
