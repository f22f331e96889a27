//! The OS random source behind the domain's `Entropy` port.

use sync_domain::ports::{Entropy, EntropyUnavailable};

/// Randomness from the operating system (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyUnavailable> {
        getrandom::fill(buf).map_err(|_| EntropyUnavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_stay_in_the_unit_interval() {
        let draws: Vec<f64> = (0..100).map(|_| OsEntropy.unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let distinct: std::collections::HashSet<u64> = draws.iter().map(|d| d.to_bits()).collect();
        assert!(distinct.len() > 90);
    }
}
