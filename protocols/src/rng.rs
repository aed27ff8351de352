//! Seeded randomness: the one RNG type every machine owns, and the seed derivation that lets
//! one number reproduce a whole run (PROTOCOLS.md §9.3).
//!
//! **Generator: PCG64 (`rand_pcg::Pcg64`, the 128-bit LCG with XSL-RR output).** Chosen over
//! ChaCha8, which PROTOCOLS.md §9.3 names, for its state: 32 bytes against about 320 for a
//! buffered ChaCha8 block, and the simulator holds several machines per node at 10^5 nodes.
//! Its output is a fixed function of the seed, specified by the PCG paper and kept
//! value-stable by `rand_pcg` across platforms and releases. Its statistical quality is ample
//! for peer choice and coin tosses; nothing here needs cryptographic unpredictability (keys
//! come from the OS elsewhere).
//!
//! **Draws are ours.** Every distribution (uniform integer, unit float, exponential, shuffle,
//! k distinct of n) is written here on top of `next_u64`, so that no upgrade of the `rand`
//! crates can change what a seed produces.
//!
//! **Seeds are derived, not chained.** A [`Seed`] is 32 bytes. Children are SHA-256 of the
//! parent and a label, so adding a machine or a new kind of draw never shifts another stream.

use rand_core::{RngCore, SeedableRng};
use rand_pcg::Pcg64;
use sha2::{Digest, Sha256};

/// 32 bytes from which an [`Rng`] (or a tree of them) is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seed([u8; 32]);

impl Seed {
    /// A seed with exactly these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Seed(bytes)
    }

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The simulator's root derivation (PROTOCOLS.md §9.3):
    /// SHA-256("hearsay-sim" ‖ seed as u64 LE ‖ label ‖ a as u64 LE ‖ b as u64 LE).
    pub fn derive(seed: u64, label: &str, a: u64, b: u64) -> Seed {
        let digest = Sha256::new()
            .chain_update(b"hearsay-sim")
            .chain_update(seed.to_le_bytes())
            .chain_update(label.as_bytes())
            .chain_update(a.to_le_bytes())
            .chain_update(b.to_le_bytes())
            .finalize();
        Seed(digest.into())
    }

    /// A labelled child: SHA-256(self ‖ label). Machines of a node use
    /// `node_seed.child("machine/<name>")`.
    pub fn child(&self, label: &str) -> Seed {
        let digest = Sha256::new().chain_update(self.0).chain_update(label.as_bytes()).finalize();
        Seed(digest.into())
    }

    /// The seed for the machine called `name` of a node: `child("machine/" + name)`.
    pub fn machine(&self, name: &str) -> Seed {
        let digest = Sha256::new()
            .chain_update(self.0)
            .chain_update(b"machine/")
            .chain_update(name.as_bytes())
            .finalize();
        Seed(digest.into())
    }
}

/// The deterministic random number generator every machine owns.
#[derive(Clone, Debug)]
pub struct Rng(Pcg64);

impl Rng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn from_seed(seed: Seed) -> Self {
        Rng(Pcg64::from_seed(seed.0))
    }

    /// 64 uniformly random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (Lemire's multiply-and-reject: exact, no modulo bias).
    /// `n == 0` gives 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform index in `0..len`. `len == 0` gives 0; callers check emptiness first.
    #[inline]
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in [0, 1), 53 bits of precision.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    #[inline]
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// True with probability `p` (clamped to [0, 1]); draws exactly once either way.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Exponentially distributed with the given mean (inverse transform).
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// A standard normal draw (Box–Muller, one of the pair; two uniforms per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle, in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// `k` distinct indices of `0..len` (all of them if `k >= len`), in draw order: a
    /// partial Fisher–Yates shuffle of `0..len` drawn front to back (PROTOCOLS.md §0.3).
    /// Memory is O(k), so it is cheap on large lists.
    pub fn distinct(&mut self, len: usize, k: usize) -> Vec<usize> {
        let k = k.min(len);
        // Sparse view of the permuted array: slots that differ from the identity.
        let mut moved: Vec<(usize, usize)> = Vec::with_capacity(2 * k);
        let read = |moved: &Vec<(usize, usize)>, i: usize| {
            moved.iter().rev().find(|(slot, _)| *slot == i).map_or(i, |(_, v)| *v)
        };
        let mut out = Vec::with_capacity(k);
        for i in 0..k {
            let j = i + self.index(len - i);
            let (vi, vj) = (read(&moved, i), read(&moved, j));
            moved.push((j, vi));
            moved.push((i, vj));
            out.push(vj);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(n: u64) -> Rng {
        Rng::from_seed(Seed::derive(n, "test", 0, 0))
    }

    #[test]
    fn output_is_pinned_to_the_seed() {
        // If this changes, every recorded simulator result changes with it.
        let mut a = rng(1);
        let mut b = rng(1);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, (0..4).map(|_| rng(2).next_u64()).collect::<Vec<_>>());
        let seed = Seed::from_bytes([7; 32]);
        assert_eq!(Rng::from_seed(seed).next_u64(), 0x8f62_ac27_d2c9_5aea, "PCG64 stream moved");
    }

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut r = rng(3);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            let x = r.below(7);
            counts[x as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn distinct_matches_a_dense_partial_fisher_yates() {
        for len in [1usize, 2, 5, 40] {
            for k in [0usize, 1, 3, 40, 50] {
                let mut a = rng(len as u64 * 100 + k as u64);
                let mut b = a.clone();
                let sparse = a.distinct(len, k);
                let mut dense: Vec<usize> = (0..len).collect();
                let mut out = Vec::new();
                for i in 0..k.min(len) {
                    let j = i + b.index(len - i);
                    dense.swap(i, j);
                    out.push(dense[i]);
                }
                assert_eq!(sparse, out, "len {len} k {k}");
                let mut sorted = sparse.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), k.min(len));
            }
        }
    }

    #[test]
    fn unit_and_exp_have_the_right_means() {
        let mut r = rng(4);
        let n = 100_000;
        let u: f64 = (0..n).map(|_| r.unit()).sum::<f64>() / n as f64;
        let e: f64 = (0..n).map(|_| r.exp(2.0)).sum::<f64>() / n as f64;
        let z: f64 = (0..n).map(|_| r.normal()).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.005, "{u}");
        assert!((e - 2.0).abs() < 0.03, "{e}");
        assert!(z.abs() < 0.015, "{z}");
    }

    #[test]
    fn children_are_independent_of_siblings() {
        let s = Seed::derive(9, "node", 0, 3);
        assert_ne!(s.machine("anti-entropy"), s.machine("rumor"));
        assert_eq!(s.machine("anti-entropy"), s.machine("anti-entropy"));
        assert_ne!(s.child("a"), s.child("b"));
    }
}
