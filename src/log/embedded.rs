//! Placeholder until the embedded log lands (being written on branch `log`).
#![allow(missing_docs, unreachable_pub)]
pub struct EmbeddedLog;
impl EmbeddedLog {
    pub fn open(_dir: impl AsRef<std::path::Path>) -> crate::Result<super::MemoryLog> {
        Ok(super::MemoryLog::new())
    }
}
