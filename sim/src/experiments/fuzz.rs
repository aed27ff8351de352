//! Experiment `fuzz`: hostile and broken frames at volume against full Engines (issue 12,
//! "Fuzzing at volume").
//!
//! A small cluster of Engines (the daemon's composition, driven through encoded frames as in
//! the `cluster` experiment) runs on the simulator's LAN: `honest` members that subscribe to a
//! tree topic and a `gossip` topic and publish now and then, and `fakes` members that are
//! ordinary Engines too but in whose name the fuzzer sends `frames` crafted frames to the
//! honest ones, one simulated millisecond apart:
//!
//! - **valid messages of every kind** of every protocol (SWIM, Chord, Scribe, pbcast,
//!   anti-entropy, both rumor channels, aggregation), their fields drawn to hurt: ids of
//!   honest, fake and made-up members, extreme integers (0, 1, 2^62, 2^64 − 1, …), long lists
//!   (now and then thousands of records), large payloads, signed and forged `Alive`s;
//! - **mutated valid frames**: flipped bytes, runs of `0xff` (varints at their maximum),
//!   truncations, appended junk, duplicated slices (inflated counts);
//! - **random bytes**, with and without a valid header.
//!
//! Each input (a frame, or the simulated time between two frames) runs under
//! `catch_unwind`: a panic is counted, its first occurrences recorded with the frame, and the
//! run goes on. Every 1,000 frames the honest Engines' state is measured. At the end the
//! fuzzer stops, the cluster settles for ten simulated minutes (the fakes mint up to 64
//! identities with valid self-signed `Alive`s, which only failure detection removes), every
//! honest member subscribes to a new topic and publishes one message on it, and
//! `delivered_ok` says whether every honest member delivered every other's message.
//!
//! Debugging aids: `HEARSAY_FUZZ_ONLY=k` sends only frames of kind `k` (an index into
//! [`PROTOCOLS`]), `HEARSAY_FUZZ_DEBUG` prints the honest members' views of each other and of
//! the final topic's tree at the end.
//!
//! # What `max_state_bytes` measures
//!
//! The largest sum, over the honest Engines and at any measurement, of the bytes that the
//! machines with a state account for themselves ([`Engine::state_bytes`]): SWIM's member
//! table, broadcast queue and relays, pbcast's held messages and streams, anti-entropy's
//! store, staged entries and awaited deltas, both rumor mongers' hot payloads, remembered
//! rumors and awaited feedback, aggregation's queries and transfer bookkeeping, Scribe's tree
//! entries (children, ancestors, seen ids). It is an accounting of what peers can make a node
//! hold, each part capped, not the process's resident size; the Chord ring (fixed-size
//! tables) is not in it.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use hearsay::engine::{
    ChannelRumor, Engine, EngineConfig, EngineEvent, RumorChannel, SubscribeFrom, origin_id,
};
use hearsay_overlay::chord::{ChordMessage, RingId, RingNode};
use hearsay_overlay::scribe::ScribeMessage;
use hearsay_overlay::swim::{
    Addr, MemberRecord, Meta, Profile, SharedProfile, State, SwimConfig, SwimMessage, Update, alive_claim,
};
use hearsay_protocols::aggregate::{AggMessage, Algorithm, Func, Query, QueryId};
use hearsay_protocols::anti_entropy::{AeMessage, AeMode, Digest, Entry, StreamSummary};
use hearsay_protocols::auth::{Authenticator, Signature, Unchecked};
use hearsay_protocols::pbcast::{Data, MsgId, PbMessage, SEQ_MAX};
use hearsay_protocols::rumor::{Rumor, RumorId, RumorMessage};
use hearsay_protocols::wire::{self, DEFAULT_FRAME_LIMIT, WireMessage};
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Rng, Seed, StreamId, TopicId};
use serde::Serialize;

use crate::kernel::{Latency, NetConfig, Observer, Sim, node_ids};

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Crafted frames to send.
    pub frames: u64,
    /// Seed: the same seed and arguments give the same output.
    pub seed: u64,
    /// Honest members.
    pub honest: usize,
    /// Members in whose name the frames are sent.
    pub fakes: usize,
}

impl Params {
    /// `frames` frames with seed `seed`, 4 honest members and 3 fake ones.
    pub fn new(frames: u64, seed: u64) -> Self {
        Params { frames, seed, honest: 4, fakes: 3 }
    }
}

/// One panic the fuzzer caught.
#[derive(Clone, Debug, Serialize)]
pub struct PanicCase {
    /// The frame's index (`None`: while the simulator ran between frames).
    pub frame: Option<u64>,
    /// The protocol and message the frame was made from.
    pub kind: String,
    /// Where it panicked and the message.
    pub panic: String,
    /// The frame, hex (at most 256 bytes of it).
    pub hex: String,
}

/// The JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Frames sent.
    pub frames: u64,
    /// Panics caught (frames and simulator steps).
    pub panics: u64,
    /// See the module docs.
    pub max_state_bytes: u64,
    /// Every honest member delivered every other honest member's final message.
    pub delivered_ok: bool,
    /// Honest members.
    pub honest: usize,
    /// Fake members.
    pub fakes: usize,
    /// Seed.
    pub seed: u64,
    /// Frames by protocol, in [`PROTOCOLS`] order, then random bytes.
    pub frames_by_kind: Vec<u64>,
    /// Frames that were mutated.
    pub mutated: u64,
    /// Frames the honest Engines refused at decoding.
    pub decode_errors: u64,
    /// Final messages delivered, of the honest × (honest − 1) expected.
    pub final_delivered: u64,
    /// The first panics, with their frames.
    pub panic_cases: Vec<PanicCase>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

/// The frame kinds, as counted in [`Report::frames_by_kind`].
pub const PROTOCOLS: [&str; 8] =
    ["swim", "chord", "scribe", "pbcast", "anti_entropy", "rumor", "aggregation", "random"];

/// Panics kept in the report.
const CASES_MAX: usize = 20;

/// Identities the fake members mint (a rogue holding the cluster secret can make keys and
/// sign their `Alive`s): they enter the honest tables and are only removed by failure
/// detection, so their number sets how long the cluster needs to settle.
const MADE_UP: u64 = 64;

/// Simulated time the cluster gets after the last frame before the final messages: long
/// enough for every honest member to probe each minted identity dead and reap it (one probe
/// a second over up to 71 members, a suspicion of up to a minute, 30 s before reaping, and a
/// second traversal), and for refutations and push-pull to heal the honest members' views.
const SETTLE: Duration = Duration::from_secs(600);

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// True while this thread runs the fuzzer: its panics are recorded, not printed.
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Install (once per process) a panic hook that records the panics of fuzzing threads and
/// hands every other panic to the hook that was there before.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !FUZZING.with(|f| f.get()) {
                previous(info);
                return;
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{at}: {msg}")));
        }));
    });
}

/// Remembers what the panic hook saw (the location and message), for the report.
fn take_panic(payload: Box<dyn std::any::Any + Send>) -> String {
    let recorded = LAST_PANIC.with(|p| p.borrow_mut().take());
    recorded.unwrap_or_else(|| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(256).map(|b| format!("{b:02x}")).collect()
}

/// Records deliveries of the final messages.
#[derive(Default)]
struct Deliveries {
    topic: Option<TopicId>,
    got: Vec<(usize, MsgId)>,
}

impl Observer<Engine> for Deliveries {
    fn on_event(&mut self, _now: Instant, node: usize, event: EngineEvent) {
        if let EngineEvent::Delivered(d) = event {
            if Some(d.id.topic) == self.topic {
                self.got.push((node, d.id));
            }
        }
    }
}

/// Run the fuzzer.
pub fn run(p: &Params) -> Report {
    let started = std::time::Instant::now();
    let n = p.honest + p.fakes;
    let ids = node_ids(p.seed, 0, n);
    let (honest, fakes) = (ids[..p.honest].to_vec(), ids[p.honest..].to_vec());
    let config = Arc::new(EngineConfig::with_swim(SwimConfig::lan()));
    let members = ids.clone();
    let net = NetConfig {
        latency: Latency::LAN,
        jitter: 0.1,
        loss: 0.0,
        stream_loss: false,
        stream_retransmit: false,
    };
    let mut sim: Sim<Engine> = Sim::new(p.seed, 0, n, net, move |init| {
        let auth = Arc::new(Unchecked(init.id));
        let epoch = u64::from(init.restarts) + 1;
        Engine::converged(auth, "", Addr::default(), epoch, config.clone(), &init.seed, init.now, &members)
    });
    let mut obs = Deliveries::default();
    let mut report = Report {
        frames: p.frames,
        panics: 0,
        max_state_bytes: 0,
        delivered_ok: false,
        honest: p.honest,
        fakes: p.fakes,
        seed: p.seed,
        frames_by_kind: vec![0; PROTOCOLS.len()],
        mutated: 0,
        decode_errors: 0,
        final_delivered: 0,
        panic_cases: Vec::new(),
        elapsed_s: 0.0,
    };
    install_panic_hook();
    FUZZING.with(|f| f.set(true));

    // The honest members' topics: a tree topic and a gossip topic, with traffic.
    let topics = ["fuzz/tree", "gossip/fuzz"];
    for i in 0..p.honest {
        for t in topics {
            let _ = sim.call(i, &mut obs, |e, now| e.subscribe(now, t, SubscribeFrom::New));
        }
    }
    let mut fuzzer = Gen::new(p.seed, &honest, &fakes, &topics);
    let step = Duration::from_millis(1);
    guarded(&mut report, None, "run", &[], || {
        sim.run_until(Instant::ZERO + Duration::from_secs(2), &mut obs)
    });
    for f in 0..p.frames {
        if f % 500 == 0 {
            // Honest traffic now and then, so there is real state to disturb.
            let i = (f / 500) as usize % p.honest;
            let t = topics[(f / 500) as usize % topics.len()];
            let payload = Bytes::from(format!("honest {f}"));
            guarded(&mut report, None, "publish", &[], || {
                let _ = sim.call(i, &mut obs, |e, now| e.publish(now, t, payload));
            });
        }
        let (kind, frame, mutated) = fuzzer.frame();
        report.frames_by_kind[kind] += 1;
        report.mutated += u64::from(mutated);
        let from = fakes[fuzzer.rng.index(fakes.len())];
        let to = fuzzer.rng.index(p.honest);
        let label = format!("{}{}", PROTOCOLS[kind], if mutated { " (mutated)" } else { "" });
        let bytes = Bytes::from(frame);
        let sent = bytes.clone();
        guarded(&mut report, Some(f), &label, &bytes, || {
            sim.call(to, &mut obs, |e, now| e.handle_message(now, from, sent));
        });
        let until = sim.now() + step;
        guarded(&mut report, None, "run", &[], || sim.run_until(until, &mut obs));
        if f % 1_000 == 999 || f + 1 == p.frames {
            report.max_state_bytes = report.max_state_bytes.max(state_bytes(&sim, p.honest));
        }
    }

    // Settle, then every honest member subscribes to a new topic and publishes once.
    let settle = sim.now() + SETTLE;
    guarded(&mut report, None, "run", &[], || sim.run_until(settle, &mut obs));
    let last = format!("final-{}", p.seed);
    for i in 0..p.honest {
        let _ = sim.call(i, &mut obs, |e, now| e.subscribe(now, &last, SubscribeFrom::New));
    }
    let subscribed = sim.now() + Duration::from_secs(10);
    guarded(&mut report, None, "run", &[], || sim.run_until(subscribed, &mut obs));
    obs.topic = Some(TopicId::of(&last));
    for i in 0..p.honest {
        let payload = Bytes::from(format!("final from {i}"));
        guarded(&mut report, None, "publish", &[], || {
            let _ = sim.call(i, &mut obs, |e, now| e.publish(now, &last, payload));
        });
    }
    let drained = sim.now() + Duration::from_secs(30);
    guarded(&mut report, None, "run", &[], || sim.run_until(drained, &mut obs));
    report.max_state_bytes = report.max_state_bytes.max(state_bytes(&sim, p.honest));
    let origins: Vec<NodeId> = honest.iter().map(|h| origin_id(h, 1)).collect();
    let mut ok = 0u64;
    for i in 0..p.honest {
        for (j, origin) in origins.iter().enumerate() {
            if i != j && obs.got.iter().any(|(node, id)| *node == i && id.origin == *origin && id.seq == 1) {
                ok += 1;
            }
        }
    }
    if std::env::var_os("HEARSAY_FUZZ_DEBUG").is_some() {
        for i in 0..p.honest {
            let e = sim.machine(i);
            let view: Vec<String> = honest
                .iter()
                .map(|h| {
                    e.swim().member(h).map_or("-".into(), |m| format!("{:?}@{}", m.state, m.incarnation))
                })
                .collect();
            eprintln!(
                "honest {i}: members {} peers {} views {view:?} swim {:?}",
                e.swim().members().len(),
                e.swim().peers().len(),
                e.swim().stats()
            );
            eprintln!("  tree {:?}", e.scribe().tree(TopicId::of(&last)));
        }
        eprintln!("delivered {:?}", obs.got);
    }
    let expected = (p.honest * p.honest.saturating_sub(1)) as u64;
    report.final_delivered = ok;
    report.delivered_ok = ok == expected;
    report.decode_errors = (0..p.honest).map(|i| sim.machine(i).stats().decode_errors.total()).sum();
    FUZZING.with(|f| f.set(false));
    report.elapsed_s = crate::report::round(started.elapsed().as_secs_f64(), 1);
    report
}

/// Run `f`, counting (and recording) a panic.
fn guarded(report: &mut Report, frame: Option<u64>, kind: &str, bytes: &[u8], f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        report.panics += 1;
        if report.panic_cases.len() < CASES_MAX {
            report.panic_cases.push(PanicCase {
                frame,
                kind: kind.to_string(),
                panic: take_panic(payload),
                hex: hex(bytes),
            });
        }
    }
}

/// The module docs' `max_state_bytes` at this instant.
fn state_bytes(sim: &Sim<Engine>, honest: usize) -> u64 {
    (0..honest).map(|i| sim.machine(i).state_bytes()).fold(0usize, usize::saturating_add) as u64
}

/// The frame generator: valid messages with hostile fields, mutations, random bytes.
struct Gen {
    rng: Rng,
    honest: Vec<NodeId>,
    fakes: Vec<NodeId>,
    origins: Vec<NodeId>,
    topics: Vec<TopicId>,
    /// `HEARSAY_FUZZ_ONLY=k`: only frames of kind `k` (an index into [`PROTOCOLS`]), to narrow
    /// a finding down.
    only: Option<usize>,
}

impl Gen {
    fn new(seed: u64, honest: &[NodeId], fakes: &[NodeId], topics: &[&str]) -> Self {
        let origins = honest.iter().chain(fakes).map(|h| origin_id(h, 1)).collect();
        Gen {
            rng: Rng::from_seed(Seed::derive(seed, "fuzz", 0, 0)),
            honest: honest.to_vec(),
            fakes: fakes.to_vec(),
            origins,
            topics: topics.iter().map(|t| TopicId::of(t)).collect(),
            only: std::env::var("HEARSAY_FUZZ_ONLY").ok().and_then(|v| v.parse().ok()).filter(|k| *k < 7),
        }
    }

    /// One frame: (kind index, bytes, mutated).
    fn frame(&mut self) -> (usize, Vec<u8>, bool) {
        if self.rng.chance(0.03) {
            let len = self.small(600);
            let mut b: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
            if self.rng.chance(0.7) && b.len() >= 2 {
                b[0] = 1;
                b[1] = 1 + self.rng.below(7) as u8;
            }
            return (7, b, false);
        }
        let mut kind = self.rng.index(7);
        if let Some(only) = self.only {
            kind = only;
        }
        let mut frame = match kind {
            0 => Self::encode(&self.swim()),
            1 => Self::encode(&self.chord()),
            2 => Self::encode(&self.scribe()),
            3 => Self::encode(&self.pbcast()),
            4 => Self::encode(&self.ae()),
            5 => Self::encode(&self.rumor()),
            _ => Self::encode(&self.agg()),
        };
        let mutated = self.rng.chance(0.3);
        if mutated {
            self.mutate(&mut frame);
        }
        (kind, frame, mutated)
    }

    fn encode<M: WireMessage>(msg: &M) -> Vec<u8> {
        wire::encode(msg, DEFAULT_FRAME_LIMIT).unwrap_or_else(|_| vec![1, M::KIND.to_wire()])
    }

    fn mutate(&mut self, frame: &mut Vec<u8>) {
        for _ in 0..1 + self.rng.below(3) {
            if frame.len() < 3 {
                frame.push(self.rng.next_u64() as u8);
                continue;
            }
            // Leave the header alone most of the time: the body is what the machines see.
            let at = 2 + self.rng.index(frame.len() - 2);
            match self.rng.below(6) {
                0 => frame[at] ^= 1 << self.rng.below(8),
                1 => frame[at] = self.rng.next_u64() as u8,
                2 => {
                    let run = 1 + self.rng.index(10);
                    for b in frame.iter_mut().skip(at).take(run) {
                        *b = 0xff;
                    }
                }
                3 => frame.truncate(at),
                4 => frame.extend((0..1 + self.rng.index(16)).map(|_| self.rng.next_u64() as u8)),
                _ => {
                    let len = (1 + self.rng.index(32)).min(frame.len() - at);
                    let slice = frame[at..at + len].to_vec();
                    frame.splice(at..at, slice);
                }
            }
        }
    }

    // ---- values ----

    /// A length: mostly small, sometimes up to `max`.
    fn small(&mut self, max: usize) -> usize {
        if self.rng.chance(0.9) { self.rng.index(8.min(max + 1)) } else { self.rng.index(max + 1) }
    }

    fn u64(&mut self) -> u64 {
        match self.rng.below(10) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u64::MAX - 1,
            4 => 1 << 62,
            5 => 1 << 63,
            6 => self.rng.next_u64(),
            _ => self.rng.below(100),
        }
    }

    fn u32(&mut self) -> u32 {
        match self.rng.below(6) {
            0 => 0,
            1 => u32::MAX,
            2 => self.rng.next_u64() as u32,
            _ => self.rng.below(300) as u32,
        }
    }

    fn u8(&mut self) -> u8 {
        match self.rng.below(4) {
            0 => 0,
            1 => u8::MAX,
            _ => self.rng.below(80) as u8,
        }
    }

    fn f64(&mut self) -> f64 {
        match self.rng.below(8) {
            0 => 0.0,
            1 => -1.0,
            2 => f64::MAX,
            3 => f64::MIN_POSITIVE,
            4 => 1e300,
            _ => self.rng.unit() * 100.0,
        }
    }

    /// An honest, fake or made-up member.
    fn node(&mut self) -> NodeId {
        match self.rng.below(3) {
            0 => self.honest[self.rng.index(self.honest.len())],
            1 => self.fakes[self.rng.index(self.fakes.len())],
            _ => self.made_up(),
        }
    }

    /// One of [`MADE_UP`] identities a rogue member minted (they come back, as a rogue's
    /// would).
    fn made_up(&mut self) -> NodeId {
        let k = self.rng.below(MADE_UP);
        NodeId::from_bytes(*Seed::derive(k, "made-up", 0, 0).as_bytes())
    }

    fn topic(&mut self) -> TopicId {
        if self.rng.chance(0.7) {
            self.topics[self.rng.index(self.topics.len())]
        } else {
            TopicId(self.u64())
        }
    }

    fn origin(&mut self) -> NodeId {
        if self.rng.chance(0.5) { self.origins[self.rng.index(self.origins.len())] } else { self.node() }
    }

    fn payload(&mut self) -> Bytes {
        let len = match self.rng.below(100) {
            0 => self.rng.index(1 << 20),
            1..=5 => self.rng.index(64 << 10),
            _ => self.rng.index(200),
        };
        Bytes::from(vec![self.rng.next_u64() as u8; len])
    }

    fn many(&mut self, huge: usize) -> usize {
        if self.rng.chance(0.001) { huge } else { self.small(40) }
    }

    // ---- SWIM ----

    fn profile(&mut self) -> SharedProfile {
        let addr = if self.rng.chance(0.5) {
            Addr::from_socket(std::net::SocketAddr::from(([192, 0, 2, self.rng.below(256) as u8], 7946)))
        } else {
            Addr::default()
        };
        let topics = (0..self.small(64)).map(|_| self.topic()).collect();
        let meta = Meta::new(topics).unwrap_or_default().with_name("fuzz");
        SharedProfile::new(Profile { addr, meta })
    }

    /// A signature for `node`'s `Alive`: valid only where a rogue member could make one (its
    /// own key, or one it minted for a made-up member), never an honest member's. (`Unchecked`
    /// is forgeable by design; the daemon's Ed25519 keys are not.)
    fn signature(&mut self, node: NodeId, incarnation: u64, profile: &SharedProfile) -> Signature {
        let claim = alive_claim(&node, incarnation, profile.profile());
        match self.rng.below(4) {
            0 => Signature::ZERO,
            1 => Unchecked(self.fakes[0]).sign(&claim),
            _ if self.honest.contains(&node) => Unchecked(self.fakes[0]).sign(&claim),
            _ => Unchecked(node).sign(&claim),
        }
    }

    fn update(&mut self) -> Update {
        let node = self.node();
        let incarnation = self.u64();
        match self.rng.below(3) {
            0 => {
                let profile = self.profile();
                let sig = self.signature(node, incarnation, &profile);
                Update::Alive { node, incarnation, profile, sig }
            }
            1 => Update::Suspect { node, incarnation, from: self.node() },
            _ => Update::Dead { node, incarnation, from: self.node() },
        }
    }

    fn updates(&mut self) -> Vec<Update> {
        (0..self.small(70)).map(|_| self.update()).collect()
    }

    fn swim(&mut self) -> SwimMessage {
        match self.rng.below(6) {
            0 => SwimMessage::Ping { seq: self.u32(), target: self.node(), updates: self.updates() },
            1 => SwimMessage::Ack { seq: self.u32(), updates: self.updates() },
            2 => SwimMessage::PingReq {
                seq: self.u32(),
                target: self.node(),
                want_nack: self.rng.chance(0.5),
                updates: self.updates(),
            },
            3 => SwimMessage::Nack { seq: self.u32(), updates: self.updates() },
            4 => SwimMessage::Gossip { updates: self.updates() },
            _ => {
                let states = (0..self.many(3_000))
                    .map(|_| {
                        let (node, incarnation, profile) = (self.node(), self.u64(), self.profile());
                        let state =
                            [State::Alive, State::Suspect, State::Dead, State::Left][self.rng.index(4)];
                        let sig = self.rng.chance(0.9).then(|| self.signature(node, incarnation, &profile));
                        MemberRecord { node, incarnation, state, profile, sig }
                    })
                    .collect();
                SwimMessage::PushPull { join: self.rng.chance(0.2), reply: self.rng.chance(0.3), states }
            }
        }
    }

    // ---- Chord ----

    fn ring_node(&mut self) -> RingNode {
        let id = self.node();
        if self.rng.chance(0.9) { RingNode::of(id) } else { RingNode { id, ring: RingId(self.u64()) } }
    }

    fn path(&mut self) -> Vec<NodeId> {
        (0..self.small(70)).map(|_| self.node()).collect()
    }

    fn chord(&mut self) -> ChordMessage {
        let req_id = self.u64();
        match self.rng.below(9) {
            0 => ChordMessage::FindSucc {
                req_id,
                key: RingId(self.u64()),
                origin: self.node(),
                hops: self.u8(),
                ttl: self.u8(),
                iterative: self.rng.chance(0.5),
                path: self.path(),
            },
            1 => ChordMessage::FoundSucc {
                req_id,
                key: RingId(self.u64()),
                node: self.ring_node(),
                hops: self.u8(),
                path: self.path(),
            },
            2 => ChordMessage::NextHop {
                req_id,
                key: RingId(self.u64()),
                next: self.ring_node(),
                done: self.rng.chance(0.5),
            },
            3 => ChordMessage::GetPred { req_id },
            4 => ChordMessage::PredIs {
                req_id,
                pred: self.rng.chance(0.7).then(|| self.ring_node()),
                succ_list: (0..self.small(20)).map(|_| self.ring_node()).collect(),
            },
            5 => ChordMessage::Notify { node: self.ring_node() },
            6 => ChordMessage::RingPing { req_id },
            7 => ChordMessage::RingPong { req_id },
            _ => ChordMessage::LeaveHint {
                pred: self.rng.chance(0.5).then(|| self.ring_node()),
                succ_list: (0..self.small(20)).map(|_| self.ring_node()).collect(),
            },
        }
    }

    // ---- Scribe and pbcast ----

    fn msg_id(&mut self) -> MsgId {
        MsgId { origin: self.origin(), topic: self.topic(), seq: self.u64() }
    }

    fn seal(&mut self) -> hearsay_protocols::auth::Seal {
        let key_tail = self.u64().to_be_bytes();
        let b = self.u64() as u8;
        hearsay_protocols::auth::Seal { key_tail, sig: hearsay_protocols::auth::Signature([b; 64]) }
    }

    fn proof(&mut self) -> hearsay_protocols::auth::Proof {
        let d = self.data();
        hearsay_protocols::auth::Proof {
            origin: d.id.origin,
            topic: d.id.topic.0,
            seq: d.id.seq,
            published_at: d.published_at.as_micros(),
            digest: [self.u64() as u8; 32],
            seal: d.seal,
        }
    }

    fn data(&mut self) -> Data {
        Data {
            id: self.msg_id(),
            published_at: Instant::from_micros(self.u64()),
            payload: self.payload(),
            seal: self.seal(),
        }
    }

    fn ring_ids(&mut self) -> Vec<RingId> {
        (0..self.small(70))
            .map(|_| if self.rng.chance(0.8) { RingId::of(&self.node()) } else { RingId(self.u64()) })
            .collect()
    }

    fn scribe(&mut self) -> ScribeMessage {
        let topic = self.topic();
        match self.rng.below(7) {
            0 => {
                let child = self.ring_node();
                let mut path = self.ring_ids();
                if self.rng.chance(0.8) {
                    path.insert(0, child.ring);
                }
                ScribeMessage::Join { topic, child, path }
            }
            1 => ScribeMessage::JoinAck {
                topic,
                root: self.rng.chance(0.5).then(|| RingId(self.u64())),
                ancestors: self.ring_ids(),
            },
            2 => ScribeMessage::Leave { topic },
            3 => ScribeMessage::Publish { data: self.data(), ttl: self.u8() },
            4 => ScribeMessage::TreeData { data: self.data() },
            5 => ScribeMessage::Heartbeat {
                topic,
                root: self.rng.chance(0.5).then(|| RingId(self.u64())),
                ancestors: self.ring_ids(),
            },
            _ => ScribeMessage::HeartbeatAck { topic },
        }
    }

    /// A stream summary: most of them consistent (so they pass the checks and reach the
    /// repair logic) with extreme heads, the rest anything.
    fn summary(&mut self) -> StreamSummary {
        let stream = StreamId { topic: self.topic(), origin: self.origin() };
        if self.rng.chance(0.3) {
            let (floor, contig, max) = (self.u64(), self.u64(), self.u64());
            let missing = (0..self.small(40)).map(|_| self.u64()).collect();
            return StreamSummary { stream, floor, contig, max, missing };
        }
        let max = match self.rng.below(4) {
            0 => SEQ_MAX,
            1 => SEQ_MAX - self.rng.below(3),
            2 => self.u64().clamp(1, SEQ_MAX),
            _ => 1 + self.rng.below(50),
        };
        let floor = if self.rng.chance(0.5) { 1 } else { 1 + self.rng.below(max) };
        let contig =
            if self.rng.chance(0.5) { floor - 1 } else { floor - 1 + self.rng.below(max - floor + 2) };
        let mut missing: Vec<u64> = (0..self.small(32))
            .map(|_| contig + 1 + self.rng.below(max.saturating_sub(contig).max(1)))
            .collect();
        missing.retain(|&m| m > contig && m < max);
        missing.sort_unstable();
        missing.dedup();
        StreamSummary { stream, floor, contig, max, missing }
    }

    fn summaries(&mut self) -> Vec<StreamSummary> {
        let mut s: Vec<StreamSummary> = (0..self.small(300)).map(|_| self.summary()).collect();
        if self.rng.chance(0.7) {
            s.sort_by_key(|x| x.stream);
            s.dedup_by_key(|x| x.stream);
        }
        s
    }

    fn pbcast(&mut self) -> PbMessage {
        match self.rng.below(7) {
            0 => PbMessage::Data(self.data()),
            5 => PbMessage::ProofWanted {
                topic: self.topic(),
                origins: (0..self.small(80)).map(|_| self.origin()).collect(),
            },
            6 => PbMessage::Proofs {
                topic: self.topic(),
                proofs: (0..self.small(80)).map(|_| self.proof()).collect(),
            },
            1 => PbMessage::Digest { topic: self.topic(), summaries: self.summaries() },
            2 => PbMessage::Solicit {
                topic: self.topic(),
                wants: (0..self.small(70))
                    .map(|_| (self.origin(), (0..self.small(300)).map(|_| self.u64()).collect()))
                    .collect(),
            },
            3 => PbMessage::Repair { entries: (0..self.small(20)).map(|_| self.data()).collect() },
            _ => PbMessage::Retransmit(self.data()),
        }
    }

    // ---- anti-entropy ----

    fn entries(&mut self) -> Vec<Entry> {
        (0..self.many(5_000))
            .map(|_| Entry {
                stream: StreamId { topic: self.topic(), origin: self.origin() },
                seq: self.u64(),
                payload: self.payload(),
                published_at: Instant::from_micros(self.u64()),
                seal: self.seal(),
            })
            .collect()
    }

    fn scope(&mut self) -> Vec<TopicId> {
        let mut s: Vec<TopicId> = (0..self.small(20)).map(|_| self.topic()).collect();
        if self.rng.chance(0.8) {
            s.sort_unstable();
            s.dedup();
        }
        s
    }

    fn ae(&mut self) -> AeMessage {
        let xid = self.u64();
        let mode = [AeMode::Push, AeMode::Pull, AeMode::PushPull, AeMode::Heads][self.rng.index(4)];
        match self.rng.below(3) {
            0 => AeMessage::Syn {
                xid,
                mode,
                scope: self.scope(),
                digest: Digest { summaries: self.summaries(), partial: self.rng.chance(0.3) },
            },
            1 => AeMessage::SynAck {
                xid,
                scope: self.scope(),
                digest: Digest { summaries: self.summaries(), partial: self.rng.chance(0.3) },
                delta: self.entries(),
                more: self.rng.chance(0.3),
                proofs: (0..self.small(4)).map(|_| self.proof()).collect(),
            },
            _ => AeMessage::Delta { xid, delta: self.entries(), more: self.rng.chance(0.3) },
        }
    }

    // ---- rumor and aggregation ----

    fn rumor_id(&mut self) -> RumorId {
        if self.rng.chance(0.5) {
            RumorId::Message {
                stream: StreamId { topic: self.topic(), origin: self.origin() },
                seq: self.u64(),
            }
        } else {
            RumorId::Query { querier: self.node(), counter: self.u64() }
        }
    }

    fn rumor(&mut self) -> ChannelRumor {
        let channel = if self.rng.chance(0.5) { RumorChannel::Topics } else { RumorChannel::Queries };
        let msg = match self.rng.below(3) {
            0 => {
                let mut items: Vec<Rumor> = (0..self.many(2_000))
                    .map(|_| {
                        let id = self.rumor_id();
                        let payload = if let RumorId::Query { querier, counter } = id {
                            if self.rng.chance(0.5) {
                                Bytes::from(
                                    postcard::to_allocvec(&self.query(querier, counter)).unwrap_or_default(),
                                )
                            } else {
                                self.payload()
                            }
                        } else if self.rng.chance(0.5) {
                            Bytes::from(postcard::to_allocvec(&self.data()).unwrap_or_default())
                        } else {
                            self.payload()
                        };
                        Rumor { id, payload }
                    })
                    .collect();
                if self.rng.chance(0.8) {
                    items.sort_by_key(|r| r.id);
                    items.dedup_by_key(|r| r.id);
                }
                RumorMessage::Rumors {
                    items,
                    pull: self.rng.chance(0.3),
                    want_feedback: self.rng.chance(0.5),
                }
            }
            1 => RumorMessage::Pull,
            _ => {
                let mut items: Vec<(RumorId, bool)> =
                    (0..self.many(2_000)).map(|_| (self.rumor_id(), self.rng.chance(0.5))).collect();
                if self.rng.chance(0.8) {
                    items.sort_by_key(|r| r.0);
                    items.dedup_by_key(|r| r.0);
                }
                RumorMessage::Feedback { items }
            }
        };
        ChannelRumor { channel, msg }
    }

    fn query(&mut self, querier: NodeId, counter: u64) -> Query {
        let func = [Func::Avg, Func::Sum, Func::Count, Func::Min, Func::Max][self.rng.index(5)];
        let algorithm = [Algorithm::AckPushSum, Algorithm::PushSum, Algorithm::PushPull, Algorithm::Extremum]
            [self.rng.index(4)];
        Query {
            qid: QueryId { querier, counter },
            func,
            attr: if self.rng.chance(0.9) { "x".into() } else { "y".repeat(self.small(100)) },
            algorithm,
            epsilon: if self.rng.chance(0.8) { 1e-4 } else { self.f64() },
            stable_rounds: if self.rng.chance(0.8) { 3 } else { self.u32() },
            max_rounds: if self.rng.chance(0.7) { 200 } else { self.u32() },
            scope: Default::default(),
        }
    }

    fn agg(&mut self) -> AggMessage {
        let (querier, counter) = (self.node(), self.u64() % 8);
        let query = self.query(querier, counter);
        let qid = query.qid;
        match self.rng.below(6) {
            0 => AggMessage::PsMass {
                query,
                session: self.u64(),
                floor: self.u64(),
                seq: self.u64(),
                s: self.f64(),
                w: self.f64(),
            },
            1 => AggMessage::PsAck { qid, session: self.u64(), seq: self.u64() },
            2 => AggMessage::ExtPush { query, m: self.f64() },
            3 => AggMessage::ExtReply { qid, m: self.f64() },
            4 => AggMessage::PpxRequest { query, s: self.f64(), w: self.f64() },
            _ => AggMessage::PpxReply { qid, s: self.f64(), w: self.f64() },
        }
    }
}

/// The readable table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "fuzz: {} frames ({} mutated) from {} fake members into {} honest Engines, seed {}\n",
        r.frames, r.mutated, r.fakes, r.honest, r.seed
    ));
    let kinds: Vec<String> =
        PROTOCOLS.iter().zip(&r.frames_by_kind).map(|(k, n)| format!("{k} {n}")).collect();
    s.push_str(&format!("  by kind: {}\n", kinds.join(", ")));
    s.push_str(&format!("  refused at decoding: {}\n", r.decode_errors));
    s.push_str(&format!("  panics: {}\n", r.panics));
    for c in &r.panic_cases {
        s.push_str(&format!("    frame {:?} [{}]: {}\n      {}\n", c.frame, c.kind, c.panic, c.hex));
    }
    s.push_str(&format!("  max state (accounted bytes, all honest Engines): {}\n", r.max_state_bytes));
    s.push_str(&format!(
        "  honest members still deliver each other's messages: {} ({} of {})\n",
        r.delivered_ok,
        r.final_delivered,
        r.honest * r.honest.saturating_sub(1)
    ));
    s.push_str(&format!("  elapsed {:.1} s\n", r.elapsed_s));
    s
}
