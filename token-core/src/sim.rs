//! The interface every simulated card implements, so one simulator runs in memory (the test
//! kit), in a real pcscd (the vpcd bridge of `transport-pcsc`) and under fault injection.

/// A simulated smart card: an APDU handler with power control, as a card reader sees it.
///
/// Simulators keep their state (keys, PINs, counters) across power cycles, like a card; what
/// a power cycle clears (the selected application, verified PINs) is theirs to clear in
/// [`CardSimulator::power_on`].
pub trait CardSimulator: Send {
    /// The answer to reset.
    fn atr(&self) -> Vec<u8>;

    /// Power was applied (cold reset): clear volatile state.
    fn power_on(&mut self) {}

    /// Power was removed.
    fn power_off(&mut self) {}

    /// A warm reset: by default a power cycle.
    fn reset(&mut self) {
        self.power_off();
        self.power_on();
    }

    /// Answers one command APDU with a response APDU (data and status word). Must never panic
    /// on any input: a malformed command gets an error status word (6700, 6A80, 6D00, ...).
    fn process(&mut self, command: &[u8]) -> Vec<u8>;
}
