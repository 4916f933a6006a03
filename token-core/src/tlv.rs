//! Tag-length-value codecs: BER-TLV, SIMPLE-TLV and COMPACT-TLV (ISO 7816-4 §5.2, §8.1.1).
//!
//! * [`Tlv`], [`TlvIter`] and [`TlvBuilder`] read and write BER-TLV data objects, the subset of
//!   X.690 that smart cards use: tags of 1 to 4 bytes, definite lengths of up to 4 length bytes.
//!   Reading is zero-copy: a [`Tlv`] borrows its value from the input.
//! * [`SimpleTlv`] reads and writes SIMPLE-TLV (1-byte tag, 1- or 3-byte length).
//! * [`CompactTlv`] reads and writes COMPACT-TLV (tag and length in one byte), as found in the
//!   historical bytes of an ATR.
//!
//! Every reader is total: malformed input gives [`ErrorCode::CorruptedData`](crate::ErrorCode),
//! never a panic, and no reader allocates on the strength of a length read from the input.
//!
//! ```
//! use token_core::{Tag, Tlv, TlvBuilder};
//!
//! // A PIV certificate container: 53 { 70 cert, 71 certinfo }.
//! let mut b = TlvBuilder::new();
//! b.constructed(Tag::new(0x53), |b| {
//!     b.put(Tag::new(0x70), &[0x30, 0x00]);
//!     b.put(Tag::new(0x71), &[0x00]);
//! });
//! let bytes = b.finish();
//! let cert = Tlv::find_path(&bytes, &[Tag::new(0x53), Tag::new(0x70)]).unwrap().unwrap();
//! assert_eq!(cert.value, &[0x30, 0x00]);
//! ```

use core::fmt;

use crate::error::{Error, Result};

/// A panic-free cursor over device data: every read checks the remaining length.
///
/// The one place byte walks happen; the codecs of this crate read through it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The next `n` bytes, or `None` (and nothing consumed) if fewer remain.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, tail) = self.buf.split_first()?;
        self.buf = tail;
        Some(b)
    }

    /// The next two bytes, big-endian.
    pub(crate) fn u16_be(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    /// What is left.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn corrupted(what: &'static str) -> Error {
    Error::corrupted(what)
}

// ---------------------------------------------------------------------------------------------
// BER-TLV tags
// ---------------------------------------------------------------------------------------------

/// The class of a BER-TLV tag: bits 8 and 7 of its first byte (X.690 §8.1.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagClass {
    /// 00: universal (ASN.1 types such as SEQUENCE 30, INTEGER 02).
    Universal,
    /// 01: application (ISO 7816 interindustry data objects such as 5F xx, 7F xx, 4F, 53).
    Application,
    /// 10: context-specific (80, A0, ...).
    ContextSpecific,
    /// 11: private (C0, DF xx, FE, ...).
    Private,
}

/// A BER-TLV tag of 1 to 4 bytes, held as the big-endian number its bytes spell (`0x5FC102`).
///
/// A first byte whose low five bits are all set (`xx11111`) announces further tag bytes; each
/// further byte but the last has bit 8 set (ISO 7816-4 §5.2.2.1, X.690 §8.1.2.4). Tag numbers
/// below 31 written in the long form (ICAO's `5F01`) are accepted, since cards use them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u32);

/// Checks the bytes of a tag; returns its number of bytes.
const fn tag_check(v: u32) -> Option<usize> {
    let n = if v <= 0xFF {
        1
    } else if v <= 0xFFFF {
        2
    } else if v <= 0xFF_FFFF {
        3
    } else {
        4
    };
    let bytes = v.to_be_bytes();
    let first = bytes[4 - n];
    if n == 1 {
        // 00 is padding or end-of-contents, never a data object; xx1F needs more bytes.
        return if first == 0 || first & 0x1F == 0x1F {
            None
        } else {
            Some(1)
        };
    }
    if first & 0x1F != 0x1F || bytes[5 - n] == 0x80 {
        return None;
    }
    let mut i = 5 - n;
    while i < 4 {
        // Bit 8 says another byte follows: set on every byte but the last.
        let continues = bytes[i] & 0x80 != 0;
        if continues == (i == 3) {
            return None;
        }
        i += 1;
    }
    Some(n)
}

impl Tag {
    /// The tag whose bytes spell `v` big-endian (`Tag::new(0x5FC102)`), for constants.
    ///
    /// # Panics
    /// If `v` is not a valid tag. Meant for `const` items, where that is a compile error; use
    /// [`Tag::try_from`] or [`Tag::from_bytes`] for values that come from elsewhere.
    pub const fn new(v: u32) -> Self {
        match tag_check(v) {
            Some(_) => Self(v),
            None => panic!("not a valid BER-TLV tag"),
        }
    }

    /// Reads a tag from exactly the bytes given.
    ///
    /// # Errors
    /// `BadParameter` if the bytes are not one complete, valid tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        match read_tag(&mut r) {
            Ok(t) if r.is_empty() => Ok(t),
            _ => Err(Error::bad_parameter("not a valid BER-TLV tag")),
        }
    }

    /// The tag's bytes as one big-endian number (`0x5FC102`).
    pub const fn value(self) -> u32 {
        self.0
    }

    /// How many bytes the tag takes: 1 to 4.
    pub const fn encoded_len(self) -> usize {
        match tag_check(self.0) {
            Some(n) => n,
            None => 4,
        }
    }

    /// The tag's bytes, in order.
    pub fn to_bytes(self) -> Vec<u8> {
        let n = self.encoded_len();
        self.0.to_be_bytes().iter().skip(4 - n).copied().collect()
    }

    fn first_byte(self) -> u8 {
        let n = self.encoded_len();
        self.0.to_be_bytes().get(4 - n).copied().unwrap_or(0)
    }

    /// The tag's class, from bits 8 and 7 of its first byte.
    pub fn class(self) -> TagClass {
        match self.first_byte() >> 6 {
            0 => TagClass::Universal,
            1 => TagClass::Application,
            2 => TagClass::ContextSpecific,
            _ => TagClass::Private,
        }
    }

    /// True when bit 6 of the first byte says the value is itself a sequence of data objects.
    ///
    /// Cards do not always say so: PIV's container tag 53 is primitive yet holds BER-TLV, so
    /// [`Tlv::children`] does not insist on this bit.
    pub fn is_constructed(self) -> bool {
        self.first_byte() & 0x20 != 0
    }

    /// The tag number within its class (X.690 §8.1.2): the low five bits of a one-byte tag,
    /// the base-128 number of the following bytes otherwise.
    pub fn number(self) -> u32 {
        let bytes = self.to_bytes();
        match bytes.split_first() {
            Some((first, [])) => u32::from(first & 0x1F),
            Some((_, rest)) => rest.iter().fold(0, |n, b| (n << 7) | u32::from(b & 0x7F)),
            None => 0,
        }
    }
}

impl TryFrom<u32> for Tag {
    type Error = Error;

    fn try_from(v: u32) -> Result<Self> {
        match tag_check(v) {
            Some(_) => Ok(Self(v)),
            None => Err(Error::bad_parameter("not a valid BER-TLV tag")),
        }
    }
}

impl From<Tag> for u32 {
    fn from(t: Tag) -> Self {
        t.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.encoded_len() * 2;
        write!(f, "{:0width$X}", self.0)
    }
}

fn read_tag(r: &mut Reader<'_>) -> Result<Tag> {
    let first = r.u8().ok_or_else(|| corrupted("BER-TLV: missing tag"))?;
    if first == 0 {
        return Err(corrupted("BER-TLV: tag 00 (padding or end-of-contents)"));
    }
    let mut v = u32::from(first);
    if first & 0x1F != 0x1F {
        return Ok(Tag(v));
    }
    for i in 1..4 {
        let b = r.u8().ok_or_else(|| corrupted("BER-TLV: tag cut short"))?;
        if i == 1 && b == 0x80 {
            return Err(corrupted("BER-TLV: tag number not minimally encoded"));
        }
        v = (v << 8) | u32::from(b);
        if b & 0x80 == 0 {
            return Ok(Tag(v));
        }
    }
    Err(corrupted("BER-TLV: tag longer than 4 bytes"))
}

fn read_length(r: &mut Reader<'_>) -> Result<usize> {
    let first = r.u8().ok_or_else(|| corrupted("BER-TLV: missing length"))?;
    match first {
        0..=0x7F => Ok(usize::from(first)),
        0x80 => Err(corrupted("BER-TLV: indefinite length")),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7F);
            let bytes = r
                .take(n)
                .ok_or_else(|| corrupted("BER-TLV: length cut short"))?;
            let v = bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b));
            usize::try_from(v).map_err(|_| corrupted("BER-TLV: length too large"))
        }
        _ => Err(corrupted("BER-TLV: more than 4 length bytes")),
    }
}

fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Fits in 7 bits: the short form.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let significant = bytes.get(skip..).unwrap_or(&[]);
    // At most size_of::<usize>() bytes, so the count fits the low 7 bits.
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

// ---------------------------------------------------------------------------------------------
// BER-TLV reader
// ---------------------------------------------------------------------------------------------

/// One BER-TLV data object, borrowed from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag.
    pub tag: Tag,
    /// The value field, exactly as long as the length said.
    pub value: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Reads one data object from the front of `input`; returns it and the bytes after it.
    ///
    /// # Errors
    /// `CorruptedData` if the tag or length is malformed, the length is indefinite (80) or has
    /// more than 4 bytes, or the value runs past the end of `input`.
    pub fn parse(input: &'a [u8]) -> Result<(Tlv<'a>, &'a [u8])> {
        let mut r = Reader::new(input);
        let tag = read_tag(&mut r)?;
        let len = read_length(&mut r)?;
        let value = r
            .take(len)
            .ok_or_else(|| corrupted("BER-TLV: value runs past the end of the data"))?;
        let rest = r.rest();
        let raw = input
            .get(..input.len() - rest.len())
            .ok_or_else(|| corrupted("BER-TLV"))?;
        Ok((Tlv { tag, value, raw }, rest))
    }

    /// Reads `input` as exactly one data object, with nothing after it.
    ///
    /// # Errors
    /// As [`Tlv::parse`], and `CorruptedData` if bytes follow the object.
    pub fn parse_exact(input: &'a [u8]) -> Result<Tlv<'a>> {
        match Tlv::parse(input)? {
            (tlv, []) => Ok(tlv),
            _ => Err(corrupted("BER-TLV: bytes after the data object")),
        }
    }

    /// The whole encoding of this object: tag, length and value.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The data objects inside the value.
    ///
    /// The constructed bit of the tag is not checked (PIV's 53 container is tagged primitive
    /// but holds BER-TLV); the iterator reports malformed content when walked.
    pub fn children(&self) -> TlvIter<'a> {
        TlvIter::new(self.value)
    }

    /// The first data object tagged `tag` directly inside the value.
    ///
    /// # Errors
    /// `CorruptedData` if the value is malformed before `tag` is found.
    pub fn child(&self, tag: Tag) -> Result<Option<Tlv<'a>>> {
        self.children().find_tag(tag)
    }

    /// The first data object tagged `tag` in the sequence `input`.
    ///
    /// # Errors
    /// `CorruptedData` if `input` is malformed before `tag` is found.
    pub fn find(input: &'a [u8], tag: Tag) -> Result<Option<Tlv<'a>>> {
        TlvIter::new(input).find_tag(tag)
    }

    /// Follows `path` down nested data objects: the first tag in `input`, the second inside
    /// its value, and so on. An empty path finds nothing.
    ///
    /// # Errors
    /// `CorruptedData` if some level is malformed before the wanted tag is found.
    pub fn find_path(input: &'a [u8], path: &[Tag]) -> Result<Option<Tlv<'a>>> {
        let Some((&first, rest)) = path.split_first() else {
            return Ok(None);
        };
        let mut current = match Tlv::find(input, first)? {
            Some(t) => t,
            None => return Ok(None),
        };
        for &tag in rest {
            current = match current.child(tag)? {
                Some(t) => t,
                None => return Ok(None),
            };
        }
        Ok(Some(current))
    }
}

/// An iterator over a sequence of BER-TLV data objects, yielding each or the first error.
///
/// After an error it yields nothing more. Padding bytes 00 and FF between objects are an error
/// unless asked for with [`TlvIter::skip_padding`].
#[derive(Clone, Debug)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
    skip_padding: bool,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    /// An iterator over the data objects in `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            rest: input,
            skip_padding: false,
            failed: false,
        }
    }

    /// Skips 00 and FF bytes before, between and after objects, as ISO 7816-4 §5.2.2 allows
    /// in some files (for example an erased record area).
    #[must_use]
    pub fn skip_padding(mut self) -> Self {
        self.skip_padding = true;
        self
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// The first object tagged `tag`, reading no further than needed.
    ///
    /// # Errors
    /// `CorruptedData` if the sequence is malformed before `tag` is found.
    pub fn find_tag(self, tag: Tag) -> Result<Option<Tlv<'a>>> {
        for item in self {
            let tlv = item?;
            if tlv.tag == tag {
                return Ok(Some(tlv));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.skip_padding {
            let n = self
                .rest
                .iter()
                .take_while(|&&b| b == 0x00 || b == 0xFF)
                .count();
            self.rest = self.rest.get(n..).unwrap_or(&[]);
        }
        if self.rest.is_empty() {
            return None;
        }
        match Tlv::parse(self.rest) {
            Ok((tlv, rest)) => {
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for TlvIter<'_> {}

// ---------------------------------------------------------------------------------------------
// BER-TLV writer
// ---------------------------------------------------------------------------------------------

/// Writes BER-TLV data objects with minimal lengths, nesting constructed values.
///
/// ```
/// use token_core::{Tag, TlvBuilder};
///
/// // PIV GENERATE ASYMMETRIC KEY PAIR control template: AC { 80 11 } for ECC P-256.
/// let mut b = TlvBuilder::new();
/// b.constructed(Tag::new(0xAC), |b| {
///     b.put(Tag::new(0x80), &[0x11]);
/// });
/// assert_eq!(b.finish(), [0xAC, 0x03, 0x80, 0x01, 0x11]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlvBuilder {
    buf: Vec<u8>,
}

impl TlvBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a data object `tag` with `value`.
    ///
    /// Lengths are written in the shortest form; one of 2^32 bytes or more takes more than
    /// the 4 length bytes readers accept.
    pub fn put(&mut self, tag: Tag, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&tag.to_bytes());
        write_length(&mut self.buf, value.len());
        self.buf.extend_from_slice(value);
        self
    }

    /// Appends a data object `tag` whose value is what `build` writes into a fresh builder.
    pub fn constructed(&mut self, tag: Tag, build: impl FnOnce(&mut TlvBuilder)) -> &mut Self {
        let mut inner = TlvBuilder::new();
        build(&mut inner);
        self.put(tag, &inner.buf)
    }

    /// Appends bytes that are already encoded (a data object read elsewhere, for instance).
    pub fn put_raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded data objects.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

// ---------------------------------------------------------------------------------------------
// SIMPLE-TLV
// ---------------------------------------------------------------------------------------------

/// One SIMPLE-TLV data object (ISO 7816-4 §5.2.1): a tag 01 to FE, a length of one byte
/// (00 to FE) or FF followed by two bytes (0 to 65535), and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimpleTlv<'a> {
    /// The tag, 01 to FE.
    pub tag: u8,
    /// The value.
    pub value: &'a [u8],
}

impl<'a> SimpleTlv<'a> {
    /// Reads one object from the front of `input`; returns it and the bytes after it.
    ///
    /// # Errors
    /// `CorruptedData` for tag 00 or FF, a cut-short length, or a value past the end.
    pub fn parse(input: &'a [u8]) -> Result<(SimpleTlv<'a>, &'a [u8])> {
        let mut r = Reader::new(input);
        let tag = r.u8().ok_or_else(|| corrupted("SIMPLE-TLV: missing tag"))?;
        if tag == 0x00 || tag == 0xFF {
            return Err(corrupted("SIMPLE-TLV: invalid tag 00 or FF"));
        }
        let len = match r.u8() {
            Some(0xFF) => r.u16_be().map(usize::from),
            other => other.map(usize::from),
        }
        .ok_or_else(|| corrupted("SIMPLE-TLV: length cut short"))?;
        let value = r
            .take(len)
            .ok_or_else(|| corrupted("SIMPLE-TLV: value runs past the end of the data"))?;
        Ok((SimpleTlv { tag, value }, r.rest()))
    }

    /// An iterator over the objects in `input`.
    pub fn iter(input: &'a [u8]) -> SimpleTlvIter<'a> {
        SimpleTlvIter {
            rest: input,
            failed: false,
        }
    }

    /// Appends the encoding of `tag` and `value` to `out`, with the shortest length.
    ///
    /// # Errors
    /// `BadParameter` for tag 00 or FF or a value longer than 65535 bytes.
    pub fn encode(tag: u8, value: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if tag == 0x00 || tag == 0xFF {
            return Err(Error::bad_parameter(
                "SIMPLE-TLV: tag 00 and FF are invalid",
            ));
        }
        let len = u16::try_from(value.len())
            .map_err(|_| Error::bad_parameter("SIMPLE-TLV: value longer than 65535 bytes"))?;
        out.push(tag);
        match u8::try_from(len) {
            Ok(short) if short != 0xFF => out.push(short),
            _ => {
                out.push(0xFF);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(value);
        Ok(())
    }
}

/// An iterator over SIMPLE-TLV objects, yielding each or the first error, then nothing.
#[derive(Clone, Debug)]
pub struct SimpleTlvIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for SimpleTlvIter<'a> {
    type Item = Result<SimpleTlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match SimpleTlv::parse(self.rest) {
            Ok((tlv, rest)) => {
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for SimpleTlvIter<'_> {}

// ---------------------------------------------------------------------------------------------
// COMPACT-TLV
// ---------------------------------------------------------------------------------------------

/// One COMPACT-TLV data object (ISO 7816-4 §8.1.1.2): one byte with the tag in the high nibble
/// and the length (0 to 15) in the low nibble, then the value. Historical bytes use it: `73 xx
/// xx xx` is the card capabilities, tag 7, three bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactTlv<'a> {
    /// The tag, 0 to 15.
    pub tag: u8,
    /// The value, 0 to 15 bytes.
    pub value: &'a [u8],
}

impl<'a> CompactTlv<'a> {
    /// Reads one object from the front of `input`; returns it and the bytes after it.
    ///
    /// # Errors
    /// `CorruptedData` if `input` is empty or the value runs past its end.
    pub fn parse(input: &'a [u8]) -> Result<(CompactTlv<'a>, &'a [u8])> {
        let mut r = Reader::new(input);
        let b = r
            .u8()
            .ok_or_else(|| corrupted("COMPACT-TLV: missing tag"))?;
        let value = r
            .take(usize::from(b & 0x0F))
            .ok_or_else(|| corrupted("COMPACT-TLV: value runs past the end of the data"))?;
        Ok((CompactTlv { tag: b >> 4, value }, r.rest()))
    }

    /// An iterator over the objects in `input`.
    pub fn iter(input: &'a [u8]) -> CompactTlvIter<'a> {
        CompactTlvIter {
            rest: input,
            failed: false,
        }
    }

    /// Appends the encoding of `tag` and `value` to `out`.
    ///
    /// # Errors
    /// `BadParameter` for a tag above 15 or a value longer than 15 bytes.
    pub fn encode(tag: u8, value: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if tag > 0x0F {
            return Err(Error::bad_parameter("COMPACT-TLV: tag above 15"));
        }
        let len = u8::try_from(value.len())
            .ok()
            .filter(|&l| l <= 0x0F)
            .ok_or_else(|| Error::bad_parameter("COMPACT-TLV: value longer than 15 bytes"))?;
        out.push((tag << 4) | len);
        out.extend_from_slice(value);
        Ok(())
    }
}

/// An iterator over COMPACT-TLV objects, yielding each or the first error, then nothing.
#[derive(Clone, Debug)]
pub struct CompactTlvIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for CompactTlvIter<'a> {
    type Item = Result<CompactTlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match CompactTlv::parse(self.rest) {
            Ok((tlv, rest)) => {
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for CompactTlvIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn tags_of_every_size() {
        assert_eq!(Tag::new(0x5C).encoded_len(), 1);
        assert_eq!(Tag::new(0x7F49).encoded_len(), 2);
        assert_eq!(Tag::new(0x5FC102).encoded_len(), 3);
        assert_eq!(Tag::new(0x5FC102).to_bytes(), [0x5F, 0xC1, 0x02]);
        assert_eq!(Tag::new(0xDF_8F_8F_01).encoded_len(), 4);
        assert_eq!(Tag::new(0x5FC102).class(), TagClass::Application);
        assert!(!Tag::new(0x5FC102).is_constructed());
        assert!(Tag::new(0x7F49).is_constructed());
        assert_eq!(Tag::new(0x7F49).number(), 0x49);
        assert_eq!(Tag::new(0x5FC102).number(), (0x41 << 7) | 2);
        assert_eq!(Tag::new(0x30).class(), TagClass::Universal);
        assert_eq!(Tag::new(0x30).number(), 16);
        assert_eq!(Tag::new(0x81).class(), TagClass::ContextSpecific);
        assert_eq!(Tag::new(0xDF1F).class(), TagClass::Private);
        assert_eq!(Tag::new(0x5FC102).to_string(), "5FC102");
        assert_eq!(Tag::from_bytes(&[0x5F, 0x2D]).unwrap(), Tag::new(0x5F2D));

        for bad in [
            0x00, 0x1F, 0x5F, 0x5F80, 0x5FC1, 0x5F0102, 0x5FC1C1C1, 0x01_00,
        ] {
            assert!(Tag::try_from(bad).is_err(), "{bad:X}");
        }
        assert!(Tag::from_bytes(&[0x5F, 0xC1]).is_err());
        assert!(Tag::from_bytes(&[0x5C, 0x00]).is_err());
    }

    #[test]
    fn piv_get_data_request() {
        // SP 800-73-4: GET DATA data field for the CHUID.
        let data = hex("5C 03 5F C1 02");
        let (tlv, rest) = Tlv::parse(&data).unwrap();
        assert!(rest.is_empty());
        assert_eq!(tlv.tag, Tag::new(0x5C));
        assert_eq!(tlv.value, &[0x5F, 0xC1, 0x02]);
        assert_eq!(tlv.raw(), &data[..]);
    }

    #[test]
    fn long_form_lengths() {
        let mut v = vec![0x53, 0x82, 0x01, 0x00];
        v.extend(std::iter::repeat_n(0xAA, 256));
        let (tlv, rest) = Tlv::parse(&v).unwrap();
        assert_eq!(tlv.value.len(), 256);
        assert!(rest.is_empty());

        // Non-minimal long form is read (cards write it), the builder writes minimal.
        let (tlv, _) = Tlv::parse(&[0x80, 0x81, 0x01, 0x42]).unwrap();
        assert_eq!(tlv.value, &[0x42]);
        let mut b = TlvBuilder::new();
        b.put(Tag::new(0x80), &[0x42]);
        assert_eq!(b.finish(), [0x80, 0x01, 0x42]);

        let mut b = TlvBuilder::new();
        b.put(Tag::new(0x53), &[0; 0x80]);
        assert_eq!(b.as_bytes().get(..3).unwrap(), [0x53, 0x81, 0x80]);
        let mut b = TlvBuilder::new();
        b.put(Tag::new(0x53), &[0; 0x1_0000]);
        assert_eq!(
            b.as_bytes().get(..5).unwrap(),
            [0x53, 0x83, 0x01, 0x00, 0x00]
        );
    }

    #[test]
    fn malformed_lengths_are_corrupted_data() {
        for bad in [
            &[0x30, 0x80, 0x00, 0x00][..], // indefinite
            &[0x30, 0x85, 0, 0, 0, 0, 1],  // five length bytes
            &[0x30, 0x82, 0x01],           // length cut short
            &[0x30, 0x03, 0x01, 0x02],     // value past the end
            &[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
            &[0x5F],       // tag cut short
            &[0x5F, 0xC1], // tag cut short
            &[0x30],       // no length
            &[0x00, 0x00], // padding is not a tag
        ] {
            let e = Tlv::parse(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::CorruptedData, "{bad:02X?}");
        }
    }

    #[test]
    fn padding_only_when_asked() {
        let data = hex("00 FF 80 01 01 00 00 81 00 FF");
        let strict: Vec<_> = TlvIter::new(&data).collect();
        assert_eq!(strict.len(), 1);
        assert!(strict[0].is_err());

        let tags: Vec<_> = TlvIter::new(&data)
            .skip_padding()
            .map(|t| t.unwrap().tag)
            .collect();
        assert_eq!(tags, [Tag::new(0x80), Tag::new(0x81)]);
    }

    #[test]
    fn nested_find_path() {
        // OpenPGP application related data: 6E { 4F aid, 73 { C0 caps, C4 pw status } }.
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x6E), |b| {
            b.put(
                Tag::new(0x4F),
                &hex("D2 76 00 01 24 01 03 04 00 06 12 34 56 78 00 00"),
            );
            b.put(Tag::new(0x5F52), &hex("00 73 00 00 E0 05 90 00"));
            b.constructed(Tag::new(0x73), |b| {
                b.put(Tag::new(0xC0), &hex("7D 00 0B FE 08 00 00 FF 00 00"));
                b.put(Tag::new(0xC4), &hex("00 7F 7F 7F 03 00 03"));
            });
        });
        let bytes = b.finish();
        let pw = Tlv::find_path(&bytes, &[Tag::new(0x6E), Tag::new(0x73), Tag::new(0xC4)])
            .unwrap()
            .unwrap();
        assert_eq!(pw.value, hex("00 7F 7F 7F 03 00 03"));
        assert!(Tlv::find_path(&bytes, &[Tag::new(0x6E), Tag::new(0x65)])
            .unwrap()
            .is_none());
        assert!(Tlv::find_path(&bytes, &[]).unwrap().is_none());
        let outer = Tlv::parse_exact(&bytes).unwrap();
        assert_eq!(outer.children().count(), 3);
        assert!(outer.child(Tag::new(0x4F)).unwrap().is_some());
    }

    #[test]
    fn simple_tlv_lengths() {
        let mut out = Vec::new();
        SimpleTlv::encode(0x01, &[0xAB; 3], &mut out).unwrap();
        SimpleTlv::encode(0x02, &[0xCD; 254], &mut out).unwrap();
        SimpleTlv::encode(0x03, &[0xEF; 255], &mut out).unwrap();
        assert_eq!(out.get(..5).unwrap(), [0x01, 0x03, 0xAB, 0xAB, 0xAB]);
        assert_eq!(out.get(5..7).unwrap(), [0x02, 0xFE]);
        assert_eq!(out.get(261..265).unwrap(), [0x03, 0xFF, 0x00, 0xFF]);
        let recs: Vec<_> = SimpleTlv::iter(&out).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].value.len(), 255);
        assert!(SimpleTlv::encode(0xFF, &[], &mut out).is_err());
        assert!(SimpleTlv::encode(0x01, &vec![0; 65536], &mut out).is_err());
        assert!(SimpleTlv::parse(&[0x00, 0x00]).is_err());
        assert!(SimpleTlv::parse(&[0x01, 0xFF, 0x01]).is_err());
        assert!(SimpleTlv::parse(&[0x01, 0x02, 0x01]).is_err());
    }

    #[test]
    fn compact_tlv_records() {
        // YubiKey 5 historical bytes after the category indicator 80.
        let data = hex("73 C0 21 C0 57 59 75 62 69 4B 65 79");
        let recs: Vec<_> = CompactTlv::iter(&data).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].tag, 7);
        assert_eq!(recs[0].value, [0xC0, 0x21, 0xC0]);
        assert_eq!(recs[1].tag, 5);
        assert_eq!(recs[1].value, b"YubiKey");
        let mut out = Vec::new();
        for r in &recs {
            CompactTlv::encode(r.tag, r.value, &mut out).unwrap();
        }
        assert_eq!(out, data);
        assert!(CompactTlv::encode(16, &[], &mut out).is_err());
        assert!(CompactTlv::encode(1, &[0; 16], &mut out).is_err());
        assert!(CompactTlv::parse(&[0x73, 0x00]).is_err());
    }

    #[test]
    fn reader_never_reads_past_its_slice() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(4), None);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.u16_be(), Some(0x0102));
        assert_eq!(r.u16_be(), None);
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.u8(), None);
        assert!(r.is_empty());
    }
}
