//! The event queue: events ordered by (time, seq) (PROTOCOLS.md §9.2), as a radix heap.
//!
//! `seq` is a global counter bumped at every enqueue, so equal times are served in enqueue
//! order and nothing else breaks ties. A simulation's clock never goes back, which is what a
//! radix heap needs: an event for time `t` goes to bucket `⌊log2(t XOR last)⌋ + 1`, where
//! `last` is the time of the last redistribution, and bucket 0 holds the events due at `last`
//! itself, as a FIFO. Popping takes from bucket 0; when it is empty, the lowest non-empty
//! bucket is emptied into lower ones around its minimum time. Pushes are O(1), pops amortized
//! O(log of the time span), and, because every event with a given time always sits in one
//! bucket in push order and buckets are emptied in order, equal times come out in enqueue
//! order: exactly (time, seq). Round-based runs at zero latency live almost entirely in the
//! FIFO.

use std::collections::VecDeque;

use hearsay_protocols::Instant;

/// What a pop yields: a node timer (stored inline, 8 bytes) or an event from the slab.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<E> {
    /// Node `node`'s timer of generation `generation`.
    Timer {
        /// The node.
        node: u32,
        /// The generation it was armed with.
        generation: u32,
    },
    /// Any other event.
    Event(E),
}

const TIMER: u64 = 1 << 63;

/// A (time, seq)-ordered queue of timers and `E`s.
#[derive(Debug)]
pub(crate) struct EventQueue<E> {
    /// Bucket k (1..=64) at index k − 1: (time, payload) in push order. A payload is a timer
    /// (`TIMER | node << 32 | generation`) or a slab slot.
    buckets: Vec<Vec<(u64, u64)>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    /// Bucket 0: payloads due at `last`, in push order.
    due: VecDeque<u64>,
    /// The radix base: time of the last redistribution.
    last: u64,
    /// The clock (≥ `last`): time of the last pop, or set by `advance_to`.
    now: u64,
    len: usize,
}

impl<E> EventQueue<E> {
    pub(crate) fn new() -> Self {
        EventQueue {
            buckets: (0..64).map(|_| Vec::new()).collect(),
            slab: Vec::new(),
            free: Vec::new(),
            due: VecDeque::new(),
            last: 0,
            now: 0,
            len: 0,
        }
    }

    /// The queue's clock: the time of the last event popped (or set by `advance_to`).
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.now)
    }

    fn bucket(&self, t: u64) -> usize {
        // t > last here; the index of the highest differing bit, 0..=63.
        63 - (t ^ self.last).leading_zeros() as usize
    }

    fn enqueue(&mut self, at: Instant, payload: u64) {
        let t = at.as_micros().max(self.now);
        self.len += 1;
        if t == self.last {
            self.due.push_back(payload);
        } else {
            let b = self.bucket(t);
            self.buckets[b].push((t, payload));
        }
    }

    /// Enqueue `event` at `at`; a time in the past is served at the current instant.
    pub(crate) fn push(&mut self, at: Instant, event: E) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(event);
                i
            }
            None => {
                self.slab.push(Some(event));
                (self.slab.len() - 1) as u32
            }
        };
        self.enqueue(at, u64::from(slot));
    }

    /// Enqueue node `node`'s timer of generation `generation` at `at`.
    pub(crate) fn push_timer(&mut self, at: Instant, node: u32, generation: u32) {
        debug_assert!(node < 1 << 31);
        self.enqueue(at, TIMER | u64::from(node) << 32 | u64::from(generation));
    }

    /// Refill bucket 0 from the lowest non-empty bucket, if bucket 0 is empty.
    fn settle(&mut self) {
        if !self.due.is_empty() {
            return;
        }
        let Some(b) = self.buckets.iter().position(|v| !v.is_empty()) else { return };
        let mut items = std::mem::take(&mut self.buckets[b]);
        let min = items.iter().map(|(t, _)| *t).min().expect("bucket is non-empty");
        self.last = min;
        for &(t, payload) in &items {
            if t == min {
                self.due.push_back(payload);
            } else {
                let nb = self.bucket(t);
                self.buckets[nb].push((t, payload));
            }
        }
        // Give the emptied bucket its allocation back for reuse.
        items.clear();
        if self.buckets[b].is_empty() {
            self.buckets[b] = items;
        }
    }

    /// The time of the next item, if any.
    pub(crate) fn peek_time(&mut self) -> Option<Instant> {
        self.settle();
        if self.due.is_empty() { None } else { Some(Instant::from_micros(self.last)) }
    }

    /// Pop the next item in (time, seq) order, advancing the clock to its time.
    pub(crate) fn pop(&mut self) -> Option<(Instant, Item<E>)> {
        self.settle();
        let payload = self.due.pop_front()?;
        self.len -= 1;
        self.now = self.last;
        let item = if payload & TIMER != 0 {
            Item::Timer { node: ((payload & !TIMER) >> 32) as u32, generation: payload as u32 }
        } else {
            let slot = payload as u32;
            self.free.push(slot);
            Item::Event(self.slab[slot as usize].take().expect("slot holds an event"))
        };
        Some((Instant::from_micros(self.now), item))
    }

    /// Move the clock forward to `t` when nothing is due before it.
    pub(crate) fn advance_to(&mut self, t: Instant) {
        debug_assert!(self.peek_time().is_none_or(|next| next >= t));
        self.now = self.now.max(t.as_micros());
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_time_then_enqueue_order() {
        let mut q = EventQueue::new();
        let t = Instant::from_micros;
        q.push(t(5), "b1");
        q.push(t(3), "a");
        q.push(t(5), "b2");
        assert_eq!(q.pop(), Some((t(3), Item::Event("a"))));
        // Enqueued at now = 3 for time 5: after b1 and b2, which were enqueued earlier.
        q.push(t(5), "b3");
        assert_eq!(q.pop(), Some((t(5), Item::Event("b1"))));
        // Now the clock reads 5: a zero-delay event goes behind everything already due at 5.
        q.push(t(5), "now1");
        q.push(t(1), "past"); // a past deadline is served now, in enqueue order
        assert_eq!(q.pop(), Some((t(5), Item::Event("b2"))));
        assert_eq!(q.pop(), Some((t(5), Item::Event("b3"))));
        assert_eq!(q.pop(), Some((t(5), Item::Event("now1"))));
        assert_eq!(q.pop(), Some((t(5), Item::Event("past"))));
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn matches_a_reference_sort_on_random_schedules() {
        // Reference: a list sorted by (time, seq) where seq is the global enqueue counter.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut q = EventQueue::new();
        let mut reference = std::collections::BTreeSet::new();
        let mut seq = 0u64;
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..20_000 {
            if next() % 3 != 0 {
                let span = if next() % 5 == 0 { 1 << (next() % 40) } else { 4 }; // many ties, some far
                let at = q.now().as_micros() + next() % span;
                seq += 1;
                if seq % 2 == 0 {
                    q.push(Instant::from_micros(at), seq);
                } else {
                    q.push_timer(Instant::from_micros(at), (seq >> 32) as u32, seq as u32);
                }
                reference.insert((at, seq));
            } else if let Some((t, item)) = q.pop() {
                let s = match item {
                    Item::Event(s) => s,
                    Item::Timer { node, generation } => u64::from(node) << 32 | u64::from(generation),
                };
                popped.push((t.as_micros(), s));
                expected.push(reference.pop_first().expect("same length"));
            }
        }
        assert_eq!(popped, expected);
    }
}
