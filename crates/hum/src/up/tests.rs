//! What `hum up` checks before it starts anything.

use super::*;

fn up_args() -> UpArgs {
    #[derive(clap::Parser)]
    struct Up {
        #[command(flatten)]
        args: UpArgs,
    }
    <Up as clap::Parser>::parse_from(["up"]).args
}

#[tokio::test]
async fn hum_up_refuses_a_socket_a_busy_daemon_serves_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("humd.sock");
    let socket = tokio::net::UnixSocket::new_stream().unwrap();
    socket.bind(&path).unwrap();
    // A daemon that accepts nothing for now: its queue fills, and it is a
    // daemon all the same (a blocking probe would wait, a careless one
    // would call it stale and start a second humd over it).
    let listener = socket.listen(0).unwrap();
    let args = up_args();
    for _ in 0..3 {
        let refused = validate(&args, &path).await.unwrap_err();
        assert!(refused.contains("already serves"), "{refused}");
    }
    drop(listener);
    assert_eq!(validate(&args, &path).await, Ok(()), "a stale socket");
}
