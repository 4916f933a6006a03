//! Registration by linking: a driver or transport crate submits itself with
//! [`register_driver!`](crate::register_driver) or
//! [`register_slot_provider!`](crate::register_slot_provider), and every binary that links the
//! crate has it. token-core never names a concrete driver or transport.

use std::sync::Arc;

use crate::driver::TokenDriver;
use crate::error::Result;
use crate::slot::SlotProvider;

/// A driver's entry in the registry: const data, built at compile time.
pub struct DriverRegistration {
    /// The driver's ID (the same as [`TokenDriver::id`]).
    pub id: &'static str,
    /// Probing order: higher first. `inventory` gives no order of its own, so every entry says
    /// where it stands. Built-in drivers use 0; a vendor driver that should win over a generic
    /// one uses a higher number, a catch-all a negative one.
    pub priority: i32,
    /// Makes the driver.
    pub create: fn() -> Arc<dyn TokenDriver>,
}

impl DriverRegistration {
    /// An entry, for [`register_driver!`](crate::register_driver).
    pub const fn new(
        id: &'static str,
        priority: i32,
        create: fn() -> Arc<dyn TokenDriver>,
    ) -> Self {
        Self {
            id,
            priority,
            create,
        }
    }
}

/// A slot provider's entry in the registry.
pub struct SlotProviderRegistration {
    /// The provider's ID (the same as [`SlotProvider::id`]).
    pub id: &'static str,
    /// Makes the provider; an error (no PC/SC service, say) leaves it out of the hub.
    pub create: fn() -> Result<Arc<dyn SlotProvider>>,
}

impl SlotProviderRegistration {
    /// An entry, for [`register_slot_provider!`](crate::register_slot_provider).
    pub const fn new(id: &'static str, create: fn() -> Result<Arc<dyn SlotProvider>>) -> Self {
        Self { id, create }
    }
}

inventory::collect!(DriverRegistration);
inventory::collect!(SlotProviderRegistration);

/// Every linked driver registration, highest priority first (ties by ID, so the order is the
/// same on every run).
pub fn registered_drivers() -> Vec<&'static DriverRegistration> {
    let mut v: Vec<_> = inventory::iter::<DriverRegistration>.into_iter().collect();
    v.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(b.id)));
    v
}

/// Every linked slot provider registration, by ID.
pub fn registered_slot_providers() -> Vec<&'static SlotProviderRegistration> {
    let mut v: Vec<_> = inventory::iter::<SlotProviderRegistration>
        .into_iter()
        .collect();
    v.sort_by(|a, b| a.id.cmp(b.id));
    v
}

/// Registers a token driver with the hub of every binary that links this crate.
///
/// ```
/// # struct MyDriver;
/// # #[token_core::async_trait]
/// # impl token_core::TokenDriver for MyDriver {
/// #     fn id(&self) -> &'static str { "mycard" }
/// #     fn name(&self) -> &'static str { "My card" }
/// #     async fn probe(&self, _: &token_core::Probe) -> token_core::Result<token_core::Claim> {
/// #         Ok(token_core::Claim::NotMine)
/// #     }
/// # }
/// token_core::register_driver!(token_core::DriverRegistration::new("mycard", 0, || {
///     std::sync::Arc::new(MyDriver)
/// }));
///
/// assert!(token_core::registered_drivers().iter().any(|r| r.id == "mycard"));
/// ```
#[macro_export]
macro_rules! register_driver {
    ($registration:expr) => {
        $crate::inventory::submit! { $registration }
    };
}

/// Registers a slot provider with the hub of every binary that links this crate.
#[macro_export]
macro_rules! register_slot_provider {
    ($registration:expr) => {
        $crate::inventory::submit! { $registration }
    };
}
