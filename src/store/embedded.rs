//! [`EmbeddedStore`]: read-model state in a local redb file.

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::DeadLetter;
use crate::hooks::runner::{Outcome, Plan};
use crate::ids::{Chunk, ChunkStore, IdSet};
use crate::{Error, Result};

fn state_table(model: &str) -> String {
    format!("state/{model}")
}
fn outbox_table(model: &str) -> String {
    format!("outbox/{model}")
}
fn dead_table(model: &str) -> String {
    format!("dead/{model}")
}
fn forwarded_table(model: &str) -> String {
    format!("forwarded/{model}")
}

/// Per events topic: the source number of the events that first entered
/// this store's log (see [`EmbeddedStore::source_id`]).
const SOURCES: TableDefinition<'static, &str, u32> = TableDefinition::new("sources");

/// Models whose rebuild cleared the state but may not have reset the
/// consumer group yet: finished (the group reset) when the model starts.
const REBUILDING: TableDefinition<'static, &str, ()> = TableDefinition::new("rebuilding");

/// Per model and partition: the end offset of the last batch written.
const WRITTEN_TABLE: &str = "written_end";
const WRITTEN: TableDefinition<'static, &str, u64> = TableDefinition::new(WRITTEN_TABLE);

/// Per model: the highest version any key had before the model was last
/// cleared (a rebuild). New keys start above it, so versions, and the hook
/// idempotency keys made of them, never repeat across a rebuild.
const VERSION_FLOOR: TableDefinition<'static, &str, u64> = TableDefinition::new("version_floor");

/// A recorded hook outcome: `(ok, attempts, latency in ms)`.
type OutcomeRow = (bool, u32, u32);
/// Hook outcomes, by idempotency key.
const HOOK_OUTCOMES_NAME: &str = "hook_outcomes";
const HOOK_OUTCOMES: TableDefinition<'static, &str, OutcomeRow> =
    TableDefinition::new(HOOK_OUTCOMES_NAME);
/// Per hook and key (`<hook>/` then the encoded key): the change versions
/// handed to a run, as an [`IdSet`].
const HOOK_COVERED: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("hook_covered");
/// Hook runs planned and not yet recorded, by idempotency key.
const HOOK_PLANS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("hook_plans");
/// Hook dead letters, by idempotency key (which starts with the hook's name).
const HOOK_DEAD: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("hook_dead");

/// The written end of a model's partition of one events topic (by its
/// source number): `<model>/<source in hex>/<partition>`. (Stores written
/// before kept `<model>/<partition>`; [`EmbeddedStore::source_id`] moves
/// those rows.)
fn written_key(model: &str, source: u32, partition: u32) -> String {
    format!("{model}/{source:08x}/{partition}")
}

fn covered_key(hook: &str, key: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(hook.as_bytes());
    buf.push(b'/');
    buf.extend_from_slice(key);
}

/// The key of a chunk of forwarded ids (`u64::MAX`: the span).
fn forwarded_key(source: u32, partition: u32, chunk: u64) -> [u8; 16] {
    let mut key = [0_u8; 16];
    key[..4].copy_from_slice(&source.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key[8..].copy_from_slice(&chunk.to_be_bytes());
    key
}

impl ChunkStore for ModelWrite<'_> {
    fn span(&self, source: u32, partition: u32) -> Result<Option<(u64, u64)>> {
        let key = forwarded_key(source, partition, u64::MAX);
        let v = self
            .forwarded
            .get(key.as_slice())
            .map_err(|e| Error::store("get forwarded ids", e))?;
        Ok(v.and_then(|v| {
            let b = v.value();
            Some((
                u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
                u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            ))
        }))
    }

    fn put_span(&mut self, source: u32, partition: u32, (low, high): (u64, u64)) -> Result<()> {
        let key = forwarded_key(source, partition, u64::MAX);
        let mut value = [0_u8; 16];
        value[..8].copy_from_slice(&low.to_be_bytes());
        value[8..].copy_from_slice(&high.to_be_bytes());
        self.forwarded
            .insert(key.as_slice(), value.as_slice())
            .map_err(|e| Error::store("put forwarded ids", e))?;
        Ok(())
    }

    fn chunk(&self, source: u32, partition: u32, chunk: u64) -> Result<Option<Chunk>> {
        let key = forwarded_key(source, partition, chunk);
        let v = self
            .forwarded
            .get(key.as_slice())
            .map_err(|e| Error::store("get forwarded ids", e))?;
        v.map(|v| {
            Chunk::decode(v.value()).ok_or_else(|| Error::Corrupt {
                what: "forwarded ids",
                detail: format!("a chunk of {} bytes", v.value().len()),
            })
        })
        .transpose()
    }

    fn put_chunk(&mut self, source: u32, partition: u32, chunk: u64, c: &Chunk) -> Result<()> {
        let key = forwarded_key(source, partition, chunk);
        self.forwarded
            .insert(key.as_slice(), c.encode())
            .map_err(|e| Error::store("put forwarded ids", e))?;
        Ok(())
    }

    fn drop_lowest(&mut self, source: u32, partition: u32, n: u64) -> Result<u64> {
        let from = forwarded_key(source, partition, 0);
        let to = forwarded_key(source, partition, u64::MAX);
        let mut dropped = 0;
        let mut horizon = 0;
        self.forwarded
            .retain_in::<&[u8], _>(from.as_slice()..to.as_slice(), |k, _| {
                if dropped == n {
                    return true;
                }
                dropped += 1;
                horizon = k
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, |b| u64::from_be_bytes(b) + 1);
                false
            })
            .map_err(|e| Error::store("forget forwarded ids", e))?;
        Ok(horizon)
    }
}

/// The embedded store: one redb database file holding, per read model, the
/// state of every key (with its version and exactly-once bookkeeping), an
/// outbox of changes not yet published, and the dead letters. Everything a
/// batch does is one ACID transaction.
pub struct EmbeddedStore {
    db: Db,
    /// Test faults: the rate (f64 bits) of write transactions that fail
    /// instead of committing, and the dice.
    commit_faults: (std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64),
}

/// The database, opened for writing or (to inspect a store another process
/// is writing) read-only.
enum Db {
    Write(Database),
    Read(redb::ReadOnlyDatabase),
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the file cannot be opened, is locked by another
    /// process, or is not a store.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("creating the store directory", dir, e))?;
        }
        if !path.exists() {
            Self::create_atomically(path)?;
        }
        // One writing process; readers in other processes may follow its
        // commits (`open_read_only`).
        let db = Database::builder()
            .set_cache_size(256 << 20)
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|e| Error::store("open", e))?;
        Ok(EmbeddedStore {
            db: Db::Write(db),
            commit_faults: Default::default(),
        })
    }

    /// Opens an existing store file for reading only, while another process
    /// may be writing it: reads see its committed transactions. Every write
    /// fails with [`Error::Usage`].
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the file cannot be opened or is not a store.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open_read_only(path.as_ref())
            .map_err(|e| Error::store("open read-only", e))?;
        Ok(EmbeddedStore {
            db: Db::Read(db),
            commit_faults: Default::default(),
        })
    }

    /// Whether it was opened read-only.
    pub fn is_read_only(&self) -> bool {
        matches!(self.db, Db::Read(_))
    }

    /// Creates a new store file under a temporary name and renames it into
    /// place once redb has written its header: a process killed while
    /// creating the store leaves no half-made file behind at `path` (which
    /// every later open would reject as "not a redb database").
    fn create_atomically(path: &Path) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push("~new");
        let tmp = std::path::PathBuf::from(tmp);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing a half-made store", &tmp, e)),
        }
        drop(Database::create(&tmp).map_err(|e| Error::store("create", e))?);
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io("moving the new store into place", path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("syncing the store directory", dir, e))?;
        }
        Ok(())
    }

    /// Opens a table for reading in a fresh read transaction; `None` if it
    /// was never written (a model with no state yet).
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        name: &str,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
        let txn = match &self.db {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
        .map_err(|e| Error::store("begin read", e))?;
        match txn.open_table(TableDefinition::<K, V>::new(name)) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(Error::store("open table", e)),
        }
    }

    /// Runs `f` in one write transaction and commits it durably.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&WriteTransaction) -> Result<R>) -> Result<R> {
        let Db::Write(db) = &self.db else {
            return Err(Error::Usage(
                "the store was opened read-only (EmbeddedStore::open_read_only): it cannot be written".into(),
            ));
        };
        let mut txn = db
            .begin_write()
            .map_err(|e| Error::store("begin write", e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| Error::store("durability", e))?;
        // A panic in `f` (a model's `combine` or `Serialize`) aborts the
        // transaction here, not while unwinding: redb drops a transaction
        // dropped during a panic without aborting it, leaking its pages
        // until the file is repaired at the next open.
        let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&txn))) {
            Ok(out) => out?,
            Err(panic) => {
                drop(txn);
                std::panic::resume_unwind(panic);
            }
        };
        if self.commit_fault() {
            // Dropped uncommitted: as if the commit had failed.
            return Err(Error::store(
                "commit",
                std::io::Error::other("injected commit failure (EmbeddedStore::fail_commits)"),
            ));
        }
        txn.commit().map_err(|e| Error::store("commit", e))?;
        Ok(out)
    }

    /// For tests of what the runtime does when the store fails: a fraction
    /// `rate` (0 to 1) of write transactions fail instead of committing
    /// (nothing of them is written), from now on. 0 turns it off.
    #[doc(hidden)]
    pub fn fail_commits(&self, rate: f64, seed: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commit_faults.1.store(seed, Relaxed);
        self.commit_faults.0.store(rate.to_bits(), Relaxed);
    }

    fn commit_fault(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let rate = self.commit_faults.0.load(Relaxed);
        if rate == 0 {
            return false;
        }
        let roll = self
            .commit_faults
            .1
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed);
        let x = accrete_monoids::hash::stable_hash(&roll);
        ((x >> 11) as f64 / (1_u64 << 53) as f64) < f64::from_bits(rate)
    }

    /// The stored records of several keys, in one read transaction.
    pub(crate) fn get_raw_many(&self, model: &str, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(table) = self.read_table::<&[u8], &[u8]>(&state_table(model))? else {
            return Ok(vec![None; keys.len()]);
        };
        keys.iter()
            .map(|key| {
                let value = table.get(*key).map_err(|e| Error::store("get", e))?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .collect()
    }

    /// Visits every key's record in key-byte order, from `start` (inclusive).
    /// `f` returns `false` to stop.
    pub(crate) fn scan_raw(
        &self,
        model: &str,
        start: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let Some(table) = self.read_table::<&[u8], &[u8]>(&state_table(model))? else {
            return Ok(());
        };
        let range = match start {
            Some(s) => table.range::<&[u8]>(s..),
            None => table.range::<&[u8]>(..),
        }
        .map_err(|e| Error::store("scan", e))?;
        for item in range {
            let (k, v) = item.map_err(|e| Error::store("scan", e))?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    /// The end offset of the last batch of `partition` written for `model`
    /// (0 if none): events below it may already be absorbed.
    pub(crate) fn written_end(&self, model: &str, source: u32, partition: u32) -> Result<u64> {
        let Some(table) = self.read_table::<&str, u64>(WRITTEN_TABLE)? else {
            return Ok(0);
        };
        let key = written_key(model, source, partition);
        Ok(table
            .get(key.as_str())
            .map_err(|e| Error::store("get", e))?
            .map_or(0, |v| v.value()))
    }

    /// The outbox of a model: changes written but not yet published, as
    /// `(sequence, bytes)`.
    pub(crate) fn outbox(&self, model: &str) -> Result<Vec<(u64, Vec<u8>)>> {
        let Some(table) = self.read_table::<u64, &[u8]>(&outbox_table(model))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table
            .range::<u64>(..)
            .map_err(|e| Error::store("scan outbox", e))?
        {
            let (k, v) = item.map_err(|e| Error::store("scan outbox", e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The dead letters of a model, one per event id, in id order.
    ///
    /// # Errors
    ///
    /// Store errors; a record that does not decode.
    pub fn dead_letters(&self, model: &str) -> Result<Vec<DeadLetter>> {
        let Some(table) = self.read_table::<&[u8], &[u8]>(&dead_table(model))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table
            .range::<&[u8]>(..)
            .map_err(|e| Error::store("scan dead letters", e))?
        {
            let (_, v) = item.map_err(|e| Error::store("scan dead letters", e))?;
            out.push(postcard::from_bytes(v.value()).map_err(|e| Error::Corrupt {
                what: "dead letter",
                detail: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Which of these idempotency keys have a recorded hook outcome.
    pub(crate) fn hook_outcomes_recorded(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        let Some(table) = self.read_table::<&str, OutcomeRow>(HOOK_OUTCOMES_NAME)? else {
            return Ok(out);
        };
        for id in ids {
            if table
                .get(id.as_str())
                .map_err(|e| Error::store("read hook outcomes", e))?
                .is_some()
            {
                out.insert(id.clone());
            }
        }
        Ok(out)
    }

    /// Per encoded key, the change versions a hook's runs covered.
    pub(crate) fn hook_covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<IdSet>> {
        let Some(table) = self.read_table::<&[u8], &[u8]>("hook_covered")? else {
            return Ok(vec![IdSet::default(); keys.len()]);
        };
        let mut buf = Vec::new();
        keys.iter()
            .map(|key| {
                covered_key(hook, key, &mut buf);
                match table
                    .get(buf.as_slice())
                    .map_err(|e| Error::store("read hook coverage", e))?
                {
                    Some(v) => postcard::from_bytes(v.value()).map_err(|e| Error::Corrupt {
                        what: "hook coverage",
                        detail: e.to_string(),
                    }),
                    None => Ok(IdSet::default()),
                }
            })
            .collect()
    }

    /// Records a hook's covered versions and planned runs in one
    /// transaction.
    pub(crate) fn plan_hook_runs(
        &self,
        hook: &str,
        covered: &[(&[u8], &IdSet)],
        plans: &[Plan],
    ) -> Result<()> {
        if covered.is_empty() && plans.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut table = txn
                .open_table(HOOK_COVERED)
                .map_err(|e| Error::store("open table", e))?;
            let mut buf = Vec::new();
            for (key, set) in covered {
                covered_key(hook, key, &mut buf);
                let bytes = postcard::to_stdvec(set).map_err(|e| Error::Encode {
                    what: "hook coverage",
                    detail: e.to_string(),
                })?;
                table
                    .insert(buf.as_slice(), bytes.as_slice())
                    .map_err(|e| Error::store("write hook coverage", e))?;
            }
            let mut planned = txn
                .open_table(HOOK_PLANS)
                .map_err(|e| Error::store("open table", e))?;
            for plan in plans {
                let bytes = postcard::to_stdvec(plan).map_err(|e| Error::Encode {
                    what: "hook plan",
                    detail: e.to_string(),
                })?;
                planned
                    .insert(plan.id.as_str(), bytes.as_slice())
                    .map_err(|e| Error::store("write hook plans", e))?;
            }
            Ok(())
        })
    }

    /// Visits the rows of a string-keyed table whose keys start with
    /// `prefix`, in key order (none if the table was never written).
    fn scan_prefix<V: redb::Value + 'static>(
        &self,
        table: &str,
        prefix: &str,
        what: &'static str,
        mut f: impl FnMut(V::SelfType<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(table) = self.read_table::<&str, V>(table)? else {
            return Ok(());
        };
        for item in table
            .range::<&str>(prefix..)
            .map_err(|e| Error::store(what, e))?
        {
            let (k, v) = item.map_err(|e| Error::store(what, e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            f(v.value())?;
        }
        Ok(())
    }

    /// A hook's planned runs not yet recorded, of the keys `mine` accepts.
    pub(crate) fn hook_plans(&self, hook: &str, mine: &dyn Fn(&[u8]) -> bool) -> Result<Vec<Plan>> {
        let mut out = Vec::new();
        self.scan_prefix::<&[u8]>("hook_plans", &format!("{hook}/"), "scan hook plans", |v| {
            let plan: Plan = postcard::from_bytes(v).map_err(|e| Error::Corrupt {
                what: "hook plan",
                detail: e.to_string(),
            })?;
            if mine(&plan.key) {
                out.push(plan);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Records hook runs' outcomes `(idempotency key, attempts, error)` and
    /// the dead letters of the failed ones, in one transaction, and forgets
    /// their plans; an outcome recorded earlier is kept.
    pub(crate) fn record_hook_outcomes(&self, hook: &str, outcomes: &[Outcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut plans = txn
                .open_table(HOOK_PLANS)
                .map_err(|e| Error::store("open table", e))?;
            for outcome in outcomes {
                plans
                    .remove(outcome.id.as_str())
                    .map_err(|e| Error::store("forget hook plans", e))?;
            }
            let mut recorded = txn
                .open_table(HOOK_OUTCOMES)
                .map_err(|e| Error::store("open table", e))?;
            let mut dead = txn
                .open_table(HOOK_DEAD)
                .map_err(|e| Error::store("open table", e))?;
            for Outcome {
                id,
                attempts,
                error,
                latency_ms,
                ..
            } in outcomes
            {
                let known = recorded
                    .get(id.as_str())
                    .map_err(|e| Error::store("read hook outcomes", e))?
                    .is_some();
                if known {
                    continue;
                }
                recorded
                    .insert(id.as_str(), (error.is_none(), *attempts, *latency_ms))
                    .map_err(|e| Error::store("write hook outcomes", e))?;
                if let Some(reason) = error {
                    let letter = crate::hooks::HookDeadLetter {
                        hook: hook.to_string(),
                        idempotency_key: id.clone(),
                        reason: reason.clone(),
                        attempts: *attempts,
                    };
                    let bytes = postcard::to_stdvec(&letter).map_err(|e| Error::Encode {
                        what: "hook dead letter",
                        detail: e.to_string(),
                    })?;
                    dead.insert(id.as_str(), bytes.as_slice())
                        .map_err(|e| Error::store("write hook dead letters", e))?;
                }
            }
            Ok(())
        })
    }

    /// A hook's dead letters, in idempotency-key order.
    ///
    /// # Errors
    ///
    /// Store errors; a record that does not decode.
    pub fn hook_dead_letters(&self, hook: &str) -> Result<Vec<crate::hooks::HookDeadLetter>> {
        let mut out = Vec::new();
        self.scan_prefix::<&[u8]>(
            "hook_dead",
            &format!("{hook}/"),
            "scan hook dead letters",
            |v| {
                out.push(postcard::from_bytes(v).map_err(|e| Error::Corrupt {
                    what: "hook dead letter",
                    detail: e.to_string(),
                })?);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// What a hook's recorded outcomes say: runs, retries, dead letters,
    /// and the change-to-run latency.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn hook_history(&self, hook: &str) -> Result<crate::hooks::HookHistory> {
        let mut history = crate::hooks::HookHistory::default();
        let mut latencies = Vec::new();
        self.scan_prefix::<OutcomeRow>(
            HOOK_OUTCOMES_NAME,
            &format!("{hook}/"),
            "scan hook outcomes",
            |(ok, attempts, latency)| {
                if ok {
                    history.runs += 1;
                } else {
                    history.dead_letters += 1;
                }
                history.retries += u64::from(attempts.saturating_sub(1));
                latencies.push(latency);
                Ok(())
            },
        )?;
        history.latency_ms = crate::hooks::runner::median_p99(latencies);
        Ok(history)
    }

    /// Whether the model ever stored anything here (a written end, or a
    /// state table).
    pub(crate) fn has_model(&self, model: &str) -> Result<bool> {
        if self
            .read_table::<&[u8], &[u8]>(&state_table(model))?
            .is_some()
            || self.rebuilding(model)?
        {
            return Ok(true);
        }
        let Some(table) = self.read_table::<&str, u64>(WRITTEN_TABLE)? else {
            return Ok(false);
        };
        let prefix = format!("{model}/");
        let mut range = table
            .range::<&str>(prefix.as_str()..)
            .map_err(|e| Error::store("scan written ends", e))?;
        Ok(match range.next() {
            Some(item) => item
                .map_err(|e| Error::store("scan written ends", e))?
                .0
                .value()
                .starts_with(&prefix),
            None => false,
        })
    }

    /// Whether a rebuild of the model cleared its state and has not yet
    /// reset its consumer group ([`EmbeddedStore::finish_rebuild`]).
    pub(crate) fn rebuilding(&self, model: &str) -> Result<bool> {
        let Some(table) = self.read_table::<&str, ()>("rebuilding")? else {
            return Ok(false);
        };
        Ok(table
            .get(model)
            .map_err(|e| Error::store("read rebuild marks", e))?
            .is_some())
    }

    /// Ends a rebuild, once the model's consumer group is reset.
    pub(crate) fn finish_rebuild(&self, model: &str) -> Result<()> {
        self.write(|txn| {
            txn.open_table(REBUILDING)
                .map_err(|e| Error::store("open table", e))?
                .remove(model)
                .map_err(|e| Error::store("clear the rebuild mark", e))?;
            Ok(())
        })
    }

    /// Lowers a partition's written end to `end` (the log lost its tail:
    /// offsets from `end` on will be given to new events).
    pub(crate) fn lower_written_end(
        &self,
        model: &str,
        source: u32,
        partition: u32,
        end: u64,
    ) -> Result<()> {
        self.write(|txn| {
            let mut written = txn
                .open_table(WRITTEN)
                .map_err(|e| Error::store("open table", e))?;
            let key = written_key(model, source, partition);
            written
                .insert(key.as_str(), end)
                .map_err(|e| Error::store("written end", e))?;
            Ok(())
        })
    }

    /// Every model's written ends for the events topic of `source`:
    /// `(model, partition, end)`.
    pub(crate) fn written_ends(&self, source: u32) -> Result<Vec<(String, u32, u64)>> {
        let Some(table) = self.read_table::<&str, u64>(WRITTEN_TABLE)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let source = format!("{source:08x}");
        for item in table
            .iter()
            .map_err(|e| Error::store("scan written ends", e))?
        {
            let (k, v) = item.map_err(|e| Error::store("scan written ends", e))?;
            let mut parts = k.value().rsplitn(3, '/');
            let (Some(p), Some(src), Some(model)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if src == source
                && let Ok(p) = p.parse()
            {
                out.push((model.to_string(), p, v.value()));
            }
        }
        Ok(out)
    }

    fn own_sources_in(&self, sources: &redb::Table<'_, &str, u32>) -> Result<Vec<u32>> {
        sources
            .iter()
            .map_err(|e| Error::store("read sources", e))?
            .map(|item| {
                item.map(|(_, v)| v.value())
                    .map_err(|e| Error::store("read sources", e))
            })
            .collect()
    }

    /// The source numbers of every events topic this store has seen.
    pub(crate) fn own_sources(&self) -> Result<Vec<u32>> {
        let Some(table) = self.read_table::<&str, u32>("sources")? else {
            return Ok(Vec::new());
        };
        table
            .iter()
            .map_err(|e| Error::store("read sources", e))?
            .map(|item| {
                item.map(|(_, v)| v.value())
                    .map_err(|e| Error::store("read sources", e))
            })
            .collect()
    }

    /// The source number of events that first enter this store's log in
    /// `topic`: chosen at random when the topic is first used (and kept),
    /// so that events exported from another log with a topic of the same
    /// name are never mistaken for copies of this log's own. A store
    /// written before source numbers were kept goes on with the number it
    /// used then (a hash of the topic's name).
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn source_id(&self, topic: &str) -> Result<u32> {
        if let Some(t) = self.read_table::<&str, u32>("sources")?
            && let Some(v) = t.get(topic).map_err(|e| Error::store("read sources", e))?
        {
            return Ok(v.value());
        }
        if self.is_read_only() {
            return Ok(crate::event::source_id(topic));
        }
        self.write(|txn| {
            let mut sources = txn
                .open_table(SOURCES)
                .map_err(|e| Error::store("open table", e))?;
            if let Some(v) = sources
                .get(topic)
                .map_err(|e| Error::store("read sources", e))?
            {
                return Ok(v.value());
            }
            let legacy = crate::event::source_id(topic);
            // A store written before source numbers were kept has written
            // ends and no source at all: it goes on with the name's hash,
            // and its written ends (then kept without a source) move to it.
            let mut written = txn
                .open_table(WRITTEN)
                .map_err(|e| Error::store("open table", e))?;
            let first_source = sources
                .first()
                .map_err(|e| Error::store("read sources", e))?
                .is_none();
            let mut old_rows = Vec::new();
            for item in written
                .iter()
                .map_err(|e| Error::store("scan written ends", e))?
            {
                let (k, v) = item.map_err(|e| Error::store("scan written ends", e))?;
                if let Some((model, p)) = k.value().split_once('/')
                    && !p.contains('/')
                    && let Ok(p) = p.parse::<u32>()
                {
                    old_rows.push((k.value().to_string(), model.to_string(), p, v.value()));
                }
            }
            let id = if first_source && !old_rows.is_empty() {
                for (key, model, p, end) in old_rows {
                    written
                        .remove(key.as_str())
                        .map_err(|e| Error::store("move written ends", e))?;
                    written
                        .insert(written_key(&model, legacy, p).as_str(), end)
                        .map_err(|e| Error::store("move written ends", e))?;
                }
                legacy
            } else {
                loop {
                    let id = crate::event::random_u32();
                    if id != legacy
                        && !self
                            .own_sources_in(&sources)
                            .is_ok_and(|own| own.contains(&id))
                    {
                        break id;
                    }
                }
            };
            sources
                .insert(topic, id)
                .map_err(|e| Error::store("write sources", e))?;
            Ok(id)
        })
    }

    /// Deletes everything a model has stored: state, outbox, dead letters,
    /// written ends, forwarded ids; marks the model as rebuilding (in the
    /// same transaction) until [`EmbeddedStore::finish_rebuild`].
    pub(crate) fn clear_model(&self, model: &str) -> Result<()> {
        self.write(|txn| {
            {
                let mut written = txn
                    .open_table(WRITTEN)
                    .map_err(|e| Error::store("open table", e))?;
                let prefix = format!("{model}/");
                written
                    .retain(|k, _| !k.starts_with(&prefix))
                    .map_err(|e| Error::store("clear written ends", e))?;
            }
            // Versions continue above every version the model had.
            let highest =
                match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&state_table(model))) {
                    Ok(table) => {
                        let mut highest = 0;
                        for item in table.iter().map_err(|e| Error::store("scan state", e))? {
                            let (_, v) = item.map_err(|e| Error::store("scan state", e))?;
                            highest = highest.max(crate::codec::record_version(v.value()));
                        }
                        highest
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => 0,
                    Err(e) => return Err(Error::store("open state table", e)),
                };
            {
                let mut floors = txn
                    .open_table(VERSION_FLOOR)
                    .map_err(|e| Error::store("open table", e))?;
                let floor = floors
                    .get(model)
                    .map_err(|e| Error::store("read version floor", e))?
                    .map_or(0, |v| v.value());
                floors
                    .insert(model, floor.max(highest))
                    .map_err(|e| Error::store("write version floor", e))?;
            }
            txn.open_table(REBUILDING)
                .map_err(|e| Error::store("open table", e))?
                .insert(model, ())
                .map_err(|e| Error::store("mark the rebuild", e))?;
            for name in [
                state_table(model),
                outbox_table(model),
                dead_table(model),
                forwarded_table(model),
            ] {
                let deleted = if !name.starts_with("outbox/") {
                    txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                } else {
                    txn.delete_table(TableDefinition::<u64, &[u8]>::new(&name))
                };
                deleted.map_err(|e| Error::store("delete table", e))?;
            }
            Ok(())
        })
    }
}

/// The tables of one model inside a write transaction.
pub(crate) struct ModelWrite<'txn> {
    model: String,
    written: redb::Table<'txn, &'static str, u64>,
    state: redb::Table<'txn, &'static [u8], &'static [u8]>,
    forwarded: redb::Table<'txn, &'static [u8], &'static [u8]>,
    outbox: redb::Table<'txn, u64, &'static [u8]>,
    dead: redb::Table<'txn, &'static [u8], &'static [u8]>,
    next_outbox: u64,
    version_floor: u64,
}

impl<'txn> ModelWrite<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction, model: &str) -> Result<Self> {
        let state = txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new(&state_table(model)))
            .map_err(|e| Error::store("open state table", e))?;
        let outbox = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&outbox_table(model)))
            .map_err(|e| Error::store("open outbox", e))?;
        let dead = txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new(&dead_table(model)))
            .map_err(|e| Error::store("open dead letters", e))?;
        let forwarded = txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new(&forwarded_table(
                model,
            )))
            .map_err(|e| Error::store("open forwarded ids", e))?;
        let next = |t: &redb::Table<'txn, u64, &'static [u8]>| -> Result<u64> {
            Ok(t.last()
                .map_err(|e| Error::store("last", e))?
                .map_or(0, |(k, _)| k.value() + 1))
        };
        let next_outbox = next(&outbox)?;
        let written = txn
            .open_table(WRITTEN)
            .map_err(|e| Error::store("open written ends", e))?;
        let version_floor = match txn.open_table(VERSION_FLOOR) {
            Ok(t) => t
                .get(model)
                .map_err(|e| Error::store("read version floor", e))?
                .map_or(0, |v| v.value()),
            Err(e) => return Err(Error::store("open version floors", e)),
        };
        Ok(ModelWrite {
            model: model.to_string(),
            written,
            state,
            forwarded,
            outbox,
            dead,
            next_outbox,
            version_floor,
        })
    }

    /// The version a key without a record starts from (0 until the model is
    /// first cleared).
    pub(crate) fn version_floor(&self) -> u64 {
        self.version_floor
    }

    /// The written end of a partition of the events topic of `source`, as
    /// this transaction sees it.
    pub(crate) fn written_end(&self, source: u32, partition: u32) -> Result<u64> {
        let key = written_key(&self.model, source, partition);
        Ok(self
            .written
            .get(key.as_str())
            .map_err(|e| Error::store("written end", e))?
            .map_or(0, |v| v.value()))
    }

    /// Records the end offset of the batch of `partition` being written.
    /// The written end only grows: a batch re-read after a crash may be
    /// shorter than the one written (a smaller `batch_size` after a restart,
    /// a `Log` that returns fewer records than asked), and every offset
    /// below the highest end written is absorbed.
    pub(crate) fn set_written_end(&mut self, source: u32, partition: u32, end: u64) -> Result<()> {
        let key = written_key(&self.model, source, partition);
        let stored = self
            .written
            .get(key.as_str())
            .map_err(|e| Error::store("written end", e))?
            .map_or(0, |v| v.value());
        if end > stored {
            self.written
                .insert(key.as_str(), end)
                .map_err(|e| Error::store("written end", e))?;
        }
        Ok(())
    }

    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.state
            .remove(key)
            .map_err(|e| Error::store("delete", e))?;
        Ok(())
    }

    /// The record of a key, handed to `f` without copying.
    pub(crate) fn get<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        let v = self.state.get(key).map_err(|e| Error::store("get", e))?;
        Ok(f(v.as_ref().map(|g| g.value())))
    }

    pub(crate) fn put(&mut self, key: &[u8], record: &[u8]) -> Result<()> {
        self.state
            .insert(key, record)
            .map_err(|e| Error::store("put", e))?;
        Ok(())
    }

    /// Queues a change for publication; returns its outbox sequence.
    pub(crate) fn push_change(&mut self, change: &[u8]) -> Result<u64> {
        let seq = self.next_outbox;
        self.outbox
            .insert(seq, change)
            .map_err(|e| Error::store("outbox", e))?;
        self.next_outbox += 1;
        Ok(seq)
    }

    /// Removes published changes from the outbox.
    pub(crate) fn remove_changes(&mut self, seqs: &[u64]) -> Result<()> {
        for seq in seqs {
            self.outbox
                .remove(*seq)
                .map_err(|e| Error::store("outbox remove", e))?;
        }
        Ok(())
    }

    /// Records a dead letter under its event id: a redelivered bad event is
    /// recorded once.
    pub(crate) fn dead_letter(&mut self, letter: &DeadLetter) -> Result<()> {
        let bytes = postcard::to_stdvec(letter).map_err(|e| Error::Encode {
            what: "dead letter",
            detail: e.to_string(),
        })?;
        let id = letter.event;
        let mut key = [0_u8; 16];
        key[..4].copy_from_slice(&id.source.to_be_bytes());
        key[4..8].copy_from_slice(&id.partition.to_be_bytes());
        key[8..].copy_from_slice(&id.offset.to_be_bytes());
        self.dead
            .insert(key.as_slice(), bytes.as_slice())
            .map_err(|e| Error::store("dead letter", e))?;
        Ok(())
    }
}
