//! Shared harnesses for cohort's end-to-end tests. Owns in-memory plumbing between machines
//! (no sockets) with a trace of every input and output; it never hides a failure from a test.

pub mod admin;
pub mod link;
