//! A distributed inventory service for multi-store retail: event-sourced, CQRS, over gRPC.
//!
//! Layers point one way: [`domain`] ← [`log`] ← [`app`] ← [`delivery`] ← [`grpc`] ← [`server`]
//! ← [`tools`] ← [`cli`], which the binary calls. See
//! ARCHITECTURE.md for the map and the invariants.
#![forbid(unsafe_code)]

pub mod app;
pub mod certificates;
pub mod cli;
pub mod delivery;
pub mod dense_map;
pub mod domain;
pub mod grpc;
pub mod log;
pub mod server;
pub mod telemetry;
pub mod tools;
