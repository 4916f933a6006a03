//! Property tests for token-core's codecs: arbitrary bytes never panic a reader, and what a
//! writer encodes reads back the same.

// Test helpers outside `#[test]` functions may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::collection::vec;
use proptest::prelude::*;
use token_core::{
    pem_to_der, Atr, CertificateInfo, Command, CompactTlv, Response, SimpleTlv, StatusWord,
    SubjectPublicKeyInfo, Tag, Tlv, TlvBuilder, TlvIter,
};

const CERT: &[u8] = include_bytes!("data/p256-selfsigned.der");

/// Walks every object and, recursively, every value that parses as BER-TLV.
fn walk(data: &[u8], depth: usize) -> usize {
    let mut n = 0;
    for item in TlvIter::new(data).skip_padding() {
        let Ok(tlv) = item else { break };
        n += 1;
        let _ = tlv.tag.class();
        let _ = tlv.tag.number();
        assert_eq!(Tag::from_bytes(&tlv.tag.to_bytes()).ok(), Some(tlv.tag));
        assert!(tlv.raw().ends_with(tlv.value));
        if depth < 64 {
            n += walk(tlv.value, depth + 1);
        }
    }
    for item in TlvIter::new(data) {
        if item.is_err() {
            break;
        }
    }
    n
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Primitive(Tag, Vec<u8>),
    Constructed(Tag, Vec<Node>),
}

/// A valid tag with the constructed bit as asked.
fn tag(constructed: bool) -> impl Strategy<Value = Tag> {
    let cons = if constructed { 0x20u8 } else { 0 };
    prop_oneof![
        (0u8..4, 1u8..0x1F).prop_map(move |(class, n)| u32::from((class << 6) | cons | n)),
        (0u8..4, 0u8..0x80).prop_map(move |(class, b)| u32::from_be_bytes([
            0,
            0,
            (class << 6) | cons | 0x1F,
            b
        ])),
        (0u8..4, 0x81u8..=0xFF, 0u8..0x80).prop_map(move |(class, b1, b2)| {
            u32::from_be_bytes([0, (class << 6) | cons | 0x1F, b1, b2])
        }),
        (0u8..4, 0x81u8..=0xFF, 0x80u8..=0xFF, 0u8..0x80).prop_map(move |(class, b1, b2, b3)| {
            u32::from_be_bytes([(class << 6) | cons | 0x1F, b1, b2, b3])
        }),
    ]
    .prop_map(|v: u32| Tag::try_from(v).expect("generated a valid tag"))
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (tag(false), vec(any::<u8>(), 0..300)).prop_map(|(t, v)| Node::Primitive(t, v));
    leaf.prop_recursive(4, 64, 6, |inner| {
        (tag(true), vec(inner, 0..6)).prop_map(|(t, c)| Node::Constructed(t, c))
    })
}

fn build(b: &mut TlvBuilder, node: &Node) {
    match node {
        Node::Primitive(t, v) => {
            b.put(*t, v);
        }
        Node::Constructed(t, children) => {
            b.constructed(*t, |b| {
                for c in children {
                    build(b, c);
                }
            });
        }
    }
}

fn read(data: &[u8]) -> Vec<Node> {
    TlvIter::new(data)
        .map(|item| {
            let tlv = item.expect("builder output parses");
            if tlv.tag.is_constructed() {
                Node::Constructed(tlv.tag, read(tlv.value))
            } else {
                Node::Primitive(tlv.tag, tlv.value.to_vec())
            }
        })
        .collect()
}

fn command() -> impl Strategy<Value = Command> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        prop_oneof![vec(any::<u8>(), 0..=255), vec(any::<u8>(), 256..1200)],
        prop_oneof![
            Just(None),
            (1usize..=256).prop_map(Some),
            (1usize..=65_536).prop_map(Some),
            Just(Some(65_536)),
        ],
    )
        .prop_map(|(cla, ins, p1, p2, data, le)| {
            Command::new(cla, ins, p1, p2)
                .with_data(data)
                .with_le_opt(le)
        })
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 16 == 0 {
            out.push('\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 0x3F) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn readers_never_panic(data in vec(any::<u8>(), 0..2048)) {
        let _ = Command::decode(&data);
        let _ = Response::decode(&data);
        let _ = Tlv::parse(&data);
        walk(&data, 0);
        let _ = SimpleTlv::iter(&data).count();
        let _ = CompactTlv::iter(&data).count();
        if let Ok(atr) = Atr::parse(&data) {
            let _ = atr.historical_records();
            let _ = atr.supports_command_chaining();
            let _ = atr.supports_extended_length();
            prop_assert_eq!(atr.as_bytes(), &data[..]);
        }
        if let Ok(info) = CertificateInfo::parse(&data) {
            let _ = info.subject_common_name();
            let _ = info.issuer_common_name();
            prop_assert!(info.subject_public_key_info().is_ok());
        }
        let _ = SubjectPublicKeyInfo::parse(&data);
        let text = String::from_utf8_lossy(&data);
        let _ = pem_to_der(&text, "CERTIFICATE");
        let wrapped = format!("-----BEGIN X-----\n{text}\n-----END X-----\n");
        let _ = pem_to_der(&wrapped, "X");
    }

    #[test]
    fn atr_shaped_input_never_panics(t0 in any::<u8>(), rest in vec(any::<u8>(), 0..40)) {
        let mut data = vec![0x3B, t0];
        data.extend(rest);
        if let Ok(atr) = Atr::parse(&data) {
            let _ = atr.card_capabilities();
            prop_assert!(atr.historical_bytes().len() <= 15);
        }
    }

    #[test]
    fn mutated_certificates_never_panic(i in 0usize..CERT.len(), b in any::<u8>()) {
        let mut der = CERT.to_vec();
        der[i] = b;
        if let Ok(info) = CertificateInfo::parse(&der) {
            let _ = info.subject_common_name();
            let _ = info.issuer_common_name();
        }
    }

    #[test]
    fn command_round_trips_in_both_forms(cmd in command()) {
        if !cmd.needs_extended() {
            let short = cmd.encode_short().unwrap();
            prop_assert_eq!(Command::decode(&short).unwrap(), cmd.clone());
        } else {
            prop_assert!(cmd.encode_short().is_err());
        }
        let extended = cmd.encode_extended().unwrap();
        prop_assert_eq!(Command::decode(&extended).unwrap(), cmd);
    }

    #[test]
    fn response_round_trips(data in vec(any::<u8>(), 0..600), sw in any::<u16>()) {
        let r = Response::new(data, StatusWord(sw));
        prop_assert_eq!(Response::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn tlv_tree_round_trips(tree in vec(node(), 0..5)) {
        let mut b = TlvBuilder::new();
        for n in &tree {
            build(&mut b, n);
        }
        let bytes = b.finish();
        prop_assert_eq!(read(&bytes), tree);
    }

    #[test]
    fn simple_tlv_round_trips(records in vec((1u8..=0xFE, vec(any::<u8>(), 0..400)), 0..8)) {
        let mut out = Vec::new();
        for (t, v) in &records {
            SimpleTlv::encode(*t, v, &mut out).unwrap();
        }
        let back: Vec<(u8, Vec<u8>)> = SimpleTlv::iter(&out)
            .map(|r| r.map(|r| (r.tag, r.value.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, records);
    }

    #[test]
    fn compact_tlv_round_trips(records in vec((0u8..=15, vec(any::<u8>(), 0..=15)), 0..10)) {
        let mut out = Vec::new();
        for (t, v) in &records {
            CompactTlv::encode(*t, v, &mut out).unwrap();
        }
        let back: Vec<(u8, Vec<u8>)> = CompactTlv::iter(&out)
            .map(|r| r.map(|r| (r.tag, r.value.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, records);
    }

    #[test]
    fn spki_round_trips(
        oid in vec(any::<u8>(), 1..12),
        params in proptest::option::of(vec(any::<u8>(), 0..20)),
        key in vec(any::<u8>(), 0..600),
    ) {
        let params = params.map(|p| {
            let mut b = TlvBuilder::new();
            b.put(Tag::new(0x04), &p);
            b.finish()
        });
        let der = SubjectPublicKeyInfo::encode(&oid, params.as_deref(), &key);
        let spki = SubjectPublicKeyInfo::parse(&der).unwrap();
        prop_assert_eq!(spki.algorithm_oid, &oid[..]);
        prop_assert_eq!(spki.parameters, params.as_deref());
        prop_assert_eq!(spki.public_key, &key[..]);
        prop_assert_eq!(spki.to_der(), der);
    }

    #[test]
    fn pem_round_trips(data in vec(any::<u8>(), 0..1000)) {
        let pem = format!(
            "header text\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64(&data)
        );
        prop_assert_eq!(pem_to_der(&pem, "CERTIFICATE").unwrap(), data);
    }
}
