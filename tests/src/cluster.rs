//! [`Cluster`]: agents started together in one temp dir under one secret, and the waits and
//! faults that act on all of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::{Agent, AgentSpec};
use crate::http::Subscription;
use crate::{TempDir, keygen, serial, wait_for};

/// How long a cluster may take to converge (form, re-converge after a heal, settle a tree).
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// Agents under one cluster secret, each a process in its own data dir under one temp dir.
/// Holds [`serial`] for its life; dropping it kills every agent, then removes the dir.
#[derive(Debug)]
pub struct Cluster {
    agents: Vec<Agent>,
    secret: PathBuf,
    dir: TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Cluster {
    /// No agents yet: a temp dir named after `label` and a cluster secret in it.
    pub fn new(label: &str) -> Cluster {
        let guard = serial();
        let dir = TempDir::new(label);
        let secret = keygen(dir.path(), "cluster.key");
        Cluster { agents: Vec::new(), secret, dir, _serial: guard }
    }

    /// `n` agents named n0..: n0 starts the cluster, the others join through it; returns once
    /// every agent lists all `n` alive (by NodeId).
    pub fn start(label: &str, n: usize) -> Cluster {
        let mut c = Cluster::new(label);
        c.add(AgentSpec::new("n0"));
        let seed = c.agents[0].addr();
        for i in 1..n {
            c.launch(AgentSpec::new(&format!("n{i}")).join(&[seed]));
        }
        for a in &mut c.agents {
            a.wait_ready();
        }
        c.wait_converged();
        c
    }

    /// The temp dir (agents' data dirs and logs are in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster secret file.
    pub fn secret(&self) -> &Path {
        &self.secret
    }

    /// Start an agent and wait until it is ready; its index.
    pub fn add(&mut self, spec: AgentSpec) -> usize {
        let i = self.launch(spec);
        self.agents[i].wait_ready();
        i
    }

    /// Start an agent without waiting for it (one expected to fail, or several started at
    /// once); its index.
    pub fn launch(&mut self, spec: AgentSpec) -> usize {
        let a = Agent::launch(self.dir.path(), spec, &self.secret);
        self.agents.push(a);
        self.agents.len() - 1
    }

    /// How many agents (running or not).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// No agents.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// All agents.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Every index.
    pub fn all(&self) -> Vec<usize> {
        (0..self.agents.len()).collect()
    }

    /// Wait until every agent lists every agent alive (by NodeId) and no other member alive.
    pub fn wait_converged(&self) {
        let all = self.all();
        self.wait_alive(&all, &all);
    }

    /// Wait until each of `observers` lists exactly `alive` as its alive members (by NodeId):
    /// every one of them alive, and no other member alive.
    pub fn wait_alive(&self, observers: &[usize], alive: &[usize]) {
        let want: BTreeSet<String> = alive.iter().map(|i| self.agents[*i].id()).collect();
        let names: Vec<&str> = alive.iter().map(|i| self.agents[*i].name.as_str()).collect();
        wait_for(&format!("{observers:?} to see exactly {names:?} alive"), CONVERGE_WITHIN, || {
            for i in observers {
                let a = &self.agents[*i];
                let members = a.members()?;
                let seen: BTreeSet<String> =
                    members.iter().filter(|m| m.state == "alive").map(|m| m.id.clone()).collect();
                if seen != want {
                    let states: Vec<String> =
                        members.iter().map(|m| format!("{} {}", m.name, m.state)).collect();
                    return Err(format!("{} sees {states:?}", a.name));
                }
            }
            Ok(())
        });
    }

    /// Cut every link between the groups, both ways, at each agent's socket (the test control);
    /// links within a group stay. Returns once every agent has applied it.
    pub fn partition(&self, groups: &[&[usize]]) {
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .flat_map(|(_, other)| other.iter().map(|i| self.agents[*i].addr().to_string()))
                .collect();
            for i in *group {
                self.agents[*i].control(&json!({"blocked": others}));
            }
        }
    }

    /// Restore every link cut by [`Cluster::partition`] on the running agents.
    pub fn heal(&self) {
        for a in self.agents.iter().filter(|a| a.pid().is_some()) {
            a.control(&json!({"blocked": []}));
        }
    }

    /// Wait until `topic`'s tree is settled over the running agents: each of `subscribers` is on
    /// it (a depth) and knows the other subscribers as topic members; exactly one agent is the
    /// root, the one the ring makes responsible for the topic (the first ring id at or after
    /// the topic id); and every parent lists its children back.
    pub fn wait_tree(&self, topic: &str, subscribers: &[usize]) {
        let running: Vec<usize> =
            self.all().into_iter().filter(|i| self.agents[*i].pid().is_some()).collect();
        self.wait_tree_among(topic, &running, subscribers);
    }

    /// [`Cluster::wait_tree`] over the agents `among` only (one side of a partition): the root
    /// is the one the ring of these agents makes responsible.
    pub fn wait_tree_among(&self, topic: &str, among: &[usize], subscribers: &[usize]) {
        wait_for(&format!("the `{topic}` tree to settle over {subscribers:?}"), CONVERGE_WITHIN, || {
            // Subscribers know the topic's name; a node that only forwards for others lists it
            // by id.
            let first = subscribers.first().or(among.first()).ok_or("no agent given")?;
            let named = self.agents[*first]
                .topic(topic)?
                .ok_or(format!("{} is not on it", self.agents[*first].name))?;
            let topic_id = named["topic_id"].clone();
            let mut entries: Vec<(usize, Value)> = Vec::new();
            for i in among {
                let list = self.agents[*i].get("/v1/topics")?;
                if let Some(t) = list.as_array().into_iter().flatten().find(|t| t["topic_id"] == topic_id) {
                    entries.push((*i, t.clone()));
                }
            }
            for s in subscribers {
                let name = &self.agents[*s].name;
                let (_, t) = entries.iter().find(|(i, _)| i == s).ok_or(format!("{name} is not on it"))?;
                if t["depth"].as_u64().is_none() {
                    return Err(format!("{name} has no depth yet: {t}"));
                }
                let members = t["members"].as_u64().unwrap_or(0);
                if members != subscribers.len() as u64 - 1 {
                    return Err(format!("{name} knows {members} other members: {t}"));
                }
            }
            let roots: Vec<usize> =
                entries.iter().filter(|(_, t)| t["role"] == "root").map(|(i, _)| *i).collect();
            let key = u64::from_str_radix(topic_id.as_str().unwrap_or(""), 16)
                .map_err(|e| format!("topic_id in {named}: {e}"))?;
            let expected = self.responsible(among, key)?;
            if roots != [expected] {
                return Err(format!(
                    "roots {roots:?}, the ring makes {} responsible",
                    self.agents[expected].name
                ));
            }
            for (i, t) in &entries {
                if let Some(parent) = t["parent"].as_str() {
                    let p = among
                        .iter()
                        .find(|j| self.agents[**j].id() == parent)
                        .ok_or(format!("{}'s parent {parent} is none of the agents", self.agents[*i].name))?;
                    let back = entries.iter().find(|(j, _)| j == p).map(|(_, pt)| pt["children"].clone());
                    let me = json!(self.agents[*i].id());
                    if !back.as_ref().and_then(Value::as_array).is_some_and(|c| c.contains(&me)) {
                        return Err(format!("{}'s parent does not list it as a child", self.agents[*i].name));
                    }
                }
            }
            Ok(())
        });
    }

    /// The running agent responsible for `key` on the ring: the first ring id at or after it.
    fn responsible(&self, running: &[usize], key: u64) -> Result<usize, String> {
        let all = self.agents[running[0]].get("/v1/members")?;
        let list = all.as_array().ok_or(format!("members: {all}"))?;
        let mut ring: Vec<(u64, usize)> = Vec::new();
        for i in running {
            let id = json!(self.agents[*i].id());
            let m = list
                .iter()
                .find(|m| m["id"] == id)
                .ok_or(format!("{} does not list {}", self.agents[running[0]].name, self.agents[*i].name))?;
            let r = u64::from_str_radix(m["ring_id"].as_str().unwrap_or(""), 16)
                .map_err(|e| format!("ring_id of {m}: {e}"))?;
            ring.push((r, *i));
        }
        ring.sort();
        ring.iter()
            .find(|(r, _)| *r >= key)
            .or(ring.first())
            .map(|(_, i)| *i)
            .ok_or("no agent running".into())
    }

    /// Make sure each publisher's stream on `topic` has reached every subscription: publish a
    /// `warm-up` message from it (again every half second) until each of `subs` has received
    /// one from it. From then on every message it publishes must reach them (or be announced as
    /// a gap). Returns each publisher's origin.
    pub fn warm_up(&self, topic: &str, publishers: &[usize], subs: &[&Subscription]) -> Vec<String> {
        let mut origins = Vec::new();
        for p in publishers {
            let a = &self.agents[*p];
            let mut origin = String::new();
            let mut last_publish: Option<std::time::Instant> = None;
            wait_for(
                &format!("{}'s `{topic}` stream to reach every subscriber", a.name),
                CONVERGE_WITHIN,
                || {
                    if last_publish.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                        origin = a.publish(topic, "warm-up").origin;
                        last_publish = Some(std::time::Instant::now());
                    }
                    let missing =
                        subs.iter().filter(|s| !s.messages().iter().any(|m| m.origin == origin)).count();
                    if missing == 0 {
                        Ok(())
                    } else {
                        Err(format!("{missing} subscriptions have nothing from it"))
                    }
                },
            );
            origins.push(origin);
        }
        origins
    }
}

impl std::ops::Index<usize> for Cluster {
    type Output = Agent;
    fn index(&self, i: usize) -> &Agent {
        &self.agents[i]
    }
}

impl std::ops::IndexMut<usize> for Cluster {
    fn index_mut(&mut self, i: usize) -> &mut Agent {
        &mut self.agents[i]
    }
}
