//! The simulated network (PROTOCOLS.md §9.5): per-link latency, independent loss,
//! partitions, and FIFO order on streams.
//!
//! Latency models are per link without storing N² values: a link's base latency is a fixed
//! function of the topology seed and the (unordered) node pair, and each message multiplies
//! it by U[1, 1 + jitter) drawn from the network RNG. Loss is drawn at send time from the
//! network RNG, once per datagram (and per stream message only when `stream_loss` is set);
//! with `stream_retransmit`, once per transmission of a stream message after its jitter.

use std::collections::HashMap;

use hearsay_protocols::{Duration, Instant, Reliability, Rng, Seed};

/// How long a message takes on the link between two nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Every message arrives at the instant it was sent (round-based experiments).
    Zero,
    /// The same delay on every link.
    Constant(Duration),
    /// Each link's delay is fixed, drawn uniformly from [lo, hi).
    Uniform {
        /// Shortest link.
        lo: Duration,
        /// Longest link (exclusive).
        hi: Duration,
    },
    /// Each link's delay is fixed, log-normally distributed: median × e^(sigma·Z).
    LogNormal {
        /// The median link delay.
        median: Duration,
        /// Spread of ln(delay).
        sigma: f64,
    },
    /// Nodes are points in the unit square; a link's delay is a + b × distance, a metric
    /// (PROTOCOLS.md §9.5: `lan` a = 0.1 ms, b = 1 ms; `wan` a = 1 ms, b = 100 ms).
    Plane {
        /// Fixed part.
        a: Duration,
        /// Per unit of distance.
        b: Duration,
    },
}

impl Latency {
    /// The `lan` profile of PROTOCOLS.md §9.5 (use with jitter 0.1).
    pub const LAN: Latency = Latency::Plane { a: Duration::from_micros(100), b: Duration::from_millis(1) };
    /// The `wan` profile of PROTOCOLS.md §9.5 (use with jitter 0.1).
    pub const WAN: Latency = Latency::Plane { a: Duration::from_millis(1), b: Duration::from_millis(100) };
}

/// The network's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Link delays.
    pub latency: Latency,
    /// Each message's delay is the link's base delay × U[1, 1 + jitter). PROTOCOLS.md uses 0.1.
    pub jitter: f64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Apply `loss` to stream messages too (experiments that model lossy exchanges; a real
    /// stream retransmits).
    pub stream_loss: bool,
    /// Model a stream's retransmissions under `loss` (when `stream_loss` is off): each
    /// transmission of a stream message is lost with probability `loss` and sent again one
    /// probe timeout later, QUIC's PTO on a settled path (RFC 9002 §6.2: smoothed RTT +
    /// 4·rttvar + max_ack_delay, taken as 1.5 × RTT + 25 ms, RTT = twice the link's base
    /// delay), doubled after each consecutive loss (§6.2.1). Streams stay FIFO per pair, so
    /// a retransmission also holds the pair's later stream messages: pessimistic for the
    /// daemon, which opens one QUIC stream per frame. Off: stream messages arrive after one
    /// link delay, whatever the loss.
    pub stream_retransmit: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Latency::Zero,
            jitter: 0.0,
            loss: 0.0,
            stream_loss: false,
            stream_retransmit: false,
        }
    }
}

/// What the network did with a message at send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It will be delivered at this instant (unless the destination crashes first or a
    /// partition cuts it off on arrival).
    Arrives(Instant),
    /// Dropped by random loss.
    Lost,
    /// Dropped: sender and destination are in different partition groups.
    Partitioned,
    /// Dropped: the destination is crashed or not part of the simulation.
    Unreachable,
}

#[derive(Debug)]
pub(crate) struct Network {
    config: NetConfig,
    rng: Rng,
    link_key: u64,
    points: Vec<(f64, f64)>,
    groups: Option<Vec<u32>>,
    stream_tail: HashMap<(u32, u32), u64>,
    stream_sends: u64,
}

impl Network {
    pub(crate) fn new(config: NetConfig, seed: u64, run: u64, nodes: usize) -> Self {
        let mut topo = Rng::from_seed(Seed::derive(seed, "topo", run, 0));
        let link_key = topo.next_u64();
        let points = match config.latency {
            Latency::Plane { .. } => (0..nodes).map(|_| (topo.unit(), topo.unit())).collect(),
            _ => Vec::new(),
        };
        Network {
            config,
            rng: Rng::from_seed(Seed::derive(seed, "net", run, 0)),
            link_key,
            points,
            groups: None,
            stream_tail: HashMap::new(),
            stream_sends: 0,
        }
    }

    pub(crate) fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The base one-way delay of the link between `i` and `j` (no jitter): a fixed function
    /// of the topology seed and the pair.
    pub(crate) fn base_delay(&self, i: u32, j: u32) -> Duration {
        let (lo, hi) = if i <= j { (i, j) } else { (j, i) };
        match self.config.latency {
            Latency::Zero => Duration::ZERO,
            Latency::Constant(d) => d,
            Latency::Uniform { lo: a, hi: b } => {
                let u = self.link_unit(lo, hi, 1);
                Duration::from_secs_f64(a.as_secs_f64() + (b.as_secs_f64() - a.as_secs_f64()) * u)
            }
            Latency::LogNormal { median, sigma } => {
                let u1 = 1.0 - self.link_unit(lo, hi, 2);
                let u2 = self.link_unit(lo, hi, 3);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                median.mul_f64((sigma * z).exp())
            }
            Latency::Plane { a, b } => {
                let (p, q) = (self.points[lo as usize], self.points[hi as usize]);
                let dist = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
                a + b.mul_f64(dist)
            }
        }
    }

    fn link_unit(&self, lo: u32, hi: u32, salt: u64) -> f64 {
        let mut z =
            self.link_key ^ (u64::from(lo) << 32 | u64::from(hi)) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // splitmix64 finalizer
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn partition(&mut self, groups: Option<Vec<u32>>) {
        self.groups = groups;
    }

    pub(crate) fn separated(&self, i: u32, j: u32) -> bool {
        self.groups.as_ref().is_some_and(|g| g[i as usize] != g[j as usize])
    }

    /// Decide a message's fate at send time. Draws from the network RNG in a fixed order:
    /// the loss coin (if it applies), then the jitter (if any), then (a stream with
    /// `stream_retransmit`) one loss coin per transmission until one gets through.
    pub(crate) fn send(&mut self, now: Instant, from: u32, to: u32, reliability: Reliability) -> Fate {
        if self.separated(from, to) {
            return Fate::Partitioned;
        }
        let lossy = reliability == Reliability::Datagram || self.config.stream_loss;
        if lossy && self.config.loss > 0.0 && self.rng.chance(self.config.loss) {
            return Fate::Lost;
        }
        let base = self.base_delay(from, to);
        let mut delay = base;
        if self.config.jitter > 0.0 && delay > Duration::ZERO {
            delay = delay.mul_f64(self.rng.range_f64(1.0, 1.0 + self.config.jitter));
        }
        let retransmits = reliability == Reliability::Stream
            && self.config.stream_retransmit
            && !self.config.stream_loss
            && self.config.loss > 0.0;
        if retransmits {
            let mut pto = (base * 2).mul_f64(1.5) + Duration::from_millis(25);
            // At most 16 tries (a backed-off PTO past 2^15 × 25 ms would outlive any run).
            for _ in 0..16 {
                if !self.rng.chance(self.config.loss) {
                    break;
                }
                delay = delay + pto;
                pto = pto * 2;
            }
        }
        let mut at = (now + delay).as_micros();
        if reliability == Reliability::Stream && (self.config.jitter > 0.0 || retransmits) {
            // Streams are FIFO per ordered pair. Without jitter or retransmissions every link
            // delay is fixed, so order holds by itself and nothing needs remembering.
            let tail = self.stream_tail.entry((from, to)).or_insert(0);
            at = at.max(*tail);
            *tail = at;
            self.stream_sends += 1;
            if self.stream_sends % (1 << 20) == 0 {
                let now = now.as_micros();
                self.stream_tail.retain(|_, t| *t > now);
            }
        }
        Fate::Arrives(Instant::from_micros(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(latency: Latency, jitter: f64, loss: f64) -> Network {
        Network::new(
            NetConfig { latency, jitter, loss, stream_loss: false, stream_retransmit: false },
            1,
            0,
            100,
        )
    }

    #[test]
    fn link_delays_are_symmetric_fixed_and_in_range() {
        let n =
            net(Latency::Uniform { lo: Duration::from_millis(10), hi: Duration::from_millis(20) }, 0.0, 0.0);
        let mut seen = Vec::new();
        for i in 0..100 {
            for j in 0..100 {
                let d = n.base_delay(i, j);
                assert_eq!(d, n.base_delay(j, i));
                assert!(d >= Duration::from_millis(10) && d < Duration::from_millis(20));
                seen.push(d.as_micros());
            }
        }
        let mean = seen.iter().sum::<u64>() as f64 / seen.len() as f64;
        assert!((mean - 15_000.0).abs() < 200.0, "{mean}");
    }

    #[test]
    fn log_normal_has_the_requested_median() {
        let n = net(Latency::LogNormal { median: Duration::from_millis(50), sigma: 0.5 }, 0.0, 0.0);
        let mut ds: Vec<u64> = (0..200)
            .flat_map(|i| (0..50).map(move |j| (i, j)))
            .map(|(i, j)| n.base_delay(i, 200 + j).as_micros())
            .collect();
        ds.sort_unstable();
        let median = ds[ds.len() / 2];
        assert!((45_000..55_000).contains(&median), "{median}");
    }

    #[test]
    fn plane_delays_obey_the_triangle_inequality() {
        let n = net(Latency::WAN, 0.0, 0.0);
        let a = Duration::from_millis(1);
        for (i, j, k) in [(0, 1, 2), (3, 4, 5), (10, 20, 30)] {
            let direct = n.base_delay(i, k);
            let via = n.base_delay(i, j) + n.base_delay(j, k);
            assert!(direct <= via, "{direct} > {via}");
            assert!(direct >= a);
        }
    }

    #[test]
    fn loss_hits_datagrams_at_the_configured_rate_but_not_streams() {
        let mut n = net(Latency::Zero, 0.0, 0.2);
        let lost =
            (0..20_000).filter(|_| n.send(Instant::ZERO, 0, 1, Reliability::Datagram) == Fate::Lost).count();
        assert!((3_700..4_300).contains(&lost), "{lost}");
        assert!((0..1000).all(|_| n.send(Instant::ZERO, 0, 1, Reliability::Stream) != Fate::Lost));
    }

    #[test]
    fn streams_stay_fifo_under_jitter() {
        let mut n = net(Latency::Constant(Duration::from_millis(10)), 1.0, 0.0);
        let mut last = Instant::ZERO;
        for t in 0..1000u64 {
            let Fate::Arrives(at) = n.send(Instant::from_micros(t), 3, 4, Reliability::Stream) else {
                panic!()
            };
            assert!(at >= last);
            last = at;
        }
    }

    #[test]
    fn retransmitted_streams_lose_nothing_and_pay_a_backed_off_probe_timeout_per_loss_in_order() {
        let config = NetConfig {
            latency: Latency::Constant(Duration::from_millis(10)),
            jitter: 0.0,
            loss: 0.2,
            stream_loss: false,
            stream_retransmit: true,
        };
        let mut n = Network::new(config, 1, 0, 10);
        // PTO = 1.5 × 20 ms + 25 ms = 55 ms for the first loss, doubling: k losses cost
        // (2^k − 1) × 55 ms.
        let (base, pto) = (10_000u64, 55_000u64);
        let mut late = 0;
        let mut last = Instant::ZERO;
        for t in 0..10_000u64 {
            let sent = Instant::from_micros(t * 200_000_000);
            let Fate::Arrives(at) = n.send(sent, 0, 1, Reliability::Stream) else { panic!("a stream lost") };
            let d = (at - sent).as_micros();
            let extra = d - base;
            assert!(
                extra % pto == 0 && (extra / pto + 1).is_power_of_two(),
                "{d} µs is not 10 ms + (2^k − 1) × 55 ms"
            );
            late += usize::from(d > base);
            assert!(at >= last, "FIFO");
            last = at;
        }
        assert!((1_800..2_200).contains(&late), "{late} of 10,000 retransmitted at 20% loss");
        // Back to back, a retransmitted message holds the ones behind it.
        let now = Instant::from_micros(10_000 * 200_000_000);
        let arrivals: Vec<Instant> = (0..200)
            .map(|_| match n.send(now, 2, 3, Reliability::Stream) {
                Fate::Arrives(at) => at,
                f => panic!("{f:?}"),
            })
            .collect();
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        assert!(arrivals[199] >= now + Duration::from_micros(base + pto), "head-of-line blocking");
        // Datagrams are still lost at the configured rate.
        let lost = (0..10_000).filter(|_| n.send(now, 4, 5, Reliability::Datagram) == Fate::Lost).count();
        assert!((1_800..2_200).contains(&lost), "{lost}");
    }

    #[test]
    fn partitions_cut_both_ways() {
        let mut n = net(Latency::Zero, 0.0, 0.0);
        let mut groups = vec![0u32; 100];
        groups[7] = 1;
        n.partition(Some(groups));
        assert_eq!(n.send(Instant::ZERO, 7, 8, Reliability::Stream), Fate::Partitioned);
        assert_eq!(n.send(Instant::ZERO, 8, 7, Reliability::Datagram), Fate::Partitioned);
        assert_eq!(n.send(Instant::ZERO, 8, 9, Reliability::Datagram), Fate::Arrives(Instant::ZERO));
        n.partition(None);
        assert_eq!(n.send(Instant::ZERO, 7, 8, Reliability::Stream), Fate::Arrives(Instant::ZERO));
    }
}
