//! `make chaos`: a seeded fault-injection run of the whole stack (its own
//! databases, broker and the three services on free ports). Clients drive
//! the REST API as careful shoppers do — every write under an
//! Idempotency-Key, retried with the same key until it gets a definite
//! answer, some answers deliberately lost — while [`faults`] kill -9 and
//! restart the services, freeze the broker and PostgreSQL, restart
//! PostgreSQL, make relays publish again, rewind a consumer group to offset
//! 0 and inject poison messages. Then everything quiesces and [`checks`]
//! verify from the API and both databases what must hold.

pub mod checks;
pub mod clients;
pub mod faults;

/// A small seeded generator (SplitMix64): the same seed gives the same run
/// of faults and client choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}
