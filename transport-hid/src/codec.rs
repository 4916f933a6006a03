//! The CTAPHID codec (CTAP 2.1 §11.2.4): 64-byte reports, initialization and continuation
//! packets, fragmenting a message into reports and reassembling reports into a message.
//!
//! Every decoder here is total: any 64 bytes give a packet or an error, never a panic, and the
//! reassembler never reserves more than [`MAX_PAYLOAD`] bytes whatever a packet claims.

use core::fmt;

/// The size of one HID report on a FIDO device (CTAP 2.1 §11.2.4, HID_RPT_SIZE).
pub const REPORT_LEN: usize = 64;
/// Payload bytes carried by an initialization packet: 64 − CID 4 − CMD 1 − BCNT 2.
pub const INIT_DATA_LEN: usize = REPORT_LEN - 7;
/// Payload bytes carried by a continuation packet: 64 − CID 4 − SEQ 1.
pub const CONT_DATA_LEN: usize = REPORT_LEN - 5;
/// The highest continuation sequence number (SEQ is 7 bits, 0..=127).
pub const MAX_SEQ: u8 = 0x7F;
/// The longest message CTAPHID can carry: one initialization packet and 128 continuations,
/// 57 + 128 × 59 = 7609 bytes (CTAP 2.1 §11.2.4).
pub const MAX_PAYLOAD: usize = INIT_DATA_LEN + (MAX_SEQ as usize + 1) * CONT_DATA_LEN;

/// One 64-byte HID report, as written to or read from the device (without a report ID).
pub type Report = [u8; REPORT_LEN];

/// A CTAPHID channel identifier (CTAP 2.1 §11.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(pub u32);

impl Cid {
    /// The broadcast channel, used for INIT before a channel is allocated.
    pub const BROADCAST: Cid = Cid(0xFFFF_FFFF);
    /// Channel 0 is reserved and never valid.
    pub const RESERVED: Cid = Cid(0);

    /// The channel ID as it goes on the wire (big-endian).
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// The channel ID from its wire form.
    pub const fn from_bytes(b: [u8; 4]) -> Self {
        Cid(u32::from_be_bytes(b))
    }

    /// True for channels that an authenticator may allocate (neither 0 nor broadcast).
    pub const fn is_allocatable(self) -> bool {
        self.0 != 0 && self.0 != 0xFFFF_FFFF
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

/// A CTAPHID command byte, high bit included (CTAP 2.1 §11.2.9).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cmd(u8);

impl Cmd {
    /// 0x81 PING: echo the payload.
    pub const PING: Cmd = Cmd(0x81);
    /// 0x83 MSG: a CTAP1/U2F APDU.
    pub const MSG: Cmd = Cmd(0x83);
    /// 0x84 LOCK: lock the device to this channel for up to 10 s.
    pub const LOCK: Cmd = Cmd(0x84);
    /// 0x86 INIT: allocate a channel, or resynchronize one.
    pub const INIT: Cmd = Cmd(0x86);
    /// 0x88 WINK: make the device show it is there.
    pub const WINK: Cmd = Cmd(0x88);
    /// 0x90 CBOR: a CTAP2 request.
    pub const CBOR: Cmd = Cmd(0x90);
    /// 0x91 CANCEL: abandon the pending CBOR request on this channel.
    pub const CANCEL: Cmd = Cmd(0x91);
    /// 0xBB KEEPALIVE: the authenticator is still working (status in the payload).
    pub const KEEPALIVE: Cmd = Cmd(0xBB);
    /// 0xBF ERROR: a CTAPHID error code in the payload.
    pub const ERROR: Cmd = Cmd(0xBF);

    const NAMES: [(Cmd, &'static str); 9] = [
        (Cmd::PING, "PING"),
        (Cmd::MSG, "MSG"),
        (Cmd::LOCK, "LOCK"),
        (Cmd::INIT, "INIT"),
        (Cmd::WINK, "WINK"),
        (Cmd::CBOR, "CBOR"),
        (Cmd::CANCEL, "CANCEL"),
        (Cmd::KEEPALIVE, "KEEPALIVE"),
        (Cmd::ERROR, "ERROR"),
    ];

    /// The command byte as it goes on the wire (high bit set).
    pub const fn byte(self) -> u8 {
        self.0
    }

    /// The command's name in the spec, for the commands CTAP 2.1 defines.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, n)| *n)
    }

    /// True for vendor-specific commands (0xC0..=0xFF, CTAPHID_VENDOR_FIRST..LAST).
    pub const fn is_vendor(self) -> bool {
        self.0 >= 0xC0
    }
}

impl TryFrom<u8> for Cmd {
    type Error = u8;

    /// A command byte must have its high bit set; anything else is a continuation's SEQ.
    fn try_from(b: u8) -> Result<Self, u8> {
        if b & 0x80 != 0 {
            Ok(Cmd(b))
        } else {
            Err(b)
        }
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Cmd({:#04X})", self.0),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A CTAPHID error code, the payload of an ERROR answer (CTAP 2.1 §11.2.9.1.6).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HidErrorCode(pub u8);

impl HidErrorCode {
    /// 0x01: the command is not a valid CTAPHID command.
    pub const INVALID_CMD: Self = Self(0x01);
    /// 0x02: the command has an invalid parameter.
    pub const INVALID_PAR: Self = Self(0x02);
    /// 0x03: the length (BCNT) is invalid for the command.
    pub const INVALID_LEN: Self = Self(0x03);
    /// 0x04: a continuation packet arrived out of sequence.
    pub const INVALID_SEQ: Self = Self(0x04);
    /// 0x05: the message was not completed in time.
    pub const MSG_TIMEOUT: Self = Self(0x05);
    /// 0x06: another channel is using the device; retry later.
    pub const CHANNEL_BUSY: Self = Self(0x06);
    /// 0x0A: the command needs a channel lock.
    pub const LOCK_REQUIRED: Self = Self(0x0A);
    /// 0x0B: the channel ID is not valid (not allocated, or 0).
    pub const INVALID_CHANNEL: Self = Self(0x0B);
    /// 0x7F: unspecified error.
    pub const OTHER: Self = Self(0x7F);

    /// The spec's name for the code (`ERR_INVALID_CMD`, ...), or `None` for a code it does not
    /// define.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "ERR_INVALID_CMD",
            0x02 => "ERR_INVALID_PAR",
            0x03 => "ERR_INVALID_LEN",
            0x04 => "ERR_INVALID_SEQ",
            0x05 => "ERR_MSG_TIMEOUT",
            0x06 => "ERR_CHANNEL_BUSY",
            0x0A => "ERR_LOCK_REQUIRED",
            0x0B => "ERR_INVALID_CHANNEL",
            0x7F => "ERR_OTHER",
            _ => return None,
        })
    }
}

impl fmt::Debug for HidErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({:#04X})", self.0),
            None => write!(f, "unknown CTAPHID error {:#04X}", self.0),
        }
    }
}

impl fmt::Display for HidErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The capability flags of an INIT answer (CTAP 2.1 §11.2.9.1.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u8);

impl Capabilities {
    /// 0x01 CAPABILITY_WINK: the device implements WINK.
    pub const WINK: u8 = 0x01;
    /// 0x04 CAPABILITY_CBOR: the device implements CBOR (CTAP2).
    pub const CBOR: u8 = 0x04;
    /// 0x08 CAPABILITY_NMSG: the device does *not* implement MSG (no CTAP1/U2F).
    pub const NMSG: u8 = 0x08;

    /// True when every bit of `flag` is set.
    pub const fn contains(self, flag: u8) -> bool {
        self.0 & flag == flag
    }
}

pub use token_core::KeepaliveStatus;

/// An initialization packet: CID 4, CMD 1 (high bit set), BCNT 2 (big-endian), data 57.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitPacket {
    /// The channel.
    pub cid: Cid,
    /// The command.
    pub cmd: Cmd,
    /// The length of the whole message payload, over all packets.
    pub bcnt: u16,
    /// The first (up to) 57 bytes of the payload, zero-padded.
    pub data: [u8; INIT_DATA_LEN],
}

/// A continuation packet: CID 4, SEQ 1 (0..=127), data 59.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContPacket {
    /// The channel.
    pub cid: Cid,
    /// The sequence number, 0..=127.
    pub seq: u8,
    /// The next (up to) 59 bytes of the payload, zero-padded.
    pub data: [u8; CONT_DATA_LEN],
}

/// One decoded report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// The first packet of a message.
    Init(InitPacket),
    /// A following packet.
    Cont(ContPacket),
}

impl Packet {
    /// Decodes one report. Total: bit 7 of byte 4 tells the two kinds apart, and every other
    /// field may hold any value (BCNT is checked by the [`Reassembler`], not here).
    pub fn parse(report: &Report) -> Packet {
        let [c0, c1, c2, c3, b4, rest @ ..] = *report;
        let cid = Cid::from_bytes([c0, c1, c2, c3]);
        match Cmd::try_from(b4) {
            Ok(cmd) => {
                let [h, l, data @ ..] = rest;
                Packet::Init(InitPacket {
                    cid,
                    cmd,
                    bcnt: u16::from_be_bytes([h, l]),
                    data,
                })
            }
            Err(seq) => Packet::Cont(ContPacket {
                cid,
                seq,
                data: rest,
            }),
        }
    }

    /// The channel the packet is on.
    pub fn cid(&self) -> Cid {
        match self {
            Packet::Init(p) => p.cid,
            Packet::Cont(p) => p.cid,
        }
    }
}

impl InitPacket {
    /// Encodes the packet as a report.
    pub fn to_report(&self) -> Report {
        let mut r = [0u8; REPORT_LEN];
        r[..4].copy_from_slice(&self.cid.to_bytes());
        r[4] = self.cmd.byte();
        r[5..7].copy_from_slice(&self.bcnt.to_be_bytes());
        r[7..].copy_from_slice(&self.data);
        r
    }
}

impl ContPacket {
    /// Encodes the packet as a report. SEQ keeps only its low 7 bits: a SEQ over 127 would be
    /// read back as a command.
    pub fn to_report(&self) -> Report {
        let mut r = [0u8; REPORT_LEN];
        r[..4].copy_from_slice(&self.cid.to_bytes());
        r[4] = self.seq & MAX_SEQ;
        r[5..].copy_from_slice(&self.data);
        r
    }
}

/// What went wrong framing or reassembling a CTAPHID message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A payload to send is longer than [`MAX_PAYLOAD`].
    PayloadTooLong {
        /// Its length.
        len: usize,
    },
    /// An initialization packet announced more than [`MAX_PAYLOAD`] bytes.
    LengthTooLarge {
        /// The BCNT it announced.
        bcnt: u16,
    },
    /// A continuation packet arrived with a SEQ other than the next one.
    UnexpectedSeq {
        /// The SEQ that was due.
        expected: u8,
        /// The SEQ that came.
        got: u8,
    },
    /// A continuation packet arrived while no message was being received.
    ContinuationWithoutInit {
        /// Its channel.
        cid: Cid,
        /// Its SEQ.
        seq: u8,
    },
    /// An initialization packet arrived on the same channel before the message in progress
    /// was complete. The partial message is dropped.
    InitInterrupted {
        /// The channel.
        cid: Cid,
        /// The new packet's command.
        cmd: Cmd,
    },
    /// A packet arrived from another channel while a message was in progress (only for a
    /// reassembler that listens on every channel, as an authenticator's does).
    ChannelBusy {
        /// The channel the message in progress is on.
        busy: Cid,
        /// The channel the packet came from.
        from: Cid,
    },
}

impl FrameError {
    /// The CTAPHID error an authenticator answers for this (CTAP 2.1 §11.2.9.1.6).
    pub fn hid_error(self) -> HidErrorCode {
        match self {
            FrameError::PayloadTooLong { .. } | FrameError::LengthTooLarge { .. } => {
                HidErrorCode::INVALID_LEN
            }
            FrameError::UnexpectedSeq { .. }
            | FrameError::ContinuationWithoutInit { .. }
            | FrameError::InitInterrupted { .. } => HidErrorCode::INVALID_SEQ,
            FrameError::ChannelBusy { .. } => HidErrorCode::CHANNEL_BUSY,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::PayloadTooLong { len } => {
                write!(f, "payload of {len} bytes exceeds CTAPHID's {MAX_PAYLOAD}")
            }
            FrameError::LengthTooLarge { bcnt } => {
                write!(f, "BCNT {bcnt} exceeds CTAPHID's {MAX_PAYLOAD}")
            }
            FrameError::UnexpectedSeq { expected, got } => {
                write!(f, "continuation SEQ {got} where {expected} was due")
            }
            FrameError::ContinuationWithoutInit { cid, seq } => {
                write!(
                    f,
                    "continuation SEQ {seq} on {cid} without an initialization packet"
                )
            }
            FrameError::InitInterrupted { cid, cmd } => {
                write!(f, "{cmd} on {cid} interrupted an incomplete message")
            }
            FrameError::ChannelBusy { busy, from } => {
                write!(
                    f,
                    "packet from {from} while a message on {busy} is in progress"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits `payload` into the reports of one CTAPHID message on `cid` (CTAP 2.1 §11.2.4).
///
/// # Errors
/// [`FrameError::PayloadTooLong`] when `payload` exceeds [`MAX_PAYLOAD`].
pub fn fragment(cid: Cid, cmd: Cmd, payload: &[u8]) -> Result<Vec<Report>, FrameError> {
    let bcnt = u16::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_PAYLOAD)
        .ok_or(FrameError::PayloadTooLong { len: payload.len() })?;
    let (first, rest) = payload.split_at(payload.len().min(INIT_DATA_LEN));
    let mut init = InitPacket {
        cid,
        cmd,
        bcnt,
        data: [0; INIT_DATA_LEN],
    };
    init.data[..first.len()].copy_from_slice(first);
    let mut out = Vec::with_capacity(1 + rest.len().div_ceil(CONT_DATA_LEN));
    out.push(init.to_report());
    for (seq, chunk) in (0u8..=MAX_SEQ).zip(rest.chunks(CONT_DATA_LEN)) {
        let mut cont = ContPacket {
            cid,
            seq,
            data: [0; CONT_DATA_LEN],
        };
        cont.data[..chunk.len()].copy_from_slice(chunk);
        out.push(cont.to_report());
    }
    Ok(out)
}

/// A whole CTAPHID message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The channel it came on.
    pub cid: Cid,
    /// Its command.
    pub cmd: Cmd,
    /// Its payload, exactly BCNT bytes.
    pub payload: Vec<u8>,
}

/// What one report did to a [`Reassembler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The report belongs to another channel and was ignored.
    Ignored,
    /// Part of a message was received; more reports are due.
    Incomplete,
    /// A message is complete.
    Complete(Message),
}

#[derive(Debug)]
struct Partial {
    cid: Cid,
    cmd: Cmd,
    bcnt: usize,
    next_seq: u8,
    buf: Vec<u8>,
}

/// Turns reports back into messages, checking the framing rules of CTAP 2.1 §11.2.4.
///
/// A client's reassembler listens on one channel and ignores the others, as the spec's client
/// side does ([`Reassembler::for_channel`]); an authenticator's listens on every channel and
/// reports packets from a second channel while a message is in progress
/// ([`FrameError::ChannelBusy`]). After any error, the message in progress is dropped (except
/// for `ChannelBusy`, which leaves it alone).
#[derive(Debug, Default)]
pub struct Reassembler {
    channel: Option<Cid>,
    partial: Option<Partial>,
}

impl Reassembler {
    /// A reassembler that takes messages from every channel, one at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reassembler that takes only messages on `cid`, ignoring every other channel.
    pub fn for_channel(cid: Cid) -> Self {
        Self {
            channel: Some(cid),
            partial: None,
        }
    }

    /// The channel whose message is in progress, if any.
    pub fn in_progress(&self) -> Option<Cid> {
        self.partial.as_ref().map(|p| p.cid)
    }

    /// Drops the message in progress.
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// Takes one report.
    ///
    /// # Errors
    /// A [`FrameError`] naming the framing rule the report broke.
    pub fn push(&mut self, report: &Report) -> Result<Step, FrameError> {
        let packet = Packet::parse(report);
        let cid = packet.cid();
        if self.channel.is_some_and(|c| c != cid) {
            return Ok(Step::Ignored);
        }
        if let Some(p) = &self.partial {
            if p.cid != cid {
                return Err(FrameError::ChannelBusy {
                    busy: p.cid,
                    from: cid,
                });
            }
        }
        match packet {
            Packet::Init(init) => {
                if self.partial.take().is_some() {
                    return Err(FrameError::InitInterrupted { cid, cmd: init.cmd });
                }
                let bcnt = usize::from(init.bcnt);
                if bcnt > MAX_PAYLOAD {
                    return Err(FrameError::LengthTooLarge { bcnt: init.bcnt });
                }
                if bcnt <= INIT_DATA_LEN {
                    return Ok(Step::Complete(Message {
                        cid,
                        cmd: init.cmd,
                        payload: init.data[..bcnt].to_vec(),
                    }));
                }
                let mut buf = Vec::with_capacity(bcnt);
                buf.extend_from_slice(&init.data);
                self.partial = Some(Partial {
                    cid,
                    cmd: init.cmd,
                    bcnt,
                    next_seq: 0,
                    buf,
                });
                Ok(Step::Incomplete)
            }
            Packet::Cont(cont) => {
                let Some(mut p) = self.partial.take() else {
                    return Err(FrameError::ContinuationWithoutInit { cid, seq: cont.seq });
                };
                if cont.seq != p.next_seq {
                    return Err(FrameError::UnexpectedSeq {
                        expected: p.next_seq,
                        got: cont.seq,
                    });
                }
                let take = (p.bcnt - p.buf.len()).min(CONT_DATA_LEN);
                p.buf.extend_from_slice(&cont.data[..take]);
                if p.buf.len() == p.bcnt {
                    return Ok(Step::Complete(Message {
                        cid,
                        cmd: p.cmd,
                        payload: p.buf,
                    }));
                }
                // BCNT ≤ MAX_PAYLOAD means the message ends by SEQ 127, so this never wraps.
                p.next_seq = p.next_seq.saturating_add(1);
                self.partial = Some(p);
                Ok(Step::Incomplete)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CID: Cid = Cid(0x0102_0304);

    fn reassemble(reports: &[Report]) -> Result<Message, FrameError> {
        let mut r = Reassembler::for_channel(CID);
        for (i, rep) in reports.iter().enumerate() {
            match r.push(rep)? {
                Step::Complete(m) => {
                    assert_eq!(i + 1, reports.len(), "complete before the last report");
                    return Ok(m);
                }
                Step::Incomplete | Step::Ignored => {}
            }
        }
        panic!("message never completed");
    }

    #[test]
    fn constants_match_the_spec() {
        assert_eq!(MAX_PAYLOAD, 7609);
        assert_eq!(INIT_DATA_LEN, 57);
        assert_eq!(CONT_DATA_LEN, 59);
        assert_eq!(Cmd::CBOR.byte(), 0x90);
        assert_eq!(Cmd::try_from(0x10), Err(0x10));
        assert_eq!(Cmd::PING.name(), Some("PING"));
        assert_eq!(Cmd::try_from(0xC1).map(Cmd::is_vendor), Ok(true));
        assert_eq!(HidErrorCode::CHANNEL_BUSY.name(), Some("ERR_CHANNEL_BUSY"));
        assert_eq!(HidErrorCode(0x42).name(), None);
        assert!(Capabilities(0x05).contains(Capabilities::CBOR));
        assert!(!Capabilities(0x05).contains(Capabilities::NMSG));
    }

    // CTAP 2.1 §11.2.9.1.3: an INIT request on the broadcast channel with an 8-byte nonce.
    #[test]
    fn init_request_layout() {
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        let reports = fragment(Cid::BROADCAST, Cmd::INIT, &nonce).unwrap_or_default();
        assert_eq!(reports.len(), 1);
        let r = reports[0];
        assert_eq!(&r[..7], &[0xFF, 0xFF, 0xFF, 0xFF, 0x86, 0x00, 0x08]);
        assert_eq!(&r[7..15], &nonce);
        assert!(r[15..].iter().all(|&b| b == 0));
    }

    #[test]
    fn packet_counts_at_the_boundaries() {
        for (len, n) in [
            (0, 1),
            (57, 1),
            (58, 2),
            (116, 2),
            (117, 3),
            (MAX_PAYLOAD, 129),
        ] {
            let reports = fragment(CID, Cmd::CBOR, &vec![7; len]).unwrap_or_default();
            assert_eq!(reports.len(), n, "length {len}");
        }
        assert_eq!(
            fragment(CID, Cmd::CBOR, &vec![0; MAX_PAYLOAD + 1]),
            Err(FrameError::PayloadTooLong {
                len: MAX_PAYLOAD + 1
            })
        );
    }

    #[test]
    fn round_trip_every_length() {
        for len in 0..=MAX_PAYLOAD {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let reports = fragment(CID, Cmd::PING, &payload).unwrap_or_default();
            let m = reassemble(&reports).unwrap_or_else(|e| panic!("length {len}: {e}"));
            assert_eq!(m.payload, payload, "length {len}");
            assert_eq!(m.cmd, Cmd::PING);
        }
    }

    #[test]
    fn framing_errors() {
        let reports = fragment(CID, Cmd::CBOR, &[9; 200]).unwrap_or_default();
        // Out of order.
        let mut r = Reassembler::for_channel(CID);
        assert_eq!(r.push(&reports[0]), Ok(Step::Incomplete));
        assert_eq!(
            r.push(&reports[2]),
            Err(FrameError::UnexpectedSeq {
                expected: 0,
                got: 1
            })
        );
        // Continuation without init.
        assert_eq!(
            r.push(&reports[1]),
            Err(FrameError::ContinuationWithoutInit { cid: CID, seq: 0 })
        );
        // A new INIT in the middle.
        assert_eq!(r.push(&reports[0]), Ok(Step::Incomplete));
        assert_eq!(
            r.push(&reports[0]),
            Err(FrameError::InitInterrupted {
                cid: CID,
                cmd: Cmd::CBOR
            })
        );
        assert_eq!(r.in_progress(), None);
        // BCNT over the maximum.
        let mut big = reports[0];
        big[5..7].copy_from_slice(&((MAX_PAYLOAD + 1) as u16).to_be_bytes());
        assert_eq!(
            r.push(&big),
            Err(FrameError::LengthTooLarge {
                bcnt: (MAX_PAYLOAD + 1) as u16
            })
        );
        // Other channels are ignored by a client ...
        let other = fragment(Cid(9), Cmd::CBOR, &[1; 3]).unwrap_or_default();
        assert_eq!(r.push(&other[0]), Ok(Step::Ignored));
        // ... and reported as busy by an authenticator.
        let mut any = Reassembler::new();
        assert_eq!(any.push(&reports[0]), Ok(Step::Incomplete));
        assert_eq!(
            any.push(&other[0]),
            Err(FrameError::ChannelBusy {
                busy: CID,
                from: Cid(9)
            })
        );
        assert_eq!(any.in_progress(), Some(CID));
        assert_eq!(
            FrameError::LengthTooLarge { bcnt: 0 }.hid_error(),
            HidErrorCode::INVALID_LEN
        );
    }

    proptest! {
        #[test]
        fn arbitrary_reports_never_panic(reports in prop::collection::vec(prop::array::uniform32(any::<u8>()), 1..40), cid_sel in any::<bool>()) {
            let mut client = Reassembler::for_channel(CID);
            let mut any = Reassembler::new();
            for half in reports.chunks(2) {
                let mut rep = [0u8; REPORT_LEN];
                rep[..32].copy_from_slice(&half[0]);
                if let Some(h) = half.get(1) { rep[32..].copy_from_slice(h); }
                if cid_sel { rep[..4].copy_from_slice(&CID.to_bytes()); }
                let p = Packet::parse(&rep);
                match p {
                    Packet::Init(i) => prop_assert_eq!(i.to_report(), rep),
                    Packet::Cont(c) => prop_assert_eq!(c.to_report(), rep),
                }
                for r in [&mut client, &mut any] {
                    if let Ok(Step::Complete(m)) = r.push(&rep) {
                        prop_assert!(m.payload.len() <= MAX_PAYLOAD);
                    }
                    if let Some(p) = &r.partial {
                        prop_assert!(p.buf.capacity() <= MAX_PAYLOAD);
                    }
                }
            }
        }

        #[test]
        fn round_trip(payload in prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD), cmd in 0x80u8..=0xFF, cid in any::<u32>()) {
            let cid = Cid(cid);
            let cmd = Cmd::try_from(cmd).unwrap_or(Cmd::PING);
            let reports = fragment(cid, cmd, &payload).unwrap_or_default();
            let mut r = Reassembler::for_channel(cid);
            let mut out = None;
            for rep in &reports {
                if let Step::Complete(m) = r.push(rep).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    out = Some(m);
                }
            }
            prop_assert_eq!(out, Some(Message { cid, cmd, payload }));
        }
    }
}
