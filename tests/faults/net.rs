//! Network faults inside a private network namespace: each server has its own 127.0.0.N address and
//! runs under its own group, which an SNAT rule maps to that address, so iptables rules naming
//! source and destination addresses cut exactly the links between servers. The test's own clients
//! talk from 127.0.0.1 and are never cut. Every cut is probed before a run trusts it.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::cluster::Slot;

/// Why network faults cannot run here (`None`: they can, once inside a namespace).
pub(crate) fn unavailable() -> Option<String> {
    let Ok(uid) = Command::new("id").arg("-u").output() else {
        return Some("`id -u` cannot run".to_owned());
    };
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("the test does not run as root".to_owned());
    }
    for tool in ["unshare", "iptables", "setpriv", "ip", "bash", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    let namespace = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !namespace {
        return Some("`unshare -n` cannot create a network namespace".to_owned());
    }
    None
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn iptables(args: &[&str]) {
    run(
        "iptables",
        &["-w", "5"].iter().chain(args).copied().collect::<Vec<_>>(),
    );
}

/// The namespace's network, set up once per process.
pub(crate) struct Net {
    servers: Vec<(Ipv4Addr, u32, u16)>,
}

impl Net {
    /// Brings `lo` up and maps each server's group to its address.
    pub(crate) fn setup(slots: &[Slot]) -> Net {
        run("ip", &["link", "set", "lo", "up"]);
        iptables(&["-t", "nat", "-F", "POSTROUTING"]);
        iptables(&["-F", "INPUT"]);
        let mut servers = Vec::new();
        for slot in slots {
            let gid = slot.gid.expect("a namespaced server runs under its own group");
            let (ip, gid_text) = (slot.ip.to_string(), gid.to_string());
            iptables(&[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-m",
                "owner",
                "--gid-owner",
                &gid_text,
                "-j",
                "SNAT",
                "--to-source",
                &ip,
            ]);
            servers.push((slot.ip, gid, slot.rpc_port));
        }
        Net { servers }
    }

    /// Drops what server `from` sends to server `to` (with `probability`, 1.0 = all): packets
    /// addressed to `to`, and replies on connections `to` opened, whose destination was rewritten.
    fn drop_link(&self, from: usize, to: usize, probability: f64) {
        let (a, b) = (self.servers[from].0.to_string(), self.servers[to].0.to_string());
        let p = format!("{probability}");
        let chance: Vec<&str> = if probability < 1.0 {
            vec!["-m", "statistic", "--mode", "random", "--probability", &p]
        } else {
            Vec::new()
        };
        let mut direct = vec!["-A", "INPUT", "-s", &a, "-d", &b];
        direct.extend(&chance);
        direct.extend(["-j", "DROP"]);
        iptables(&direct);
        let mut reply = vec![
            "-A",
            "INPUT",
            "-s",
            &a,
            "-m",
            "conntrack",
            "--ctdir",
            "REPLY",
            "--ctrepldst",
            &b,
        ];
        reply.extend(&chance);
        reply.extend(["-j", "DROP"]);
        iptables(&reply);
    }

    /// Cuts every link between the two sides, both ways.
    pub(crate) fn partition(&self, side: &[usize]) {
        let other: Vec<usize> = (0..self.servers.len()).filter(|i| !side.contains(i)).collect();
        for &a in side {
            for &b in &other {
                self.drop_link(a, b, 1.0);
                self.drop_link(b, a, 1.0);
            }
        }
    }

    /// Proves a [`Net::partition`] cut: no link across it connects, every other link does.
    pub(crate) fn verify_partition(&self, side: &[usize]) {
        self.verify(|a, b| Some(side.contains(&a) != side.contains(&b)));
    }

    /// Drops everything `from` sends to the others (they still reach it over UDP).
    pub(crate) fn one_way(&self, from: usize) {
        for to in (0..self.servers.len()).filter(|to| *to != from) {
            self.drop_link(from, to, 1.0);
        }
    }

    /// Proves a [`Net::one_way`] cut.
    pub(crate) fn verify_one_way(&self, from: usize) {
        // TCP from the others to `from` dies too (its SYN-ACKs are dropped): no expectation there.
        self.verify(|a, b| {
            if a == from {
                Some(true)
            } else if b == from {
                None
            } else {
                Some(false)
            }
        });
    }

    /// Drops a share of every packet between servers.
    pub(crate) fn loss(&self, probability: f64) {
        for a in 0..self.servers.len() {
            for b in (0..self.servers.len()).filter(|b| *b != a) {
                self.drop_link(a, b, probability);
            }
        }
    }

    /// A TCP connect from server `a`'s group to server `b`'s RPC port, given `seconds` to finish
    /// (exit 124: timed out, 0: connected, 1: refused).
    fn probe(&self, a: usize, b: usize, seconds: u32) -> std::process::Child {
        let (gid, (ip, _, port)) = (self.servers[a].1, self.servers[b]);
        Command::new("setpriv")
            .args([
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
                "timeout",
                &seconds.to_string(),
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{ip}/{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a probe")
    }

    pub(crate) fn heal(&self) {
        iptables(&["-F", "INPUT"]);
    }

    /// Connects from each server's group to each other server's RPC port and checks that the pairs
    /// `cut(a, b)` names `Some(true)` time out (a dropped SYN: a refusal would mean the SYN got
    /// through) and the `Some(false)` pairs connect or are refused (that server is down).
    fn verify(&self, cut: impl Fn(usize, usize) -> Option<bool>) {
        let mut probes = Vec::new();
        for a in 0..self.servers.len() {
            for b in (0..self.servers.len()).filter(|b| *b != a) {
                probes.push((a, b, self.probe(a, b, 1)));
            }
        }
        for (a, b, mut child) in probes {
            let code = child.wait().expect("probe exit").code();
            let timed_out = code == Some(124);
            let connected = code == Some(0);
            match cut(a, b) {
                Some(true) => assert!(
                    timed_out,
                    "leaky cut: a probe from server {a} to server {b} ended with {code:?}, not a timeout"
                ),
                Some(false) => {
                    // A loaded machine can starve the probe itself for a second: a link that should
                    // be open gets one slower second chance before the run is called broken.
                    let code = if connected || code == Some(1) {
                        code
                    } else {
                        self.probe(a, b, 4).wait().expect("probe exit").code()
                    };
                    assert!(
                        code == Some(0) || code == Some(1),
                        "a probe from server {a} to server {b}, which should connect, ended with {code:?}"
                    );
                }
                None => {}
            }
        }
    }
}
