use super::*;
use serde_json::json;

fn specs(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| json!({"name": n})).collect()
}

#[test]
fn the_first_to_offer_a_name_owns_it_and_the_next_takes_over_when_it_goes() {
    let mut r = Registry::default();
    assert!(r.offer(1, &specs(&["echo", "add"])).is_empty());
    assert_eq!(r.offer(2, &specs(&["echo", "mul"])), ["echo"]);
    assert_eq!(r.owner("echo"), Some(1));
    assert_eq!(r.conflicts(), [("echo".to_owned(), 1, vec![2])]);
    assert_eq!(r.owned_by(2), ["mul"]);
    assert!(r.withdraw(1), "it owned names");
    assert_eq!(r.owner("echo"), Some(2));
    assert_eq!(r.owner("add"), None);
    assert!(r.conflicts().is_empty());
    let names: Vec<Value> = r.catalogue().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("echo"), json!("mul")]);
}

#[test]
fn an_offer_again_counts_once_and_bytes_come_back_on_withdraw() {
    let mut r = Registry::default();
    r.offer(1, &specs(&["echo"]));
    let once = r.bytes();
    r.offer(1, &specs(&["echo"]));
    assert_eq!(
        r.bytes(),
        once,
        "the same conn's offer again is not kept twice"
    );
    r.offer(2, &specs(&["echo"]));
    assert_eq!(r.bytes(), 2 * once);
    assert!(!r.withdraw(2), "a conflict leaving changes no owner");
    assert!(r.withdraw(1));
    assert_eq!(r.bytes(), 0);
}

#[test]
fn invalid_names_are_never_registered() {
    let mut r = Registry::default();
    r.offer(
        1,
        &[
            json!({"name": "mcp__hum__x"}),
            json!({"name": thrum::tools::PERMIT_TOOL}),
            json!({"name": ""}),
            json!({"no": "name"}),
        ],
    );
    assert!(r.catalogue().is_empty());
    assert_eq!(r.bytes(), 0);
}

#[test]
fn capabilities_are_the_union_and_a_forager_that_served_one_changes_the_catalogue_when_it_goes() {
    let mut r = Registry::default();
    r.provide(1, vec!["fs".into()]);
    r.provide(2, vec!["session".into(), "fs".into()]);
    assert_eq!(r.provided(), ["fs", "session"]);
    assert_eq!(r.provided_by(2), ["session", "fs"]);
    assert!(r.withdraw(1), "it served a capability, owning no name");
    assert_eq!(r.provided(), ["fs", "session"]);
    r.provide(2, Vec::new());
    assert!(r.provided().is_empty());
    assert!(!r.withdraw(2));
}
