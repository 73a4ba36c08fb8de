//! The payment module. So far: the seam to the card provider
//! ([`provider::PaymentProvider`]) and its HTTP adapter for the sandbox
//! provider (`shop sandbox-provider`, ADR 0012). Payments, their ledger and
//! `PaymentApi` come with the checkout saga.

pub mod provider;
