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

#[test]
fn a_forager_here_owns_a_name_before_another_nodes_and_only_its_tools_are_shared() {
    use super::super::placing::REMOTE_CONNS;
    let node_c = REMOTE_CONNS + 7;
    let mut r = Registry::default();
    // Another node's tools came first...
    assert!(r.offer(node_c, &specs(&["echo", "fetch"])).is_empty());
    r.provide(node_c, vec!["web".into()]);
    // ...then a forager here offers one of the names: it owns it.
    assert_eq!(r.offer(3, &specs(&["echo", "add"])), ["echo"]);
    r.provide(3, vec!["fs".into()]);
    assert_eq!(r.owner("echo"), Some(3));
    assert_eq!(r.owner("fetch"), Some(node_c));
    assert_eq!(r.conflicts(), [("echo".to_owned(), 3, vec![node_c])]);
    assert_eq!(r.owned_by(node_c), ["fetch"]);
    // A call from another node only ever goes to a forager here.
    assert_eq!(r.local_owner("echo"), Some(3));
    assert_eq!(r.local_owner("fetch"), None);
    // The other nodes are told of this node's own tools and capabilities,
    // never of what it heard from a node (no echo between nodes).
    let (shared, tags) = r.local_catalogue();
    let names: Vec<Value> = shared.iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("add"), json!("echo")]);
    assert_eq!(tags, ["fs"]);
    // The local forager leaving gives the name back to the other node.
    assert!(r.withdraw(3));
    assert_eq!(r.owner("echo"), Some(node_c));
    assert!(r.local_catalogue().0.is_empty());
}
