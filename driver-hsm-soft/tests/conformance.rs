//! token-core's driver conformance suite, on a persistent soft token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use driver_hsm_soft::SoftTokenDriver;
use token_core::testkit::conformance::Suite;
use token_core::KeyType;

#[test]
fn soft_token_passes_the_conformance_suite() {
    let f = common::Fixture::new();
    {
        let mut s = f.login();
        common::generate(&mut s, KeyType::EcP256, "p256");
        common::generate(&mut s, KeyType::Ed25519, "ed25519");
    }
    let config = driver_hsm_soft::persistent_config(f.dir.path(), &f.id).unwrap();
    let report = Suite::persistent(Arc::new(SoftTokenDriver), config)
        .user_pin(common::PIN)
        .min_items(2)
        .run();
    println!("{report}");
    report.assert_passed();
    // The suite's wrong PIN cost a try, and the right one gave it back.
    assert_eq!(f.tries(), 3);
}
