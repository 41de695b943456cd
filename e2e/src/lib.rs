//! Whole-system harness: the real `orders` and `payments` binaries (and a
//! private tansu broker) as child processes on free ports, with fault
//! injection (kill -9, SIGSTOP) and the cross-database invariant check.

pub mod broker;
pub mod chaos;
pub mod invariant;
pub mod load;
pub mod process;
pub mod stack;

pub use stack::Stack;
