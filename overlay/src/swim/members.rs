//! The member table and its round-robin probe order (PROTOCOLS.md §6.1, §6.4).
//!
//! Entries live in one vector sorted by [`NodeId`] (self included), so lookups are binary
//! searches and uniform choice needs no extra list. The probe order is a vector of indices
//! into it: shuffled at every wrap, a new member swapped in at a uniformly random offset
//! (memberlist `aliveNode`).
//!
//! New members are *staged* (an ordered map, O(log n) each) and merged into the vector once
//! per input by [`Table::flush`], in one pass: inserting them one by one shifted the vector and
//! every probe index per insert, O(n) each, so one push-pull of 55,000 made-up members froze a
//! node for minutes (issue 12, case 2). The merge makes the same random draws in the same
//! order as one-by-one insertion did, so runs are unchanged. Lookups see staged members at
//! once; [`Table::members`] is only read between inputs, when nothing is staged.

use std::collections::BTreeMap;

use hearsay_protocols::auth::Signature;
use hearsay_protocols::{Duration, Instant, NodeId, Rng};

use super::message::{Incarnation, SharedProfile, State};
use super::suspicion::Suspicion;

/// Bytes an entry costs besides its profile, for the table's byte cap: the entry, its
/// signature, its sort key and probe index, the shared profile's header, and a margin for a
/// suspicion and a queued update.
pub(crate) const ENTRY_BYTES: usize = 256;

/// What an entry with `profile` costs against the table's byte cap.
pub(crate) fn entry_cost(profile: &SharedProfile) -> usize {
    ENTRY_BYTES + postcard::experimental::serialized_size(profile).unwrap_or(usize::MAX / 2)
}

/// One entry of the member table.
#[derive(Clone, Debug)]
pub struct Member {
    /// The member.
    pub id: NodeId,
    /// Its incarnation as this table knows it.
    pub incarnation: Incarnation,
    /// Its state.
    pub state: State,
    /// When the state last changed (for reaping and gossip to the dead).
    pub changed_at: Instant,
    /// Its address and meta.
    pub profile: SharedProfile,
    /// Its own signature over its `Alive` at `incarnation` with `profile`; `None` for an entry
    /// the host put in the starting table ([`Swim::with_members`](super::Swim::with_members)).
    pub(crate) sig: Option<Signature>,
    pub(crate) suspicion: Option<Box<Suspicion>>,
}

impl Member {
    /// A fresh entry.
    pub(crate) fn new(
        id: NodeId,
        incarnation: Incarnation,
        state: State,
        now: Instant,
        profile: SharedProfile,
    ) -> Self {
        Member { id, incarnation, state, changed_at: now, profile, sig: None, suspicion: None }
    }

    /// The member's signature over its `Alive` at its incarnation, if this node holds one.
    pub fn signature(&self) -> Option<&Signature> {
        self.sig.as_ref()
    }

    /// When the suspicion of this member fires, while it is Suspect.
    pub fn suspicion_deadline(&self) -> Option<Instant> {
        self.suspicion.as_ref().map(|s| s.deadline)
    }

    /// Independent confirmations of the suspicion so far (0 when not Suspect).
    pub fn confirmations(&self) -> u32 {
        self.suspicion.as_ref().map_or(0, |s| s.confirmations())
    }
}

/// The first index whose key is ≥ `key` in ascending `keys` (`partition_point(k < key)`).
///
/// NodeIds are hashes, so their prefixes are spread uniformly over u64: the search starts
/// where `key` would sit under that assumption and gallops outward to bracket it, touching a
/// few neighbouring cache lines instead of log2(n) scattered ones (this lookup is the
/// simulator's hot path). Any distribution of keys gives the right answer; skewed ones (the
/// small synthetic ids of tests) just gallop further.
fn lower_bound(keys: &[u64], key: u64) -> usize {
    let n = keys.len();
    if n < 16 {
        return keys.partition_point(|&k| k < key);
    }
    let guess = ((u128::from(key) * n as u128) >> 64) as usize;
    let guess = guess.min(n - 1);
    let (mut lo, mut hi);
    if keys[guess] < key {
        // The answer is above `guess`: gallop up.
        lo = guess + 1;
        let mut step = 1;
        hi = lo;
        while hi < n && keys[hi] < key {
            lo = hi + 1;
            hi = (hi + step).min(n);
            step *= 2;
        }
        hi = hi.min(n);
    } else {
        // keys[guess] ≥ key: the answer is at or below `guess`: gallop down.
        hi = guess;
        let mut step = 1;
        lo = hi;
        while lo > 0 && keys[lo - 1] >= key {
            hi = lo - 1;
            lo = lo.saturating_sub(step);
            step *= 2;
        }
    }
    lo + keys[lo..hi].partition_point(|&k| k < key)
}

#[derive(Clone, Debug)]
pub(crate) struct Table {
    me: NodeId,
    members: Vec<Member>,
    /// `members[i].id.prefix_u64()`: a dense array to binary-search (8 bytes an entry instead
    /// of 72), ascending because ids are ordered bytewise.
    keys: Vec<u64>,
    /// Probe order: indices into `members`, self excluded.
    probe: Vec<u32>,
    probe_index: usize,
    /// Members inserted since the last [`Table::flush`].
    staged: BTreeMap<NodeId, Member>,
    /// Their ids in insertion order, for the probe-order draws.
    staged_order: Vec<NodeId>,
    /// Σ [`entry_cost`] over the entries, staged ones included.
    bytes: usize,
}

impl Table {
    /// A table holding only `own`, and an empty probe order.
    pub(crate) fn new(own: Member) -> Self {
        Table {
            me: own.id,
            keys: vec![own.id.prefix_u64()],
            bytes: entry_cost(&own.profile),
            members: vec![own],
            probe: Vec::new(),
            probe_index: 0,
            staged: BTreeMap::new(),
            staged_order: Vec::new(),
        }
    }

    /// A table of `members` (self among them), the probe order shuffled.
    pub(crate) fn with_members(me: NodeId, mut members: Vec<Member>, rng: &mut Rng) -> Self {
        members.sort_by_key(|m| m.id);
        members.dedup_by(|a, b| a.id == b.id);
        let keys = members.iter().map(|m| m.id.prefix_u64()).collect();
        let bytes = members.iter().map(|m| entry_cost(&m.profile)).sum();
        let mut t = Table {
            me,
            members,
            keys,
            probe: Vec::new(),
            probe_index: 0,
            staged: BTreeMap::new(),
            staged_order: Vec::new(),
            bytes,
        };
        t.rebuild_probe_order(rng);
        t
    }

    /// Entries, staged ones included.
    pub(crate) fn len(&self) -> usize {
        self.members.len() + self.staged.len()
    }

    /// Σ [`entry_cost`] over the entries.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if one more entry costing `cost` stays within `max` entries and `bytes_max` bytes.
    pub(crate) fn has_room(&self, cost: usize, max: usize, bytes_max: usize) -> bool {
        self.len() < max && self.bytes.saturating_add(cost) <= bytes_max
    }

    /// An entry's cost changed from `old` to `new` (a new profile).
    pub(crate) fn recost(&mut self, old: usize, new: usize) {
        self.bytes = self.bytes.saturating_sub(old).saturating_add(new);
    }

    /// The entries, ascending by id. Read between inputs only: nothing may be staged.
    pub(crate) fn members(&self) -> &[Member] {
        debug_assert!(self.staged.is_empty(), "the table is read with members staged");
        &self.members
    }

    pub(crate) fn position(&self, id: &NodeId) -> Result<usize, usize> {
        let key = id.prefix_u64();
        let mut i = lower_bound(&self.keys, key);
        // Ids sharing the 8-byte prefix (never, for random keys) are told apart in full.
        while i < self.keys.len() && self.keys[i] == key {
            match self.members[i].id.cmp(id) {
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => return Err(i),
                std::cmp::Ordering::Less => i += 1,
            }
        }
        Err(i)
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Member> {
        match self.position(id) {
            Ok(i) => Some(&self.members[i]),
            Err(_) => self.staged.get(id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Member> {
        match self.position(id) {
            Ok(i) => Some(&mut self.members[i]),
            Err(_) => self.staged.get_mut(id),
        }
    }

    /// Our own entry (always present).
    pub(crate) fn own(&self) -> &Member {
        let i = self.position(&self.me).unwrap_or(0);
        &self.members[i]
    }

    pub(crate) fn own_mut(&mut self) -> &mut Member {
        let i = self.position(&self.me).unwrap_or(0);
        &mut self.members[i]
    }

    /// Stage a member not yet in the table, in O(log n); [`Table::flush`] merges it.
    pub(crate) fn insert(&mut self, member: Member) {
        if self.get(&member.id).is_some() {
            return;
        }
        self.bytes = self.bytes.saturating_add(entry_cost(&member.profile));
        self.staged_order.push(member.id);
        self.staged.insert(member.id, member);
    }

    /// Merge the staged members into the sorted vector in one pass, O(n + k), and put each
    /// in the probe order at a uniformly random offset, the entry there moving to the end
    /// (memberlist `aliveNode`), in insertion order: the same draws one-by-one insertion made.
    pub(crate) fn flush(&mut self, rng: &mut Rng) {
        if self.staged.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.members);
        let staged = std::mem::take(&mut self.staged);
        let mut merged = Vec::with_capacity(old.len() + staged.len());
        // Where each old entry went, and where each staged one landed (ascending by id).
        let mut moved = Vec::with_capacity(old.len());
        let mut landed: Vec<(NodeId, u32)> = Vec::with_capacity(staged.len());
        let mut new = staged.into_values().peekable();
        for m in old {
            while let Some(s) = new.next_if(|s| s.id < m.id) {
                landed.push((s.id, merged.len() as u32));
                merged.push(s);
            }
            moved.push(merged.len() as u32);
            merged.push(m);
        }
        for s in new {
            landed.push((s.id, merged.len() as u32));
            merged.push(s);
        }
        self.members = merged;
        self.keys.clear();
        self.keys.extend(self.members.iter().map(|m| m.id.prefix_u64()));
        for i in &mut self.probe {
            *i = moved[*i as usize];
        }
        for id in std::mem::take(&mut self.staged_order) {
            let Ok(k) = landed.binary_search_by(|(x, _)| x.cmp(&id)) else { continue };
            if id == self.me {
                continue;
            }
            let n = self.probe.len();
            self.probe.push(landed[k].1);
            if n > 0 {
                let offset = rng.index(n);
                self.probe.swap(offset, n);
            }
        }
    }

    /// The next member to probe: the probe order from the current index, skipping Dead and
    /// Left entries. Passing the end reaps (entries Dead or Left for longer than `dead_time`,
    /// appended to `reaped`), reshuffles and restarts. `None` if no member can be probed.
    pub(crate) fn next_target(
        &mut self,
        now: Instant,
        dead_time: Duration,
        rng: &mut Rng,
        reaped: &mut Vec<NodeId>,
    ) -> Option<NodeId> {
        let mut wrapped = false;
        loop {
            if self.probe_index >= self.probe.len() {
                if wrapped {
                    return None;
                }
                wrapped = true;
                self.reap(now, dead_time, reaped);
                self.rebuild_probe_order(rng);
            }
            let Some(&i) = self.probe.get(self.probe_index) else { continue };
            self.probe_index += 1;
            let m = &self.members[i as usize];
            if m.state.is_live() {
                return Some(m.id);
            }
        }
    }

    fn reap(&mut self, now: Instant, dead_time: Duration, reaped: &mut Vec<NodeId>) {
        let me = self.me;
        let mut freed = 0usize;
        self.members.retain(|m| {
            let gone = m.id != me
                && matches!(m.state, State::Dead | State::Left)
                && now.saturating_since(m.changed_at) > dead_time;
            if gone {
                reaped.push(m.id);
                freed = freed.saturating_add(entry_cost(&m.profile));
            }
            !gone
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.keys.clear();
        self.keys.extend(self.members.iter().map(|m| m.id.prefix_u64()));
    }

    /// Sorted order minus self, shuffled (Fisher–Yates with the machine RNG, §6.4).
    fn rebuild_probe_order(&mut self, rng: &mut Rng) {
        self.probe.clear();
        self.probe.extend((0..self.members.len() as u32).filter(|&i| self.members[i as usize].id != self.me));
        rng.shuffle(&mut self.probe);
        self.probe_index = 0;
    }

    /// The probe order, as member ids (tests).
    #[cfg(test)]
    pub(crate) fn probe_order(&self) -> Vec<NodeId> {
        self.probe.iter().map(|&i| self.members[i as usize].id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::lower_bound;

    #[test]
    fn lower_bound_agrees_with_partition_point() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in [0usize, 1, 5, 16, 17, 100, 1000] {
            for skew in [0u32, 40, 60] {
                let mut keys: Vec<u64> = (0..n).map(|_| next() >> skew).collect();
                keys.sort_unstable();
                if n > 3 {
                    keys[2] = keys[1]; // duplicates
                }
                let probes: Vec<u64> = keys
                    .iter()
                    .flat_map(|&k| [k, k.wrapping_add(1), k.wrapping_sub(1)])
                    .chain([0, u64::MAX, next()])
                    .collect();
                for key in probes {
                    assert_eq!(
                        lower_bound(&keys, key),
                        keys.partition_point(|&k| k < key),
                        "n {n} skew {skew} key {key}"
                    );
                }
            }
        }
    }
}
