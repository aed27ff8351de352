//! The broadcast queue: membership updates waiting to be piggybacked (PROTOCOLS.md §6.8,
//! memberlist `queue.go` `TransmitLimitedQueue`).
//!
//! At most one update per member is queued: a new one about the same member replaces it
//! (memberlist `Invalidates`). Datagrams take updates in the order fewest transmits first,
//! then larger first, then newest first (memberlist `limitedBroadcast.Less`), skipping those
//! that do not fit; an update is dropped once it has been sent `limit` times.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use hearsay_protocols::NodeId;

use super::message::Update;

/// The smallest encoded update (a `Suspect` or `Dead` with incarnation below 128; a signed
/// `Alive` is at least 103 bytes): once less room than this is left, a datagram is full.
pub(crate) const MIN_UPDATE_LEN: usize = 66;

/// (transmits, larger first, newest first).
type Key = (u32, Reverse<usize>, Reverse<u64>);

#[derive(Debug)]
struct Item {
    update: Update,
    size: usize,
    transmits: u32,
}

#[derive(Debug, Default)]
pub(crate) struct BroadcastQueue {
    order: BTreeSet<Key>,
    items: BTreeMap<u64, Item>,
    by_node: BTreeMap<NodeId, u64>,
    /// How many queued updates have each encoded size: a datagram with less room than the
    /// smallest stops looking at once (at N = 2,000 the scan of a long queue for an update
    /// that fits was 38% of the simulator's CPU).
    sizes: BTreeMap<usize, u32>,
    next_id: u64,
}

impl BroadcastQueue {
    /// Queue `update` with no transmits yet, replacing any queued update about its member.
    pub(crate) fn push(&mut self, update: Update) {
        let node = update.node();
        if let Some(old) = self.by_node.remove(&node) {
            if let Some(item) = self.items.remove(&old) {
                self.order.remove(&(item.transmits, Reverse(item.size), Reverse(old)));
                self.forget_size(item.size);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let size = update.encoded_len();
        *self.sizes.entry(size).or_default() += 1;
        self.order.insert((0, Reverse(size), Reverse(id)));
        self.items.insert(id, Item { update, size, transmits: 0 });
        self.by_node.insert(node, id);
    }

    /// Append to `out` at most `max_items` updates that fit in `room` bytes, in queue order,
    /// counting one transmit for each and dropping those that reach `limit`. Returns the bytes
    /// used.
    pub(crate) fn fill(&mut self, room: usize, limit: u32, max_items: usize, out: &mut Vec<Update>) -> usize {
        let mut left = room;
        let mut taken: Vec<Key> = Vec::new();
        // No queued update is smaller than this, so with less room left none fits.
        let smallest = self.sizes.keys().next().copied().unwrap_or(usize::MAX).max(MIN_UPDATE_LEN);
        for key in &self.order {
            if left < smallest || taken.len() >= max_items {
                break;
            }
            let size = key.1.0;
            if size <= left {
                left -= size;
                taken.push(*key);
            }
        }
        for key in taken {
            self.order.remove(&key);
            let id = key.2.0;
            let Some(item) = self.items.get_mut(&id) else { continue };
            out.push(item.update.clone());
            item.transmits += 1;
            if item.transmits >= limit {
                let node = item.update.node();
                let size = item.size;
                self.items.remove(&id);
                self.by_node.remove(&node);
                self.forget_size(size);
            } else {
                self.order.insert((item.transmits, key.1, key.2));
            }
        }
        room - left
    }

    fn forget_size(&mut self, size: usize) {
        if let Some(n) = self.sizes.get_mut(&size) {
            *n -= 1;
            if *n == 0 {
                self.sizes.remove(&size);
            }
        }
    }

    /// Bytes the queue accounts for: each update's encoded size and 96 bytes of bookkeeping.
    /// At most one update per member is queued, so the member table's caps bound it.
    pub(crate) fn bytes(&self) -> usize {
        self.items.values().map(|i| i.size.saturating_add(96)).sum()
    }

    /// Number of queued updates.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// An update about `node` is queued.
    pub(crate) fn holds(&self, node: &NodeId) -> bool {
        self.by_node.contains_key(node)
    }

    /// The queued update about `node`, with its transmit count.
    #[cfg(test)]
    pub(crate) fn get(&self, node: &NodeId) -> Option<(&Update, u32)> {
        let id = self.by_node.get(node)?;
        self.items.get(id).map(|i| (&i.update, i.transmits))
    }
}
