//! A run's fingerprint: a SHA-256 over everything observable, in order, so two runs can be
//! compared bit for bit by comparing 32 bytes.

use std::fmt::Debug;
use std::io::Write;

use hearsay_protocols::{Instant, Machine, Transmit};
use sha2::{Digest, Sha256};

use crate::kernel::{Fate, Fault, Observer};

/// Hashes every send (with its fate), delivery, event and fault with its time and nodes.
#[derive(Default)]
pub struct TraceHash {
    hasher: Sha256,
    buf: Vec<u8>,
    /// Number of records hashed.
    pub records: u64,
}

impl TraceHash {
    /// The hash of everything seen so far.
    pub fn finish(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    fn record(&mut self, args: std::fmt::Arguments<'_>) {
        self.buf.clear();
        let _ = self.buf.write_fmt(args);
        self.buf.push(b'\n');
        self.hasher.update(&self.buf);
        self.records += 1;
    }
}

impl<M> Observer<M> for TraceHash
where
    M: Machine,
    M::Message: Debug,
    M::Event: Debug,
{
    fn on_event(&mut self, now: Instant, node: usize, event: M::Event) {
        self.record(format_args!("{} E {node} {event:?}", now.as_micros()));
    }
    fn on_send(
        &mut self,
        now: Instant,
        from: usize,
        to: Option<usize>,
        t: &Transmit<M::Message>,
        fate: Fate,
    ) {
        self.record(format_args!(
            "{} S {from} {to:?} {:?} {fate:?} {:?}",
            now.as_micros(),
            t.reliability,
            t.msg
        ));
    }
    fn on_deliver(&mut self, now: Instant, from: usize, to: usize, msg: &M::Message) {
        self.record(format_args!("{} D {from} {to} {msg:?}", now.as_micros()));
    }
    fn on_fault(&mut self, now: Instant, fault: &Fault) {
        self.record(format_args!("{} F {fault:?}", now.as_micros()));
    }
}
