//! Linking the crate registers the driver and the provider; the provider uses the default
//! store. One test only: it sets environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use driver_hsm_soft::SoftTokenProvider;
use token_core::{registered_drivers, registered_slot_providers, Hub};

#[test]
fn registered_driver_and_provider_use_the_default_store() {
    assert!(registered_drivers()
        .iter()
        .any(|r| r.id == "soft" && r.priority == 0));
    assert!(registered_slot_providers()
        .iter()
        .any(|r| r.id == "hsm-soft"));

    // The default store: TOKENKIT_HOME, else XDG_DATA_HOME/tokenkit, else ~/.local/share/tokenkit.
    std::env::remove_var("TOKENKIT_HOME");
    std::env::set_var("XDG_DATA_HOME", "/xdg/data");
    std::env::set_var("HOME", "/home/u");
    assert_eq!(
        driver_hsm_soft::default_store().unwrap(),
        PathBuf::from("/xdg/data/tokenkit")
    );
    std::env::set_var("XDG_DATA_HOME", "relative/is/ignored");
    assert_eq!(
        driver_hsm_soft::default_store().unwrap(),
        PathBuf::from("/home/u/.local/share/tokenkit")
    );
    std::env::remove_var("XDG_DATA_HOME");
    assert_eq!(
        driver_hsm_soft::default_store().unwrap(),
        PathBuf::from("/home/u/.local/share/tokenkit")
    );

    let home = tempfile::tempdir().unwrap();
    std::env::set_var("TOKENKIT_HOME", home.path());
    assert_eq!(driver_hsm_soft::default_store().unwrap(), home.path());
    let id = driver_hsm_soft::create_with(home.path(), &common::options("registered")).unwrap();

    let hub = Hub::builder().start().unwrap();
    assert_eq!(hub.token_ids(), vec![id.clone()]);
    let provider = hub.provider("hsm-soft").unwrap();
    let manager = provider
        .as_any()
        .downcast_ref::<SoftTokenProvider>()
        .unwrap();
    assert_eq!(manager.store(), home.path());
    manager.delete_token(&id).unwrap();
    hub.settle();
    assert!(hub.token_ids().is_empty());
}
