//! Whole-system tests: the real binaries as processes, driven like clients;
//! fault injection; the Docker files checked against the code.

mod brokers;
mod compose;
mod config;
mod faults;
mod group;
mod http;
mod operations;
mod takeback;
mod traces;
