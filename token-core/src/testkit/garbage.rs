use crate::sim::CardSimulator;

/// How [`GarbageCard`] mangles an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mangle {
    /// Cut the data short (status word kept).
    Truncate,
    /// Flip bits in one data byte: tags and lengths go wrong (status word kept).
    Flip,
    /// Claim a huge length in the first TLV (status word kept).
    HugeLength,
    /// Add bytes after the data (status word kept).
    Append,
    /// Replace the status word.
    StatusWord,
    /// Answer fewer than two bytes.
    Short,
}

/// A card that answers garbage: it wraps any [`CardSimulator`] and mangles one answer in
/// `every` (chosen by a seeded generator, so a failing case can be replayed): truncated data,
/// flipped bytes, absurd TLV lengths, trailing bytes, and (unless [`GarbageCard::data_only`])
/// random status words and answers shorter than a status word.
///
/// A driver must meet all of it with an error (`CorruptedData` or `CommunicationError` when
/// only the data is mangled), never a panic; drivers run it under proptest.
pub struct GarbageCard {
    inner: Box<dyn CardSimulator>,
    state: u64,
    every: u64,
    data_only: bool,
}

impl core::fmt::Debug for GarbageCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GarbageCard")
            .field("every", &self.every)
            .field("data_only", &self.data_only)
            .finish_non_exhaustive()
    }
}

impl GarbageCard {
    /// Mangles one answer of `inner` in `every` (1 = all of them; `u64::MAX` practically
    /// none), from the generator seed `seed`.
    pub fn new(inner: Box<dyn CardSimulator>, seed: u64, every: u64) -> Self {
        Self {
            inner,
            // xorshift needs a non-zero state.
            state: seed.max(1),
            every: every.max(1),
            data_only: false,
        }
    }

    /// Keeps status words intact: only the data is mangled.
    #[must_use]
    pub fn data_only(mut self) -> Self {
        self.data_only = true;
        self
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl CardSimulator for GarbageCard {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }

    fn power_on(&mut self) {
        self.inner.power_on();
    }

    fn power_off(&mut self) {
        self.inner.power_off();
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let answer = self.inner.process(command);
        if !self.next().is_multiple_of(self.every) || answer.len() < 2 {
            return answer;
        }
        const DATA: [Mangle; 4] = [
            Mangle::Truncate,
            Mangle::Flip,
            Mangle::HugeLength,
            Mangle::Append,
        ];
        const ALL: [Mangle; 6] = [
            Mangle::Truncate,
            Mangle::Flip,
            Mangle::HugeLength,
            Mangle::Append,
            Mangle::StatusWord,
            Mangle::Short,
        ];
        let kinds: &[Mangle] = if self.data_only { &DATA } else { &ALL };
        let pick = (self.next() % kinds.len() as u64) as usize;
        let kind = kinds.get(pick).copied().unwrap_or(Mangle::Append);
        let (data, sw) = answer.split_at(answer.len() - 2);
        let mut data = data.to_vec();
        let x = self.next();
        match kind {
            Mangle::Truncate if !data.is_empty() => data.truncate((x as usize) % data.len()),
            Mangle::Flip if !data.is_empty() => {
                let i = (x as usize) % data.len();
                if let Some(b) = data.get_mut(i) {
                    *b ^= (x >> 32) as u8 | 1;
                }
            }
            Mangle::HugeLength if data.len() > 1 => {
                if let Some(b) = data.get_mut(1) {
                    *b = 0x84;
                }
            }
            Mangle::Append => data.extend_from_slice(&x.to_be_bytes()),
            Mangle::StatusWord => {
                data.extend_from_slice(&(x as u16).to_be_bytes());
                return data;
            }
            Mangle::Short => return vec![0x90; (x % 2) as usize],
            _ => {}
        }
        data.extend_from_slice(sw);
        data
    }
}
