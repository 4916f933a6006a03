//! # transport-pcsc
//!
//! PC/SC readers as tokenkit slots (work in progress).

#![forbid(unsafe_code)]
