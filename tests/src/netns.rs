//! Agents in Linux network namespaces, for partitions made by taking links down.
//!
//! The topology ([`Network::new`]): a *switch* namespace holds two bridges, `br0` and `br1`,
//! joined by a veth pair, the *trunk* (`tk0`–`tk1`). Each host (one agent) has its own namespace
//! with one veth into the bridge of its side, carrying its own cluster address `10.213.0.K`; the
//! cluster subnet exists only inside these namespaces. [`Network::cut`] takes the trunk down (a
//! partition between the sides; each side still has its own bridge) and [`Network::mend`]
//! brings it up again.
//!
//! The test process reaches each agent's API over a second veth pair per host, from the root
//! namespace: a `/30` from `198.18.0.0/15` (RFC 2544's benchmarking range, unused on real
//! networks) picked free at setup. The agent binds QUIC on its cluster address and the API on
//! its management address; with no route between the two subnets, cutting the trunk cuts the
//! cluster traffic and nothing else.
//!
//! Needs root (`ip netns`); [`Network::usable`] says why not. Everything is deleted on drop, a
//! panicking test included, and namespaces left by a test process that was killed are swept
//! before a new network is set up. Drop the agents before the network (declare the network
//! first): an agent process keeps its namespace alive.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use crate::agent::AgentSpec;
use crate::run;

/// The namespaces' name prefix; a name is `hst{pid}-{n}-{role}`.
const PREFIX: &str = "hst";

/// One host of a [`Network`]: a namespace and its two addresses.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its namespace.
    pub ns: String,
    /// Its cluster address (QUIC).
    pub ip: IpAddr,
    /// Its management address, reachable from the test process (the API).
    pub api_ip: IpAddr,
    /// The bridge it is on: 0 or 1.
    pub side: usize,
}

/// Namespaces, bridges and veth pairs; deleted on drop.
#[derive(Debug)]
pub struct Network {
    switch: String,
    hosts: Vec<Host>,
    namespaces: Vec<String>,
}

/// Run `ip ARGS`; its stderr as the error.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("ip").args(args), Duration::from_secs(20));
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), out.stderr.trim()))
    }
}

/// This process's effective uid, from /proc.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Delete namespaces left by test processes that no longer run.
fn sweep() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// `/30` blocks of 198.18.0.0/15 in use in the root namespace.
fn used_blocks() -> Vec<u32> {
    let text = ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|a| (a >> 17) == (u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17))
        .map(|a| (a & 0x1_ffff) >> 2)
        .collect()
}

impl Network {
    /// `Ok` if this process can make network namespaces (it runs as root and `ip` works).
    pub fn usable() -> Result<(), String> {
        match euid() {
            Some(0) => {}
            Some(uid) => return Err(format!("network namespaces need root; this test runs as uid {uid}")),
            None => return Err("cannot read this process's uid from /proc".into()),
        }
        ip(&["netns", "list"]).map(|_| ()).map_err(|e| format!("{e} (install iproute2: scripts/test does)"))
    }

    /// One host per entry of `sides`, on bridge `sides[k]` (0 or 1); the trunk is up.
    pub fn new(sides: &[usize]) -> Result<Network, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        sweep();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let name = |role: &str| format!("{PREFIX}{pid}-{n}-{role}");
        let mut net = Network { switch: name("sw"), hosts: Vec::new(), namespaces: Vec::new() };
        let sw = net.switch.clone();
        ip(&["netns", "add", &sw])?;
        net.namespaces.push(sw.clone());
        for cmd in [
            "link add br0 type bridge",
            "link add br1 type bridge",
            "link add tk0 type veth peer name tk1",
            "link set tk0 master br0",
            "link set tk1 master br1",
            "link set br0 up",
            "link set br1 up",
            "link set tk0 up",
            "link set tk1 up",
        ] {
            let mut args = vec!["-n", sw.as_str()];
            args.extend(cmd.split(' '));
            ip(&args)?;
        }
        let used = used_blocks();
        let mut free = (1u32..(1 << 15)).filter(|b| !used.contains(b));
        for (k, side) in sides.iter().enumerate() {
            assert!(*side < 2, "a host is on side 0 or 1");
            let ns = name(&format!("h{k}"));
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let port = format!("p{k}");
            ip(&[
                "link", "add", "name", &port, "netns", &sw, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", &format!("br{side}"), "up"])?;
            let cluster_ip = Ipv4Addr::new(10, 213, 0, 2 + k as u8);
            ip(&["-n", &ns, "addr", "add", &format!("{cluster_ip}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let block = free.next().ok_or("no free /30 in 198.18.0.0/15")?;
            let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (block << 2);
            let (outside, inside) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
            let root_end = format!("hs{pid}m{n}k{k}");
            ip(&["link", "add", "name", &root_end, "type", "veth", "peer", "name", "mgmt", "netns", &ns])?;
            ip(&["addr", "add", &format!("{outside}/30"), "dev", &root_end])?;
            ip(&["link", "set", &root_end, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{inside}/30"), "dev", "mgmt"])?;
            ip(&["-n", &ns, "link", "set", "mgmt", "up"])?;
            net.hosts.push(Host { ns, ip: IpAddr::V4(cluster_ip), api_ip: IpAddr::V4(inside), side: *side });
        }
        Ok(net)
    }

    /// Its hosts, in the order of `sides`.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// How to start an agent named `name` on host `k`.
    pub fn spec(&self, k: usize, name: &str) -> AgentSpec {
        let h = &self.hosts[k];
        let mut spec = AgentSpec::new(name);
        spec.netns = Some(h.ns.clone());
        spec.bind_ip = h.ip;
        spec.api_ip = h.api_ip;
        spec
    }

    /// Take the trunk between the two bridges down: the sides are partitioned.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["-n", &self.switch, "link", "set", "tk0", "down"]).map(drop)
    }

    /// Bring the trunk up again.
    pub fn mend(&self) -> Result<(), String> {
        ip(&["-n", &self.switch, "link", "set", "tk0", "up"]).map(drop)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth pairs with an end in it.
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
