//! The interfaces simulators implement, so one simulator runs in memory (the test kit), in a
//! real pcscd (the vpcd bridge of `transport-pcsc`), behind a simulated HID device
//! (`transport-hid`) and under fault injection: [`CardSimulator`] for smart cards,
//! [`CtapHandler`] for FIDO authenticators.

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

/// Several simulated applications behind one ATR, selected by AID, as on a YubiKey or a
/// Nitrokey (PIV, OpenPGP and FIDO2 on one card).
///
/// A SELECT by DF name (`00 A4 04 ..`) goes to the application whose AID starts with the name
/// sent (so a truncated AID such as PIV's 5-byte RID selects it), or whose AID the name starts
/// with; that application becomes current and receives every later command until another
/// SELECT succeeds. A SELECT that matches nothing answers 6A82 and leaves the current
/// application as it was. Power events reach every application.
pub struct MultiApplicationCard {
    atr: Vec<u8>,
    apps: Vec<(Vec<u8>, Box<dyn CardSimulator>)>,
    current: Option<usize>,
}

impl core::fmt::Debug for MultiApplicationCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MultiApplicationCard")
            .field("applications", &self.apps.len())
            .field("current", &self.current)
            .finish()
    }
}

impl MultiApplicationCard {
    /// A card answering reset with `atr` and no application yet.
    pub fn new(atr: Vec<u8>) -> Self {
        Self {
            atr,
            apps: Vec::new(),
            current: None,
        }
    }

    /// Adds the application `sim`, selected by `aid`.
    #[must_use]
    pub fn with(mut self, aid: &[u8], sim: Box<dyn CardSimulator>) -> Self {
        self.apps.push((aid.to_vec(), sim));
        self
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        if name.is_empty() {
            return None;
        }
        self.apps
            .iter()
            .position(|(aid, _)| aid.starts_with(name) || name.starts_with(aid))
    }
}

impl CardSimulator for MultiApplicationCard {
    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn power_on(&mut self) {
        self.current = None;
        for (_, app) in &mut self.apps {
            app.power_on();
        }
    }

    fn power_off(&mut self) {
        for (_, app) in &mut self.apps {
            app.power_off();
        }
    }

    fn reset(&mut self) {
        self.current = None;
        for (_, app) in &mut self.apps {
            app.reset();
        }
    }

    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let select_by_name = matches!(command, [_, 0xA4, 0x04, ..]);
        if select_by_name {
            let name = crate::apdu::Command::decode(command)
                .map(|c| c.data.to_vec())
                .unwrap_or_default();
            let Some(index) = self.find(&name) else {
                return vec![0x6A, 0x82];
            };
            self.current = Some(index);
        }
        match self.current.and_then(|i| self.apps.get_mut(i)) {
            Some((_, app)) => app.process(command),
            // No application selected: conditions of use not satisfied.
            None => vec![0x69, 0x85],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl CardSimulator for Echo {
        fn atr(&self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn process(&mut self, _: &[u8]) -> Vec<u8> {
            vec![self.0, 0x90, 0x00]
        }
    }

    #[test]
    fn select_routes_by_aid_prefix_and_keeps_the_current_application() {
        let mut card = MultiApplicationCard::new(vec![0x3B, 0x00])
            .with(&[0xA0, 0, 0, 3, 8, 0, 0, 0x10, 0], Box::new(Echo(1)))
            .with(&[0xD2, 0x76, 0, 1, 0x24, 1], Box::new(Echo(2)));
        assert_eq!(card.process(&[0, 0xCA, 0, 0, 0]), [0x69, 0x85]);
        // Truncated PIV AID (the RID) selects PIV.
        assert_eq!(
            card.process(&[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8]),
            [1, 0x90, 0]
        );
        assert_eq!(card.process(&[0, 0xCA, 0, 0, 0]), [1, 0x90, 0]);
        // A full OpenPGP AID with serial selects OpenPGP.
        let mut select = vec![0, 0xA4, 4, 0, 8, 0xD2, 0x76, 0, 1, 0x24, 1, 3, 4];
        select.push(0);
        assert_eq!(card.process(&select), [2, 0x90, 0]);
        // Unknown AID: 6A82, current unchanged.
        assert_eq!(card.process(&[0, 0xA4, 4, 0, 2, 0xF0, 0xF0]), [0x6A, 0x82]);
        assert_eq!(card.process(&[0, 0xCA, 0, 0, 0]), [2, 0x90, 0]);
        card.power_on();
        assert_eq!(card.process(&[0, 0xCA, 0, 0, 0]), [0x69, 0x85]);
    }
}

/// The result of waiting for the user to touch a simulated authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserPresence {
    /// The user touched it.
    Confirmed,
    /// The host canceled the request (CTAPHID CANCEL, a re-initialized channel, or the device
    /// went away).
    Canceled,
    /// Nobody touched it in time.
    TimedOut,
}

/// What a [`CtapHandler`] may do while it works on a request: tell the host it is still
/// busy, and wait for the user, noticing cancellation. The transport supplies it (the
/// simulated HID device sends KEEPALIVE reports and honours CANCEL; an in-memory channel
/// answers as its test configured it).
pub trait Presence {
    /// Reports that the request is still being worked on with `status`, and handles what the
    /// host sent meanwhile. Returns `false` once the request was canceled.
    fn keepalive(&mut self, status: crate::KeepaliveStatus) -> bool;

    /// Waits for the user's touch, as the transport's test controls say.
    fn user_presence(&mut self) -> UserPresence;
}

/// The CTAP logic of a simulated FIDO authenticator, independent of how requests reach it:
/// the simulated HID device of `transport-hid` frames them as CTAPHID, the test kit's
/// in-memory channel calls it directly. Handlers answer every request and must not panic on
/// any input.
pub trait CtapHandler: Send + 'static {
    /// Answers a CTAP2 request (the command byte followed by CBOR): the CTAP status byte
    /// followed by the CBOR answer.
    fn handle_cbor(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8>;

    /// Answers a CTAP1/U2F request APDU; by default "instruction not supported" (6D00).
    /// Reached only when the device does not claim NMSG.
    fn handle_msg(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
        let _ = (request, presence);
        vec![0x6D, 0x00]
    }

    /// The host asked the device to wink.
    fn wink(&mut self) {}
}
