use super::permits::Verdict;
use super::*;

#[test]
fn a_calls_usage_is_its_messages_start_plus_its_delta_never_lowered() {
    let t = CellTools::new("s", None, false);
    assert_eq!(t.last_usage(), None);
    t.note_usage(
        Some("m1"),
        &serde_json::json!({"input_tokens": 12, "output_tokens": 0}),
    );
    t.note_usage(None, &serde_json::json!({"output_tokens": 7}));
    // The assistant line repeats the start with output 0: no lowering.
    t.note_usage(
        Some("m1"),
        &serde_json::json!({"input_tokens": 12, "output_tokens": 0}),
    );
    assert_eq!(
        t.last_usage(),
        Some(serde_json::json!({"input_tokens": 12, "output_tokens": 7}))
    );
    // The next model call starts over.
    t.note_usage(
        Some("m2"),
        &serde_json::json!({"input_tokens": 30, "output_tokens": 0}),
    );
    assert_eq!(
        t.last_usage(),
        Some(serde_json::json!({"input_tokens": 30, "output_tokens": 0}))
    );
}

#[test]
fn a_gone_workers_sockets_are_swept_and_a_live_ones_kept() {
    let run = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = run.path().join(format!("bridge-{dead}"));
    let live = run.path().join(format!("bridge-{}", std::process::id()));
    let other = run.path().join("not-a-bridge-1");
    for d in [&stale, &live, &other] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("x.sock"), b"").unwrap();
    }
    let mine = run.path().join("bridge-mine");
    let _bridge = Bridge::new(
        mine.clone(),
        Uplink::new(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!stale.exists(), "a gone worker's directory stays");
    assert!(
        live.exists() && other.exists(),
        "a live or foreign directory was removed"
    );
    assert!(mine.is_dir());
}

/// Another user made the bridge's directory (or a link there) first:
/// the worker does not use it, and sweeps no directory but its own.
#[test]
fn a_bridge_dir_another_user_made_first_is_refused_and_never_swept() {
    let run = tempfile::tempdir().unwrap();
    assert_eq!(
        thrum::peer::own_uid(),
        0,
        "this test plants a directory owned by nobody: run it as root (CI does)"
    );
    let planted = run.path().join("bridge-7-abc");
    std::fs::create_dir(&planted).unwrap();
    rustix::fs::chown(
        &planted,
        Some(rustix::process::Uid::from_raw(65534)),
        Some(rustix::process::Gid::from_raw(65534)),
    )
    .unwrap();
    let e = Bridge::new(
        planted.clone(),
        Uplink::new(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    let target = run.path().join("root-owned");
    std::fs::create_dir(&target).unwrap();
    let link = run.path().join("bridge-8-abc");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(Bridge::new(
        link,
        Uplink::new(),
        Duration::from_secs(1),
        Duration::from_secs(1)
    )
    .is_err());
    // A dead pid's name, but nobody's directory: left alone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let theirs = run.path().join(format!("bridge-{dead}-x"));
    std::fs::create_dir(&theirs).unwrap();
    rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    let fresh = Bridge::dir_for(&run.path().join("thrum.sock"));
    let _bridge = Bridge::new(
        fresh.clone(),
        Uplink::new(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(theirs.exists(), "another user's directory was swept");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(fresh
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("bridge-{}-", std::process::id())));
}

/// Ids carry 122 random bits: consecutive ones share no prefix a
/// counter or a clock would give them.
#[test]
fn call_ids_cannot_be_guessed_from_one_another() {
    let ids: Vec<String> = (0..200).map(|_| call_id("call")).collect();
    for id in &ids {
        let hex = id.strip_prefix("call-").unwrap();
        assert_eq!(hex.len(), 32, "{id}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
            assert!(common < "call-".len() + 8, "{a} and {b} share a prefix");
        }
    }
}

fn permit(decision: Option<&str>, message: Option<&str>, updated: Option<Value>) -> Answer {
    Answer::Permit(thrum::ReleasePermit {
        call_id: "permit-1".into(),
        decision: decision.map(thrum::Decision::from),
        message: message.map(str::to_owned),
        updated_input: updated,
        option_id: None,
        extra: Default::default(),
    })
}

#[test]
fn a_permission_verdict_is_claudes_shape_from_the_askers_answer_or_the_default() {
    let input = serde_json::json!({"command": "ls"});
    let wait = Duration::from_millis(1500);
    let verdict = |a: Option<Answer>, by_default: bool| {
        serde_json::to_value(Verdict::of(a, "Bash", input.clone(), by_default, wait)).unwrap()
    };
    assert_eq!(
        verdict(Some(permit(Some("allow"), None, None)), false),
        serde_json::json!({"behavior": "allow", "updatedInput": {"command": "ls"}})
    );
    // The asker may change the input; only an object replaces it.
    let changed = serde_json::json!({"command": "ls -a"});
    assert_eq!(
        verdict(
            Some(permit(Some("allow"), None, Some(changed.clone()))),
            false
        )["updatedInput"],
        changed
    );
    assert_eq!(
        verdict(
            Some(permit(Some("allow"), None, Some(serde_json::json!("rm")))),
            false
        )["updatedInput"],
        input
    );
    assert_eq!(
        verdict(Some(permit(Some("deny"), Some("not today"), None)), true),
        serde_json::json!({"behavior": "deny", "message": "not today"})
    );
    assert_eq!(
        verdict(Some(permit(Some("deny"), None, None)), true)["message"],
        "the user denied Bash"
    );
    // No decision in the answer: the hive's default.
    assert_eq!(
        verdict(Some(permit(None, None, None)), true)["behavior"],
        "allow"
    );
    assert_eq!(
        verdict(Some(permit(None, None, None)), false)["behavior"],
        "deny"
    );
    // An unknown word is not a yes.
    assert_eq!(
        verdict(Some(permit(Some("maybe"), None, None)), true)["behavior"],
        "deny"
    );
    // Nobody answered in time: a deny that says so, whatever the default.
    assert_eq!(
        verdict(None, true),
        serde_json::json!({"behavior": "deny", "message": "nobody answered the permission ask within 1500 ms"})
    );
    assert_eq!(
        verdict(Some(Answer::Result(ToolAnswer::error("x"))), true)["behavior"],
        "deny"
    );
}

#[tokio::test]
async fn a_cli_that_ignores_the_relist_notice_costs_its_cell_one_wait_and_a_slow_one_is_waited_for_again(
) {
    let tools = CellTools::new("s", None, false);
    let short = Duration::from_millis(50);
    assert_eq!(tools.await_listed(0, short).await, Relist::TimedOut);
    // Nothing listed since: the next turn does not wait (a long bound
    // would make this test hang if it did).
    let skipped = tokio::time::timeout(
        Duration::from_secs(30),
        tools.await_listed(0, Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(skipped.ok(), Some(Relist::Skipped));
    // It listed late: it was slow, not deaf, and is waited for again.
    tools.mark_listed();
    assert_eq!(tools.await_listed(1, short).await, Relist::TimedOut);
    tools.mark_listed();
    assert_eq!(tools.await_listed(1, short).await, Relist::Listed);
    // A listing that comes while a turn waits ends the wait.
    let waiting = {
        let tools = tools.clone();
        tokio::spawn(async move { tools.await_listed(2, Duration::from_secs(3600)).await })
    };
    tools.mark_listed();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .ok()
            .and_then(Result::ok),
        Some(Relist::Listed)
    );
}
