//! Machines of their own on one host: a bridge with an address for the
//! NATS server, and per node a network namespace joined to it by a veth
//! pair, with an address of its own. Made with `ip` (root only); every
//! name carries a random part, and dropping it deletes what it made.

use std::process::Command;

/// The bridge and the namespaces made so far.
pub struct Hosts {
    id: String,
    bridge: String,
    subnet: (u8, u8),
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// Whether this test process may make namespaces: as root it must
    /// (a missing `ip` or `nsenter` fails the test, saying what to
    /// install: CI runs as root and must not fall back unseen); not root,
    /// the cluster tests run on loopback, and say so.
    pub fn possible() -> bool {
        if !rustix::process::geteuid().is_root() {
            return false;
        }
        for (tool, arg, package) in [
            ("ip", "-V", "iproute2"),
            ("nsenter", "--version", "util-linux"),
        ] {
            assert!(
                Command::new(tool)
                    .arg(arg)
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{tool} is missing: as root the cluster's host tests need network namespaces (Debian: apt-get install {package}; .ci/run installs it)"
            );
        }
        true
    }

    /// A bridge on a random private /24, its `.1` the host's address.
    pub fn new() -> Hosts {
        let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        let r = uuid::Uuid::new_v4().as_bytes()[0..2].to_vec();
        let subnet = (200 + r[0] % 50, r[1]);
        let bridge = format!("hb{id}");
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        let hosts = Hosts {
            id,
            bridge,
            subnet,
            namespaces: Vec::new(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.addr(1)),
            "dev",
            &hosts.bridge,
        ]);
        ip(&["link", "set", &hosts.bridge, "up"]);
        hosts
    }

    /// The address `.n` of the bridge's subnet.
    pub fn addr(&self, n: u8) -> String {
        format!("10.{}.{}.{n}", self.subnet.0, self.subnet.1)
    }

    /// A namespace with address `.{k+2}` on the bridge; returns its name.
    pub fn host(&mut self) -> String {
        let k = self.namespaces.len() as u8;
        let ns = format!("hn{}{k}", self.id);
        let (outside, inside) = (format!("hv{}{k}a", self.id), format!("hv{}{k}b", self.id));
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.addr(k + 2)),
            "dev",
            &inside,
        ]);
        ip(&["-n", &ns, "link", "set", &inside, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Cuts (or mends) the `k`th namespace's wire to the bridge.
    pub fn cable(&self, k: usize, up: bool) {
        let outside = format!("hv{}{k}a", self.id);
        ip(&["link", "set", &outside, if up { "up" } else { "down" }]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (k, ns) in self.namespaces.iter().enumerate() {
            // Deleting one end of a veth pair deletes both (a namespace
            // whose name is gone lives on while a socket of it lingers).
            let outside = format!("hv{}{k}a", self.id);
            let _ = Command::new("ip").args(["link", "del", &outside]).status();
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
