//! Internals accrete's own tests and benches use (feature `testing`, on for
//! every test, bench and example of this crate through a dev-dependency).
//! Not for applications: no stability promise.

pub use crate::failpoint::{FAILPOINTS, FAULTS, HOOK_FAILPOINTS, REBUILD_FAILPOINTS};
pub use crate::log::memory::MemoryLog;
