//! What every HTTP endpoint hum serves checks before anything else: that
//! the request was meant for this server (the `Host` header names the
//! loopback address it listens on, which defeats DNS rebinding) and that it
//! does not come from a web page of another origin (a browser's `Origin` /
//! `Sec-Fetch-Site`, which defeats cross-site request forgery, including the
//! "simple" `text/plain` POST that needs no preflight).
//!
//! Pure functions over headers; the axum middleware at the bottom applies
//! them and answers 403 with a one-line reason.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// The address a server listens on, for its checks.
#[derive(Debug, Clone, Copy)]
pub struct Listening(pub SocketAddr);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ForeignHost(String),
    ForeignOrigin(String),
    CrossSite,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ForeignHost(h) => write!(f, "Host {h:?} is not this server's address"),
            Refusal::ForeignOrigin(o) => write!(f, "requests from origin {o:?} are not accepted"),
            Refusal::CrossSite => write!(f, "cross-site browser requests are not accepted"),
        }
    }
}

/// The host names that mean this loopback server.
fn own_host(host: &str, addr: SocketAddr) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        // `[::1]:8199`, `localhost:8199`; a bare IPv6 literal has no port.
        Some((n, p)) if !n.is_empty() && (n.ends_with(']') || !n.contains(':')) => (n, Some(p)),
        _ => (host, None),
    };
    if port.is_some_and(|p| p != addr.port().to_string()) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name == addr.ip().to_string()
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks one request's headers. A server listening off loopback (which
/// hum only allows with a token) is reached under names it cannot know, so
/// only loopback servers check `Host`.
pub fn check(headers: &HeaderMap, listening: SocketAddr) -> Result<(), Refusal> {
    if listening.ip().is_loopback() {
        if let Some(host) = headers.get(header::HOST) {
            let host = host.to_str().unwrap_or("<not text>");
            if !own_host(host, listening) {
                return Err(Refusal::ForeignHost(host.to_owned()));
            }
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("<not text>");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|host| listening.ip().is_loopback() && own_host(host, listening));
        if !own {
            return Err(Refusal::ForeignOrigin(origin.to_owned()));
        }
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site") | Some("same-site") => Err(Refusal::CrossSite),
        _ => Ok(()),
    }
}

/// axum middleware: refuses with 403 what [`check`] refuses.
pub async fn guard(State(listening): State<Listening>, req: Request, next: Next) -> Response {
    match check(req.headers(), listening.0) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::warn!(event = "http.refused", path = %req.uri().path(), reason = %crate::logsafe::Escaped(&refusal.to_string()), "request refused");
            (StatusCode::FORBIDDEN, format!("{refusal}\n")).into_response()
        }
    }
}

/// The uid that owns the client end of a loopback TCP connection to us: the
/// kernel's socket table lists that end with its owner. `None` when it
/// cannot be told (not loopback, gone already, or no such table here).
pub fn loopback_peer_uid(peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    if !peer.ip().is_loopback() {
        return None;
    }
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    find_owner(&text, peer, ours)
}

/// The uid that owns the listening socket holding `addr`'s port (bound to
/// that address or to every address), when the socket tables tell.
pub fn listener_owner(addr: SocketAddr) -> Option<u32> {
    let v4 = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    find_listener(&v4, &v6, addr)
}

/// The uid column of a listening row (state `0A`) of `addr`, or of its
/// port on every address (`0.0.0.0`, `::`).
fn find_listener(v4: &str, v6: &str, addr: SocketAddr) -> Option<u32> {
    let port = addr.port();
    let mut wanted = vec![table_form(addr)];
    wanted.push(table_form(SocketAddr::from(([0, 0, 0, 0], port))));
    wanted.push(table_form(SocketAddr::from(([0u16; 8], port))));
    v4.lines()
        .skip(1)
        .chain(v6.lines().skip(1))
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(3) == Some(&"0A") && f.get(1).is_some_and(|l| wanted.iter().any(|w| w == l)))
                .then(|| f.get(7)?.parse().ok())
                .flatten()
        })
}

/// Who holds `addr` when it cannot be had, said for an error or a warning:
/// another user's server there gets whatever clients send to that address
/// (their prompts, and a token they carry).
pub fn holder_of(addr: SocketAddr) -> String {
    match listener_owner(addr) {
        Some(uid) if !thrum::peer::allowed(uid, thrum::peer::own_uid()) => format!(
            "held by uid {}, ANOTHER USER: clients pointed at {addr} reach them, not hum; send no token there",
            thrum::peer::describe(uid)
        ),
        Some(uid) => format!("held by uid {}", thrum::peer::describe(uid)),
        None => "held by a process this user cannot name".to_owned(),
    }
}

/// A server of another user on the same port of the other loopback
/// address (`::1` beside `127.0.0.1`, and back): clients that name
/// `localhost` may reach it first. Said as a warning, if there is one.
pub fn squatter_beside(addr: SocketAddr) -> Option<String> {
    let other: SocketAddr = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_loopback() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        _ => return None,
    };
    let uid = listener_owner(other)?;
    (!thrum::peer::allowed(uid, thrum::peer::own_uid())).then(|| {
        format!(
            "{other} is held by uid {}, ANOTHER USER: clients that name `localhost:{}` may reach them instead of hum; name {} itself",
            thrum::peer::describe(uid),
            addr.port(),
            addr.ip()
        )
    })
}

/// An address as the kernel's socket table writes it: the address bytes
/// in 32-bit words of host byte order, in hex, then `:` and the port.
fn table_form(addr: SocketAddr) -> String {
    let words: Vec<String> = match addr.ip() {
        std::net::IpAddr::V4(ip) => vec![format!("{:08X}", u32::from_ne_bytes(ip.octets()))],
        std::net::IpAddr::V6(ip) => ip
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    format!("{}:{:04X}", words.concat(), addr.port())
}

/// The uid column of the row whose local end is `peer` and remote end is
/// `ours`. A row without a socket behind it (inode 0: closed already, in
/// `TIME_WAIT` or orphaned) reads as uid 0 and belongs to nobody: unknown.
fn find_owner(table: &str, peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    let (local, remote) = (table_form(peer), table_form(ours));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str())
            && f.get(2) == Some(&remote.as_str())
            && f.get(9).is_some_and(|inode| *inode != "0"))
        .then(|| f.get(7)?.parse().ok())
        .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const LOOPBACK: &str = "127.0.0.1:8199";

    #[test]
    fn own_names_pass_and_rebound_names_do_not() {
        let addr: SocketAddr = LOOPBACK.parse().unwrap();
        for ok in [
            "127.0.0.1:8199",
            "localhost:8199",
            "LOCALHOST",
            "127.0.0.1",
            "[::1]:8199",
        ] {
            assert!(own_host(ok, addr), "{ok}");
        }
        for bad in [
            "evil.example:8199",
            "localhost:9999",
            "127.0.0.1.evil.example",
            "10.0.0.1:8199",
            "",
        ] {
            assert!(!own_host(bad, addr), "{bad}");
        }
    }

    #[test]
    fn browsers_of_other_origins_are_refused() {
        let addr: SocketAddr = LOOPBACK.parse().unwrap();
        assert!(check(&headers(&[("host", "localhost:8199")]), addr).is_ok());
        assert!(check(&headers(&[]), addr).is_ok(), "no Host: not a browser");
        assert_eq!(
            check(&headers(&[("host", "rebind.example:8199")]), addr),
            Err(Refusal::ForeignHost("rebind.example:8199".into()))
        );
        assert!(matches!(
            check(
                &headers(&[
                    ("host", "127.0.0.1:8199"),
                    ("origin", "https://evil.example")
                ]),
                addr
            ),
            Err(Refusal::ForeignOrigin(_))
        ));
        assert!(matches!(
            check(&headers(&[("origin", "null")]), addr),
            Err(Refusal::ForeignOrigin(_))
        ));
        assert!(check(&headers(&[("origin", "http://localhost:8199")]), addr).is_ok());
        assert_eq!(
            check(&headers(&[("sec-fetch-site", "cross-site")]), addr),
            Err(Refusal::CrossSite)
        );
        assert!(check(&headers(&[("sec-fetch-site", "same-origin")]), addr).is_ok());
    }

    #[test]
    fn the_owner_of_a_loopback_connection_is_read_from_the_socket_table() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let (p, o) = (table_form(peer), table_form(ours));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {o} {p} 01 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
             1: {p} {o} 01 00000000:00000000 00:00000000 00000000 65534        0 2 1\n"
        );
        assert_eq!(find_owner(&table, peer, ours), Some(65534));
        assert_eq!(find_owner(&table, ours, peer), Some(0));
        // A closed connection's row (inode 0) says uid 0 but is nobody's.
        let closed = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {p} {o} 06 00000000:00000000 00:00000000 00000000     0        0 0 1\n"
        );
        assert_eq!(find_owner(&closed, peer, ours), None);
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(find_owner(&table, other, ours), None);
        // A real connection of this process is found, owned by us.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_end, seen_peer) = listener.accept().unwrap();
        assert_eq!(seen_peer, client.local_addr().unwrap());
        assert_eq!(
            loopback_peer_uid(seen_peer, listener.local_addr().unwrap()),
            Some(rustix::process::getuid().as_raw())
        );
    }

    #[test]
    fn the_owner_of_a_listening_port_is_read_from_the_socket_tables() {
        let at: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        let row = |addr: SocketAddr, st: &str, uid: u32| {
            format!(
                "0: {} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000 {uid} 0 1 1\n",
                table_form(addr)
            )
        };
        let head = "sl local rem st q tr rt uid to inode\n";
        let v4 = format!("{head}{}", row(at, "0A", 65534));
        assert_eq!(find_listener(&v4, head, at), Some(65534));
        // Every address's listener holds the port too.
        let any = format!("{head}{}", row("0.0.0.0:11434".parse().unwrap(), "0A", 7));
        assert_eq!(find_listener(&any, head, at), Some(7));
        let any6 = format!("{head}{}", row("[::]:11434".parse().unwrap(), "0A", 8));
        assert_eq!(find_listener(head, &any6, at), Some(8));
        // A connection on that port is no listener; another port is not it.
        let conn = format!("{head}{}", row(at, "01", 9));
        assert_eq!(find_listener(&conn, head, at), None);
        let other = format!("{head}{}", row("127.0.0.1:11435".parse().unwrap(), "0A", 9));
        assert_eq!(find_listener(&other, head, at), None);
        // A real listener of this process.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            listener_owner(l.local_addr().unwrap()),
            Some(rustix::process::getuid().as_raw())
        );
    }

    #[test]
    fn a_server_off_loopback_checks_origin_but_not_host() {
        let addr: SocketAddr = "0.0.0.0:8199".parse().unwrap();
        assert!(check(&headers(&[("host", "myhost.lan:8199")]), addr).is_ok());
        assert!(check(&headers(&[("origin", "http://myhost.lan:8199")]), addr).is_err());
    }
}
