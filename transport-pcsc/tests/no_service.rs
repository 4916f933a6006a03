//! Without a PC/SC service the provider refuses to start at once, and a hub that links it runs
//! on without it. Points libpcsclite at a socket that does not exist, so this runs anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use token_core::{ErrorCode, Hub, Underlying};
use transport_pcsc::PcscProvider;

#[test]
fn no_pcscd_is_an_error_at_once_and_the_hub_runs_without_it() {
    // libpcsclite honours this (Debian's pcscd does not, which is why the stack tests use a
    // mount namespace). Nothing else in this process talks to PC/SC.
    std::env::set_var(
        "PCSCLITE_CSOCK_NAME",
        "/nonexistent/tokenkit-test/pcscd.comm",
    );
    let started = Instant::now();
    let e = PcscProvider::new().unwrap_err();
    println!("{e} (in {:?})", started.elapsed());
    assert_eq!(e.code(), ErrorCode::CommunicationError, "{e}");
    assert!(matches!(e.underlying(), Underlying::Pcsc(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited for a service"
    );

    // The registered provider fails to create; the hub logs it and starts.
    assert!(token_core::registered_slot_providers()
        .iter()
        .any(|r| r.id == PcscProvider::ID));
    let hub = Hub::builder().start().unwrap();
    assert!(hub.provider(PcscProvider::ID).is_none());
    assert!(hub.slot_manager().slots().is_empty());
}
