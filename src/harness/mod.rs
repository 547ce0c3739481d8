//! What the demo and the bench share: the world they run in (both simulators on loopback
//! ports, seeded with the same generated records, and clients for them) and the statistics
//! both report. Neither imports the other.

pub mod world;

/// The world could not be set up (a simulator, a client, the seed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The value at percentile `p` (0–100) of `sorted`, nearest rank; 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
