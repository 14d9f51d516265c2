use super::*;

fn turn(at: i64, sid: &str, bee: &str, cost: f64, models: &[(&str, f64)]) -> TurnRecord {
    let total = Tally {
        input_tokens: 10,
        output_tokens: 5,
        cache_read_tokens: 2,
        cache_creation_tokens: 1,
        cost_usd: cost,
    };
    TurnRecord {
        ended_at_ms: at,
        sid: sid.into(),
        bee: bee.into(),
        hive: "sim".into(),
        model: "sim".into(),
        spent: Spent {
            total,
            ..Spent::default()
        },
        models: models
            .iter()
            .map(|(m, c)| {
                (
                    m.to_string(),
                    Tally {
                        cost_usd: *c,
                        ..total
                    },
                )
            })
            .collect(),
        duration_ms: 7,
        outcome: "done".into(),
        session_cost_usd: Some(cost * 10.0),
    }
}

const DAY: i64 = 86_400_000;

#[test]
fn totals_group_by_day_sid_bee_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut db = UsageDb::open_writer(&path).unwrap();
    db.record(&[
        turn(DAY * 20_000 + 5, "a", "x", 0.25, &[("m1", 0.25)]),
        turn(
            DAY * 20_000 + 6,
            "b",
            "x",
            0.5,
            &[("m1", 0.375), ("m2", 0.125)],
        ),
        turn(DAY * 20_001 + 1, "a", "y", 1.0, &[]),
    ])
    .unwrap();
    let r = UsageDb::open_reader(&path).unwrap().unwrap();
    let days = r.totals(0, i64::MAX, GroupBy::Day).unwrap();
    assert_eq!(
        days.iter()
            .map(|d| (d.key.as_str(), d.turns, d.tally.cost_usd))
            .collect::<Vec<_>>(),
        [("2024-10-04", 2, 0.75), ("2024-10-05", 1, 1.0)]
    );
    let sids = r.totals(0, i64::MAX, GroupBy::Sid).unwrap();
    assert_eq!(sids[0].key, "a");
    assert_eq!(sids[0].tally.cost_usd, 1.25);
    assert_eq!(sids[0].tally.input_tokens, 20);
    let models = r.totals(0, i64::MAX, GroupBy::Model).unwrap();
    let m: Vec<(&str, u64, f64)> = models
        .iter()
        .map(|r| (r.key.as_str(), r.turns, r.tally.cost_usd))
        .collect();
    // The turn without a breakdown is filed under its own model.
    assert_eq!(m, [("sim", 1, 1.0), ("m1", 2, 0.625), ("m2", 1, 0.125)]);
    let since = r.spend_since(DAY * 20_001).unwrap();
    assert_eq!(since.all, 1.0);
    assert_eq!(since.bees, [("y".to_string(), 1.0)]);
}

#[test]
fn each_sids_last_session_total_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = UsageDb::open_writer(&dir.path().join(FILE_NAME)).unwrap();
    db.record(&[
        turn(1, "a", "x", 0.25, &[]),
        turn(2, "b", "x", 0.5, &[]),
        turn(3, "a", "x", 1.0, &[]),
    ])
    .unwrap();
    let mut last = db.last_session_costs(10).unwrap();
    last.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(last, [("a".to_string(), 10.0), ("b".to_string(), 5.0)]);
    assert_eq!(db.last_session_costs(1).unwrap().len(), 1);
}

#[test]
fn a_version_1_database_is_migrated_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let c = Connection::open(&path).unwrap();
    c.execute_batch(MIGRATIONS[0]).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    c.execute(
        "INSERT INTO turns (ended_at_ms, sid, bee, hive, model, input_tokens, output_tokens,
         cache_read_tokens, cache_creation_tokens, cost_usd, duration_ms, outcome)
         VALUES (5, 'old', 'b', 'h', 'm', 1, 2, 3, 4, 0.5, 6, 'done')",
        [],
    )
    .unwrap();
    drop(c);
    let mut db = UsageDb::open_writer(&path).unwrap();
    assert_eq!(db.version().unwrap(), MIGRATIONS.len() as i64);
    db.record(&[turn(9, "new", "x", 0.25, &[])]).unwrap();
    let rows = db.totals(0, i64::MAX, GroupBy::Sid).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["old", "new"]
    );
    assert_eq!(
        db.last_session_costs(10).unwrap(),
        [("new".to_string(), 2.5)]
    );
}

#[test]
fn pruning_forgets_old_turns_and_their_models() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut db = UsageDb::open_writer(&path).unwrap();
    db.record(&[
        turn(1, "a", "x", 1.0, &[("m", 1.0)]),
        turn(DAY, "b", "x", 2.0, &[]),
    ])
    .unwrap();
    assert_eq!(db.prune(DAY).unwrap(), 1);
    let left: i64 = db
        .conn
        .query_row("SELECT count(*) FROM turn_models", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "the pruned turn's models went with it");
    assert_eq!(db.totals(0, i64::MAX, GroupBy::Sid).unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_hum_is_refused_not_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    drop(UsageDb::open_writer(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        UsageDb::open_writer(&path),
        Err(UsageError::TooNew { found: 99, .. })
    ));
    assert!(matches!(
        UsageDb::open_reader(&path),
        Err(UsageError::TooNew { .. })
    ));
}

#[test]
fn reopening_keeps_the_rows_and_migrates_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    UsageDb::open_writer(&path)
        .unwrap()
        .record(&[turn(5, "a", "x", 0.5, &[])])
        .unwrap();
    let db = UsageDb::open_writer(&path).unwrap();
    assert_eq!(db.version().unwrap(), MIGRATIONS.len() as i64);
    assert_eq!(
        db.totals(0, i64::MAX, GroupBy::Bee).unwrap()[0]
            .tally
            .cost_usd,
        0.5
    );
    assert!(UsageDb::open_reader(&dir.path().join("none.sqlite3"))
        .unwrap()
        .is_none());
}
