use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::channel::{CardChannel, ChannelCaps};
use crate::error::{Error, Result};
use crate::sim::CardSimulator;

/// A card in memory: a [`CardChannel`] over a [`CardSimulator`].
///
/// Clones share the card. Removing it ([`MemoryCard::remove`]) makes every later exchange fail
/// with `TokenNotFound`; [`MemoryCard::fail_after`] removes it in the middle of the n-th next
/// exchange, the way a card pulled during a signature behaves.
#[derive(Clone)]
pub struct MemoryCard {
    sim: Arc<Mutex<Box<dyn CardSimulator>>>,
    present: Arc<AtomicBool>,
    /// Exchanges left before the card is pulled; 0 means never.
    fail_countdown: Arc<AtomicU32>,
    caps: ChannelCaps,
    exchanges: Arc<AtomicU32>,
    resets: Arc<AtomicU32>,
}

impl core::fmt::Debug for MemoryCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryCard")
            .field("present", &self.is_present())
            .finish()
    }
}

impl MemoryCard {
    /// Powers the simulator on and wraps it.
    pub fn new(mut sim: Box<dyn CardSimulator>) -> Self {
        sim.power_on();
        Self {
            sim: Arc::new(Mutex::new(sim)),
            present: Arc::new(AtomicBool::new(true)),
            fail_countdown: Arc::new(AtomicU32::new(0)),
            caps: ChannelCaps::default(),
            exchanges: Arc::new(AtomicU32::new(0)),
            resets: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Sets the channel capabilities (extended length, sizes) the card reports.
    #[must_use]
    pub fn with_caps(mut self, caps: ChannelCaps) -> Self {
        self.caps = caps;
        self
    }

    /// Pulls the card: every later exchange fails with `TokenNotFound`.
    pub fn remove(&self) {
        self.present.store(false, Ordering::Release);
    }

    /// True until the card is pulled.
    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// Pulls the card during the `n`-th exchange from now (1 = the next one): that exchange
    /// and all later ones fail with `TokenNotFound`.
    pub fn fail_after(&self, n: u32) {
        self.fail_countdown.store(n, Ordering::Release);
    }

    /// Resets the card as another program would (a warm reset behind this program's back):
    /// the simulator loses its volatile state and [`CardChannel::reset_count`] goes up.
    pub fn reset_by_another_program(&self) {
        self.with_simulator(|s| s.reset());
        self.resets.fetch_add(1, Ordering::AcqRel);
    }

    /// How many APDUs the card has answered.
    pub fn exchanges(&self) -> u32 {
        self.exchanges.load(Ordering::Acquire)
    }

    /// Runs `f` on the simulator (to inspect its state in a test).
    pub fn with_simulator<T>(&self, f: impl FnOnce(&mut dyn CardSimulator) -> T) -> T {
        let mut sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        f(sim.as_mut())
    }

    /// A new card handle on a fresh power-up of the same simulator (same keys and counters),
    /// as when the card is pulled and put back.
    pub fn reinserted(&self) -> Self {
        self.with_simulator(|s| s.reset());
        Self {
            sim: self.sim.clone(),
            present: Arc::new(AtomicBool::new(true)),
            fail_countdown: Arc::new(AtomicU32::new(0)),
            caps: self.caps,
            exchanges: Arc::new(AtomicU32::new(0)),
            resets: Arc::new(AtomicU32::new(0)),
        }
    }
}

#[async_trait]
impl CardChannel for MemoryCard {
    async fn transmit(&self, command: &[u8]) -> Result<Vec<u8>> {
        if !self.is_present() {
            return Err(Error::token_not_found("the card was removed"));
        }
        let countdown = self.fail_countdown.load(Ordering::Acquire);
        if countdown > 0 {
            self.fail_countdown.store(countdown - 1, Ordering::Release);
            if countdown == 1 {
                self.remove();
                return Err(Error::token_not_found(
                    "the card was removed during the command",
                ));
            }
        }
        self.exchanges.fetch_add(1, Ordering::AcqRel);
        let mut sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(sim.process(command))
    }

    fn caps(&self) -> ChannelCaps {
        self.caps
    }

    fn atr(&self) -> Vec<u8> {
        let sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        sim.atr()
    }

    async fn reset(&self) -> Result<()> {
        if !self.is_present() {
            return Err(Error::token_not_found("the card was removed"));
        }
        self.with_simulator(|s| s.reset());
        self.resets.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn reset_count(&self) -> u64 {
        u64::from(self.resets.load(Ordering::Acquire))
    }
}

/// A card with no application on it: it answers 6A82 (not found) to SELECT and 6D00 to
/// everything else. Every driver must answer `NotMine` for it.
#[derive(Clone, Debug, Default)]
pub struct NoCard {
    _private: (),
}

impl CardSimulator for NoCard {
    fn atr(&self) -> Vec<u8> {
        // T=1, no historical bytes: 3B 80 80 01 01 (TCK 01).
        vec![0x3B, 0x80, 0x80, 0x01, 0x01]
    }

    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        match command.get(1) {
            Some(0xA4) => vec![0x6A, 0x82],
            _ => vec![0x6D, 0x00],
        }
    }
}
