//! A cluster whose NATS server requires TLS (issue 28, item 8): nodes that
//! trust its authority join and forward turns; a node that does not, or
//! that was told to trust an authority but reaches a server without TLS,
//! does not start, and says why.

use crate::common::cluster::{runtime, turn, wait_linked, Nats, Node};
use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

#[test]
fn nodes_trusting_the_servers_authority_join_over_tls_and_forward_turns() {
    let sb = Sandbox::new();
    let mut nats = Nats::start_tls(&sb);
    assert!(nats.url.starts_with("tls://"), "{}", nats.url);
    let a = Node::start(&sb, &nats, "tls", "a", 2, json!({}));
    let b = Node::start(&sb, &nats, "tls", "b", 2, json!({}));
    let rt = runtime();
    wait_linked(&rt, &[&a, &b]);
    // The sid lives on a; b's asker is answered through NATS.
    let first = rt.block_on(turn(&a, "sealed", "one"));
    assert!(first.contains("<one>"), "{first}");
    let second = rt.block_on(turn(&b, "sealed", "two"));
    assert!(second.contains("<two>"), "{second}");
    assert_eq!(a.cells_of(&rt, "sealed"), 1);
    assert_eq!(b.cells_of(&rt, "sealed"), 0, "forwarded, not a second cell");
    // The authority was read once: what its path holds later is not
    // trusted on a reconnect (nor needed).
    let ca = nats.ca.clone().unwrap();
    std::fs::write(&ca, "no longer a certificate\n").unwrap();
    nats.kill();
    nats.restart(&sb);
    let connected = |n: &Node| n.status(&rt).daemon.cluster.is_some_and(|c| c.connected);
    assert!(
        wait_until(Duration::from_secs(60), || connected(&a) && connected(&b)),
        "the nodes did not reconnect over TLS:\n{}\n{}",
        a.log("daemon"),
        b.log("daemon")
    );
    wait_linked(&rt, &[&a, &b]);
    let third = rt.block_on(turn(&b, "sealed", "three"));
    assert!(third.contains("<three>"), "{third}");
    assert_eq!(
        (a.cells_of(&rt, "sealed"), b.cells_of(&rt, "sealed")),
        (1, 0),
        "still forwarded to a over NATS"
    );
    a.stop();
    b.stop();
    nats.stop();
    sb.assert_no_leaks();
}

/// `hum daemon` of a node `x` on `url` with `extra` flags, run to its
/// exit: (exit code, stderr). One that joined, or serves alone and
/// retries, is stopped, and its code is none.
fn join(sb: &Sandbox, url: &str, creds: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let sock = sb.dir.path().join("x.sock");
    let mut args = vec![
        "daemon",
        "--socket",
        sock.to_str().unwrap(),
        "--no-metrics",
        "--cluster",
        url,
        "--node",
        "x",
        "--cluster-credentials",
        creds.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let log = sb.dir.path().join("x.log");
    let mut child = sb
        .hum(&args)
        .env("HUM_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut code = None;
    let ended = wait_until(PROMPTLY, || {
        if let Ok(Some(status)) = child.try_wait() {
            code = status.code();
            return true;
        }
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        said.contains("cluster.joined") || said.contains("cluster.nats_unreachable")
    });
    assert!(
        ended,
        "humd neither exited, joined nor served alone: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    match code {
        Some(_) => assert!(
            !sock.exists(),
            "no socket is left by a humd that did not start"
        ),
        None => crate::common::stack::stop_child(&mut child),
    }
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn a_node_that_does_not_trust_the_servers_certificate_does_not_start() {
    let sb = Sandbox::new();
    let nats = Nats::start_tls(&sb);
    // The system's roots do not know the test's authority.
    let (code, err) = join(&sb, &nats.url, &nats.credentials, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    // Another authority's certificate is no better.
    let other = Nats::start_tls(&sb);
    let other_ca = other.ca.clone().unwrap();
    let (code, err) = join(
        &sb,
        &nats.url,
        &nats.credentials,
        &["--cluster-ca", other_ca.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    other.stop();
    nats.stop();
    sb.assert_no_leaks();
}

#[test]
fn an_authority_named_makes_tls_required_and_must_be_a_file_no_one_else_can_change() {
    let sb = Sandbox::new();
    // A server without TLS: a node told to trust an authority refuses it,
    // even on a nats:// URL (no password goes over plain TCP).
    let plain = Nats::start(&sb);
    let tls = Nats::start_tls(&sb);
    let ca = tls.ca.clone().unwrap();
    let (code, err) = join(
        &sb,
        &plain.url,
        &plain.credentials,
        &["--cluster-ca", ca.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.to_lowercase().contains("tls"), "{err}");
    // An authority file others may write (mode 666): refused before NATS
    // is asked.
    let open = sb.dir.path().join("open-ca.pem");
    std::fs::copy(&ca, &open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = join(
        &sb,
        &tls.url,
        &tls.credentials,
        &["--cluster-ca", open.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("writable by others"), "{err}");
    // A symlink to it is not followed.
    let link = sb.dir.path().join("link-ca.pem");
    std::os::unix::fs::symlink(&ca, &link).unwrap();
    let (code, err) = join(
        &sb,
        &tls.url,
        &tls.credentials,
        &["--cluster-ca", link.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot open the cluster's CA file"), "{err}");
    // Not a certificate at all.
    let junk = sb.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (code, err) = join(
        &sb,
        &tls.url,
        &tls.credentials,
        &["--cluster-ca", junk.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds no PEM certificate"), "{err}");
    plain.stop();
    tls.stop();
    sb.assert_no_leaks();
}
