//! The event queue: a priority queue ordered by (time, seq), with a FIFO fast path for events
//! due at the current instant (PROTOCOLS.md §9.2).
//!
//! `seq` is a global counter bumped at every enqueue, so equal times are served in enqueue
//! order and nothing else breaks ties. Events enqueued while the clock reads `now` for time
//! `now` (zero-latency messages, deadlines already past) all have higher `seq` than every
//! event for `now` enqueued before the clock got there, so they can wait in a plain FIFO
//! behind the heap's `now` events: the order is exactly (time, seq), and round-based runs at
//! zero latency touch the heap only for timers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use hearsay_protocols::Instant;

/// A (time, seq)-ordered queue of `E`.
#[derive(Debug)]
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    now_fifo: VecDeque<E>,
    now: u64,
    seq: u64,
}

impl<E> EventQueue<E> {
    pub(crate) fn new() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            now_fifo: VecDeque::new(),
            now: 0,
            seq: 0,
        }
    }

    /// The queue's clock: the time of the last event popped (or set by `advance_to`).
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.now)
    }

    /// Enqueue `event` at `at`; a time in the past is served at the current instant.
    pub(crate) fn push(&mut self, at: Instant, event: E) {
        let t = at.as_micros().max(self.now);
        self.seq += 1;
        if t == self.now {
            self.now_fifo.push_back(event);
            return;
        }
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
        self.heap.push(Reverse((t, self.seq, slot)));
    }

    /// The time of the next event, if any. The heap never holds a time before `now`.
    pub(crate) fn peek_time(&self) -> Option<Instant> {
        if !self.now_fifo.is_empty() {
            return Some(Instant::from_micros(self.now));
        }
        self.heap
            .peek()
            .map(|Reverse((t, _, _))| Instant::from_micros(*t))
    }

    /// Pop the next event in (time, seq) order, advancing the clock to its time.
    pub(crate) fn pop(&mut self) -> Option<(Instant, E)> {
        let heap_now = matches!(self.heap.peek(), Some(Reverse((t, _, _))) if *t == self.now);
        if !heap_now {
            if let Some(e) = self.now_fifo.pop_front() {
                return Some((Instant::from_micros(self.now), e));
            }
        }
        let Reverse((t, _, slot)) = self.heap.pop()?;
        self.now = t;
        self.free.push(slot);
        let event = self.slab[slot as usize]
            .take()
            .expect("heap slot holds an event");
        Some((Instant::from_micros(t), event))
    }

    /// Move the clock forward to `t` when nothing is due before it.
    pub(crate) fn advance_to(&mut self, t: Instant) {
        debug_assert!(self.now_fifo.is_empty());
        debug_assert!(self.peek_time().is_none_or(|next| next >= t));
        self.now = self.now.max(t.as_micros());
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len() + self.now_fifo.len()
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
        assert_eq!(q.pop(), Some((t(3), "a")));
        // Enqueued at now = 3 for time 5: after b1 and b2, which were enqueued earlier.
        q.push(t(5), "b3");
        assert_eq!(q.pop(), Some((t(5), "b1")));
        // Now the clock reads 5: a zero-delay event goes behind everything already due at 5.
        q.push(t(5), "now1");
        q.push(t(1), "past"); // a past deadline is served now, in enqueue order
        assert_eq!(q.pop(), Some((t(5), "b2")));
        assert_eq!(q.pop(), Some((t(5), "b3")));
        assert_eq!(q.pop(), Some((t(5), "now1")));
        assert_eq!(q.pop(), Some((t(5), "past")));
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
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let mut seq = 0u64;
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..5_000 {
            if next() % 3 != 0 {
                let at = q.now().as_micros() + next() % 4; // many ties at "now"
                seq += 1;
                q.push(Instant::from_micros(at), seq);
                reference.push((at, seq));
            } else if let Some((t, s)) = q.pop() {
                popped.push((t.as_micros(), s));
                reference.sort_unstable();
                expected.push(reference.remove(0));
            }
        }
        assert_eq!(popped, expected);
    }
}
