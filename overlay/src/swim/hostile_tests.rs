//! Hostile and broken peers (issue 12): each test feeds what a member holding the cluster
//! secret could send, and shows that it no longer freezes, bloats or steers a node. Each doc
//! comment says what the code before the fix did with the same input.

use std::sync::Arc;

use hearsay_protocols::auth::{Authenticator, Signature, Unchecked};
use hearsay_protocols::{Machine, NodeId};

use super::*;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn ms(t: u64) -> Instant {
    Instant::from_micros(t * 1_000)
}

fn cfg() -> SwimConfig {
    SwimConfig { timing: Timing::Sync, ..SwimConfig::lan() }
}

/// Node 1 with a converged table of nodes 1..=`n`.
fn node_with(n: u64, cfg: SwimConfig) -> Swim {
    let others: Vec<(NodeId, SharedProfile)> = (2..=n).map(|k| (id(k), SharedProfile::default())).collect();
    let seed = Seed::derive(7, "node", 0, 1);
    Swim::with_members(
        Arc::new(Unchecked(id(1))),
        Profile::default(),
        Arc::new(cfg),
        &seed,
        Instant::ZERO,
        &others,
    )
}

fn v4(s: &str) -> SharedProfile {
    SharedProfile::new(Profile { addr: Addr::from_socket(s.parse().unwrap()), ..Profile::default() })
}

/// A member id that is not a small test id (spread over the key space like real ones).
fn made_up(i: u64) -> NodeId {
    NodeId::from_bytes(*Seed::derive(99, "made-up", 0, i).as_bytes())
}

/// `node`'s own signed record in state `state`.
fn record(node: NodeId, incarnation: u64, state: State, profile: SharedProfile) -> MemberRecord {
    let sig = Unchecked(node).sign(&alive_claim(&node, incarnation, profile.profile()));
    MemberRecord { node, incarnation, state, profile, sig: Some(sig) }
}

fn gossip(m: &mut Swim, now: Instant, from: u64, updates: Vec<Update>) {
    m.handle_message(now, id(from), SwimMessage::Gossip { updates });
}

fn drain(m: &mut Swim) -> (Vec<Transmit<SwimMessage>>, Vec<SwimEvent>) {
    (std::iter::from_fn(|| m.poll_transmit()).collect(), std::iter::from_fn(|| m.poll_event()).collect())
}

fn state(m: &Swim, n: NodeId) -> Option<(State, u64)> {
    m.member(&n).map(|e| (e.state, e.incarnation))
}

// ---- case 2: freeze ----

/// Issue 12, case 2. Before the fix each new member was inserted into the sorted table with
/// O(n) shifts of the entries and of every probe index: 20,000 new records took seconds (and
/// the 55,000 of a 2 MiB push-pull minutes). Now they are staged and merged in one pass.
#[test]
fn merging_20000_records_takes_well_under_a_second() {
    let n = 20_000u64;
    let big = SwimConfig { push_pull_records_max: 1 << 20, push_pull_bytes_max: 1 << 30, ..cfg() };
    let mut m = node_with(5, big);
    let states: Vec<MemberRecord> =
        (0..n).map(|i| record(made_up(i), 0, State::Alive, v4("10.1.2.3:7946"))).collect();
    let started = std::time::Instant::now();
    m.handle_message(ms(1), id(2), SwimMessage::PushPull { join: false, reply: false, states });
    let took = started.elapsed();
    println!("merged {n} records into a 5-member table in {took:?}");
    assert_eq!(m.members().len() as u64, 5 + n);
    assert!(m.members().windows(2).all(|w| w[0].id < w[1].id), "sorted and deduplicated");
    assert_eq!(m.table.probe_order().len() as u64, 4 + n, "every new member enters the probe order");
    // The bound is for release builds (CI's `cargo test --release`: about 0.1 s measured);
    // unoptimized builds only get a sanity bound.
    let bound = std::time::Duration::from_secs(if cfg!(debug_assertions) { 30 } else { 1 });
    assert!(took < bound, "{took:?}");
    let (ts, events) = drain(&mut m);
    assert_eq!(events.len() as u64, n);
    assert!(ts.iter().any(|t| matches!(t.msg, SwimMessage::PushPull { reply: true, .. })));
}

/// Issue 12, case 2. Before the fix a push-pull of up to 131,072 records was merged whole
/// (and one of ~55,000 made-up members fit in a 2 MiB frame). Now what is merged is capped in
/// records and bytes, and the rest is counted and dropped.
#[test]
fn an_oversized_push_pull_is_capped_in_records_and_bytes() {
    let mut m = node_with(5, cfg());
    let states: Vec<MemberRecord> =
        (0..55_000).map(|i| record(made_up(i), 0, State::Alive, SharedProfile::default())).collect();
    m.handle_message(ms(1), id(2), SwimMessage::PushPull { join: false, reply: false, states });
    let cap = m.config().push_pull_records_max;
    assert_eq!(m.members().len(), 5 + cap);
    assert_eq!(m.stats().records_dropped, (55_000 - cap) as u64);
    // Bytes: records with 64-byte names are ~170 bytes; 1 MiB holds ~6,100 of them.
    let named = SharedProfile::new(Profile {
        addr: Addr::default(),
        meta: Meta::default().with_name(&"n".repeat(64)),
    });
    let mut m = node_with(5, cfg());
    let states: Vec<MemberRecord> =
        (0..8_000).map(|i| record(made_up(i), 0, State::Alive, named.clone())).collect();
    let each = states[0].encoded_len();
    m.handle_message(ms(1), id(2), SwimMessage::PushPull { join: false, reply: false, states });
    let merged = m.members().len() - 5;
    assert_eq!(merged, (1 << 20) / each, "{each} bytes a record");
    assert_eq!(m.stats().records_dropped, (8_000 - merged) as u64);
    // What a node sends is capped the same way, its own entry first.
    let (ts, _) = drain(&mut m);
    let reply = ts.iter().find_map(|t| match &t.msg {
        SwimMessage::PushPull { reply: true, states, .. } => Some(states.clone()),
        _ => None,
    });
    assert!(reply.is_some(), "the request was answered");
    m.open_exchange(ms(2), id(2), false);
    let (ts, _) = drain(&mut m);
    let Some(SwimMessage::PushPull { states, .. }) = ts.into_iter().map(|t| t.msg).next() else {
        panic!("a push-pull")
    };
    assert_eq!(states[0].node, id(1));
    assert!(states.iter().map(MemberRecord::encoded_len).sum::<usize>() <= 1 << 20);
}

/// Issue 12, case 3 (the member table is a peer-created entry). Before the fix the table
/// grew with every signed made-up member without bound. Now it stops at `members_max`
/// entries (and `members_bytes_max` bytes), refusals counted.
#[test]
fn the_member_table_is_capped_in_count_and_bytes() {
    let mut m = node_with(5, SwimConfig { members_max: 40, ..cfg() });
    for chunk in (0..100u64).collect::<Vec<_>>().chunks(10) {
        let ups = chunk
            .iter()
            .map(|&i| Update::signed_alive(&Unchecked(made_up(i)), 0, SharedProfile::default()))
            .collect();
        gossip(&mut m, ms(1), 2, ups);
    }
    assert_eq!(m.members().len(), 40);
    assert_eq!(m.stats().members_refused, 65);
    let mut m = node_with(5, SwimConfig { members_bytes_max: 20 * 300, ..cfg() });
    let ups =
        (0..30).map(|i| Update::signed_alive(&Unchecked(made_up(i)), 0, SharedProfile::default())).collect();
    gossip(&mut m, ms(1), 2, ups);
    assert!(m.table.bytes() <= 20 * 300);
    assert_eq!(m.members().len() as u64 + m.stats().members_refused, 35);
    assert!(m.stats().members_refused > 0);
}

// ---- case 5: reflection ----

/// Issue 12, case 5. Before the fix a `PingReq` carried `target_addr`, and a helper that did
/// not know the target pinged it there ([`Swim::addr_of`] answered with that address): any
/// member could aim others' pings at any address. Now the helper refuses a target that is not
/// in its table, and `addr_of` knows table entries only.
#[test]
fn a_ping_req_for_a_target_outside_the_table_is_refused() {
    let mut m = node_with(4, cfg());
    let stranger = made_up(1);
    m.handle_message(
        ms(1),
        id(2),
        SwimMessage::PingReq { seq: 5, target: stranger, want_nack: true, updates: vec![] },
    );
    let (ts, _) = drain(&mut m);
    assert!(ts.is_empty(), "nothing is sent: {ts:?}");
    assert_eq!(m.stats().ping_reqs_refused, 1);
    assert_eq!(m.addr_of(&stranger), None);
    m.handle_timeout(ms(1_000));
    let (ts, _) = drain(&mut m);
    assert!(ts.iter().all(|t| t.to != stranger));
    // A member of the table is pinged, at its own address.
    m.handle_message(
        ms(1_001),
        id(2),
        SwimMessage::PingReq { seq: 6, target: id(3), want_nack: false, updates: vec![] },
    );
    let (ts, _) = drain(&mut m);
    assert!(ts.iter().any(|t| t.to == id(3) && matches!(t.msg, SwimMessage::Ping { .. })));
}

/// Issue 12, case 5 (and 3). Before the fix a helper served every ping-req: one member could
/// make it hold and ping without bound. Now at most `RELAYS_PER_REQUESTER` per requester and
/// `RELAYS_MAX` in all run at once.
#[test]
fn relays_are_capped_per_requester() {
    let mut m = node_with(4, cfg());
    for seq in 0..100 {
        m.handle_message(
            ms(1),
            id(2),
            SwimMessage::PingReq { seq, target: id(3), want_nack: true, updates: vec![] },
        );
    }
    let (ts, _) = drain(&mut m);
    assert_eq!(ts.len(), RELAYS_PER_REQUESTER);
    assert_eq!(m.stats().ping_reqs_refused, (100 - RELAYS_PER_REQUESTER) as u64);
}

/// Issue 12, case 5. Before the fix a member could gossip `Alive` records for made-up ids at
/// any address: they entered the table and were probed, gossiped to and chosen as partners.
/// Now an `Alive` that is not signed by the member it names never enters the table.
#[test]
fn made_up_members_without_their_own_signature_never_enter_the_table() {
    let mut m = node_with(4, cfg());
    let victim = v4("192.0.2.7:80");
    let fakes: Vec<Update> = (0..10)
        .map(|i| Update::Alive {
            node: made_up(i),
            incarnation: 0,
            profile: victim.clone(),
            sig: Signature::ZERO,
        })
        .collect();
    gossip(&mut m, ms(1), 2, fakes);
    // Signed by another member's key: no better.
    let by_2 = Unchecked(id(2)).sign(&alive_claim(&made_up(20), 0, victim.profile()));
    gossip(
        &mut m,
        ms(1),
        2,
        vec![Update::Alive { node: made_up(20), incarnation: 0, profile: victim.clone(), sig: by_2 }],
    );
    assert_eq!(m.members().len(), 4);
    assert_eq!(m.stats().forged, 11);
    m.handle_timeout(ms(20_000));
    let (ts, _) = drain(&mut m);
    assert!(ts.iter().all(|t| t.to.prefix_u64() <= 4), "only members are contacted");
}

// ---- case 7: SWIM trust ----

/// Issue 12, case 7. Before the fix any member could send `Alive{X, incarnation + 1}`: a dead
/// X was revived, and `Alive{X, u64::MAX, addr}` moved X's address for good. Now only X's own
/// signature raises X's incarnation or changes its profile.
#[test]
fn only_a_member_itself_can_raise_its_incarnation_or_move_its_address() {
    let mut m = node_with(4, cfg());
    gossip(&mut m, ms(1), 2, vec![Update::Dead { node: id(3), incarnation: 0, from: id(2) }]);
    assert_eq!(state(&m, id(3)), Some((State::Dead, 0)));
    let evil = v4("203.0.113.9:7946");
    for inc in [1, u64::MAX] {
        let forged =
            Update::Alive { node: id(3), incarnation: inc, profile: evil.clone(), sig: Signature::ZERO };
        gossip(&mut m, ms(2), 2, vec![forged]);
        // Signed by the sender, not by 3.
        let sig = Unchecked(id(2)).sign(&alive_claim(&id(3), inc, evil.profile()));
        gossip(
            &mut m,
            ms(2),
            2,
            vec![Update::Alive { node: id(3), incarnation: inc, profile: evil.clone(), sig }],
        );
    }
    assert_eq!(state(&m, id(3)), Some((State::Dead, 0)));
    assert_eq!(m.addr_of(&id(3)), Some(Addr::default()));
    assert_eq!(m.stats().forged, 4);
    // Node 3 itself refutes.
    gossip(&mut m, ms(3), 2, vec![Update::signed_alive(&Unchecked(id(3)), 1, SharedProfile::default())]);
    assert_eq!(state(&m, id(3)), Some((State::Alive, 1)));
}

/// Issue 12, case 7. Before the fix `Suspect` and `Dead` raised the incarnation they named:
/// `Dead{X, u64::MAX}` left X dead at an incarnation its refutation could never exceed. Now
/// they never raise it: X's next signed `Alive` revives it.
#[test]
fn suspect_or_dead_at_u64_max_cannot_pin_a_node_dead() {
    let mut m = node_with(4, cfg());
    gossip(&mut m, ms(1), 2, vec![Update::Suspect { node: id(3), incarnation: u64::MAX, from: id(2) }]);
    assert_eq!(state(&m, id(3)), Some((State::Suspect, 0)));
    gossip(&mut m, ms(1), 2, vec![Update::Dead { node: id(3), incarnation: u64::MAX, from: id(2) }]);
    assert_eq!(state(&m, id(3)), Some((State::Dead, 0)));
    assert_eq!(m.stats().clamped, 2);
    // Passed on as received: the accused sees what was said.
    assert_eq!(
        m.queue.get(&id(3)).map(|(u, _)| u.clone()),
        Some(Update::Dead { node: id(3), incarnation: u64::MAX, from: id(2) })
    );
    gossip(&mut m, ms(2), 4, vec![Update::signed_alive(&Unchecked(id(3)), 1, SharedProfile::default())]);
    assert_eq!(state(&m, id(3)), Some((State::Alive, 1)));
}

/// Issue 12, case 7. Before the fix a node accused at `u64::MAX − 1` refuted at `u64::MAX`,
/// and at `u64::MAX` could not refute at all: its incarnation saturated. Now it jumps past an
/// accusation only below `INCARNATION_CEILING` and otherwise adds one.
#[test]
fn refutation_never_saturates() {
    let mut m = node_with(4, cfg());
    for inc in [u64::MAX - 1, u64::MAX, INCARNATION_CEILING, u64::MAX] {
        gossip(&mut m, ms(1), 2, vec![Update::Suspect { node: id(1), incarnation: inc, from: id(2) }]);
    }
    assert_eq!(m.incarnation(), 4, "each accusation at or above our incarnation: +1");
    assert_eq!(m.stats().refutations, 4);
    // Below the ceiling a restarted node jumps past what others remember of it.
    gossip(&mut m, ms(1), 2, vec![Update::Dead { node: id(1), incarnation: 1_000, from: id(2) }]);
    assert_eq!(m.incarnation(), 1_001);
    // The refutation is our own signed Alive.
    let Some((Update::Alive { incarnation, profile, sig, .. }, _)) =
        m.queue.get(&id(1)).map(|(u, t)| (u.clone(), t))
    else {
        panic!("an Alive about self is queued")
    };
    assert_eq!(incarnation, 1_001);
    assert!(Unchecked(id(9)).verify(&id(1), &alive_claim(&id(1), 1_001, profile.profile()), &sig));
}

/// Issue 12, case 7. Before the fix an `Alive` about this node at a higher incarnation (or
/// another profile) was refuted whoever signed it, so any member could make a node raise its
/// incarnation at will. Now only this node's own signature (a previous life's) is refuted.
#[test]
fn an_alive_about_self_is_refuted_only_if_it_is_our_own() {
    let mut m = node_with(4, cfg());
    let other = v4("10.0.0.1:7946");
    gossip(
        &mut m,
        ms(1),
        2,
        vec![Update::Alive { node: id(1), incarnation: 6, profile: other.clone(), sig: Signature::ZERO }],
    );
    assert_eq!((m.incarnation(), m.stats().forged), (0, 1));
    gossip(&mut m, ms(1), 2, vec![Update::signed_alive(&Unchecked(id(1)), 6, other)]);
    assert_eq!(m.incarnation(), 7);
}

/// Issue 12, case 7. Before the fix one member could shorten Lifeguard's suspicion timeout to
/// its minimum by sending `Suspect`s with made-up `from` fields, each counted as a new
/// confirmation. Now a confirmation counts only from a member of the table, and once per peer
/// that delivered it.
#[test]
fn forged_confirmations_from_one_peer_count_once() {
    let all = 500u64;
    let mut m = node_with(all, cfg());
    gossip(&mut m, ms(0), 2, vec![Update::Suspect { node: id(7), incarnation: 0, from: id(2) }]);
    let deadline = |m: &Swim| m.member(&id(7)).and_then(|e| e.suspicion_deadline());
    assert_eq!(deadline(&m), Some(ms(64_752)));
    // Made-up confirmers, and real ones, all through peer 9.
    let forged: Vec<Update> = [made_up(1), made_up(2), id(3), id(4)]
        .into_iter()
        .map(|from| Update::Suspect { node: id(7), incarnation: 0, from })
        .collect();
    gossip(&mut m, ms(1), 9, forged);
    assert_eq!(m.member(&id(7)).map(|e| e.confirmations()), Some(1));
    assert_eq!(deadline(&m), Some(ms(30_707)));
    // A second peer adds the second.
    gossip(&mut m, ms(2), 10, vec![Update::Suspect { node: id(7), incarnation: 0, from: id(5) }]);
    assert_eq!(deadline(&m), Some(ms(10_792)));
}

/// Counts signature checks.
#[derive(Debug)]
struct Counting(Unchecked, std::sync::atomic::AtomicU64);

impl Authenticator for Counting {
    fn id(&self) -> NodeId {
        self.0.id()
    }
    fn sign(&self, msg: &[u8]) -> Signature {
        self.0.sign(msg)
    }
    fn verify(&self, key: &NodeId, msg: &[u8], sig: &Signature) -> bool {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.verify(key, msg, sig)
    }
}

/// Issue 12, case 7 (signatures are CPU). A message full of forged `Alive`s would cost one
/// signature check each (an Ed25519 verification in the daemon); now the first failure
/// condemns the rest of the message, unchecked, and repeated copies of known `Alive`s are
/// never checked.
#[test]
fn forged_alives_cost_one_signature_check_per_message() {
    let auth = Arc::new(Counting(Unchecked(id(1)), Default::default()));
    let others: Vec<(NodeId, SharedProfile)> = (2..=4).map(|k| (id(k), SharedProfile::default())).collect();
    let seed = Seed::derive(7, "node", 0, 1);
    let mut m =
        Swim::with_members(auth.clone(), Profile::default(), Arc::new(cfg()), &seed, Instant::ZERO, &others);
    let checks = || auth.1.load(std::sync::atomic::Ordering::Relaxed);
    let wrong = |i: u64| {
        let sig = Unchecked(id(2)).sign(&alive_claim(&made_up(i), 0, &Profile::default()));
        Update::Alive { node: made_up(i), incarnation: 0, profile: SharedProfile::default(), sig }
    };
    gossip(&mut m, ms(1), 2, (0..60).map(wrong).collect());
    assert_eq!((checks(), m.stats().forged), (1, 60));
    // Zero signatures cost nothing; a new message starts clean.
    let zero = Update::Alive {
        node: made_up(99),
        incarnation: 0,
        profile: SharedProfile::default(),
        sig: Signature::ZERO,
    };
    let good = Update::signed_alive(&Unchecked(made_up(98)), 0, SharedProfile::default());
    gossip(&mut m, ms(2), 2, vec![zero, good.clone()]);
    assert_eq!((checks(), m.members().len()), (2, 5));
    // A known Alive again: no check.
    gossip(&mut m, ms(3), 3, vec![good]);
    assert_eq!(checks(), 2);
}

/// The wire cost of signing: a ping-req carrying a signed `Alive` with an IPv6 address and a
/// 64-byte name still fits the smallest datagram budget accepted.
#[test]
fn a_ping_req_with_a_signed_alive_fits_the_minimum_budget() {
    let profile = SharedProfile::new(Profile {
        addr: Addr::from_socket("[2001:db8::1]:7946".parse().unwrap()),
        meta: Meta::default().with_name(&"n".repeat(64)),
    });
    let alive = Update::signed_alive(&Unchecked(id(9)), u64::MAX, profile);
    assert_eq!(alive.encoded_len(), 185 + 9, "a 10-byte incarnation");
    let msg = SwimMessage::PingReq { seq: u32::MAX, target: id(3), want_nack: true, updates: vec![alive] };
    assert!(hearsay_protocols::wire::encoded_len(&msg) <= MIN_DATAGRAM_BUDGET);
}
