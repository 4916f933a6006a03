//! The CTAP 2.1 authenticator simulator (being built).
