//! The store reader allocates at most a small multiple of its input, whatever the bytes say:
//! every length read is checked against what is left. Measured with a counting allocator, in a
//! test binary of its own so no other test allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use driver_hsm_soft::TokenFile;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn with_header(body: &[u8], claimed_len: u32) -> Vec<u8> {
    let mut file = b"\x89TKSOFT\n\x00\x01".to_vec();
    file.extend_from_slice(&claimed_len.to_be_bytes());
    file.extend_from_slice(body);
    let sum = Sha256::digest(&file);
    file.extend_from_slice(&sum);
    file
}

fn allocated_by_parse(bytes: &[u8]) -> usize {
    let region = Region::new(GLOBAL);
    let r = TokenFile::parse(bytes);
    let used = region.change().bytes_allocated;
    drop(r);
    used
}

/// The bound: eight times the input plus room for an error message. (Record vectors grow by
/// doubling, and a decoded record is about as large as its smallest encoding.)
fn bound(input: usize) -> usize {
    8 * input + 4096
}

#[test]
fn parsing_allocates_within_a_multiple_of_the_input() {
    // Hostile lengths: a body claimed at 4 GiB, a TLV claiming 2^32 - 1 bytes.
    let hostile = [
        with_header(&[], u32::MAX),
        with_header(&[0x80, 0x84, 0xFF, 0xFF, 0xFF, 0xFF], 6),
        with_header(&[0xA5, 0x84, 0x7F, 0xFF, 0xFF, 0xFF, 0x80], 7),
    ];
    for h in &hostile {
        let used = allocated_by_parse(h);
        assert!(
            used <= bound(h.len()),
            "{used} bytes for a {}-byte input",
            h.len()
        );
    }
    // A real file with many records, whole and cut short.
    let dir = tempfile::tempdir().unwrap();
    let options = driver_hsm_soft::CreateOptions::new("many", "123456".into(), "12345678".into())
        .kdf(driver_hsm_soft::KdfParams::insecure_fast());
    let id = driver_hsm_soft::create_with(dir.path(), &options).unwrap();
    let path = driver_hsm_soft::token_path(dir.path(), &id).unwrap();
    let mut s = driver_hsm_soft::SoftToken::open(&path)
        .unwrap()
        .session()
        .unwrap();
    token_core::block_on(async {
        s.verify_pin(token_core::PinKind::User, &"123456".into())
            .await
            .unwrap();
        for i in 0..40 {
            let spec = token_core::KeySpec {
                key_type: token_core::KeyType::Ed25519,
                label: format!("{i}"),
                slot: None,
                usage: None,
            };
            s.generate_key(&spec).await.unwrap();
        }
    });
    let good = std::fs::read(&path).unwrap();
    let used = allocated_by_parse(&good);
    assert!(TokenFile::parse(&good).is_ok());
    assert!(
        used <= bound(good.len()),
        "{used} bytes for a {}-byte file",
        good.len()
    );
    let body = &good[14..good.len() - 32];
    for cut in (0..body.len()).step_by(7) {
        let file = with_header(&body[..cut], cut as u32);
        let used = allocated_by_parse(&file);
        assert!(
            used <= bound(file.len()),
            "{used} bytes for a {}-byte input",
            file.len()
        );
    }

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(3000));
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..2000), |body| {
            let file = with_header(&body, body.len() as u32);
            let used = allocated_by_parse(&file);
            prop_assert!(
                used <= bound(file.len()),
                "{} bytes for {} input",
                used,
                file.len()
            );
            let used = allocated_by_parse(&body);
            prop_assert!(used <= bound(body.len()));
            Ok(())
        })
        .unwrap();
}
