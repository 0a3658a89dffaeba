//! Hook outcomes, coverage, planned runs and dead letters.

use std::collections::HashMap;

use bson::{Bson, Document, doc};

use super::*;
use crate::hooks::runner::{Coverage, IdSet, KeyPlan, Outcome, Plan};
use crate::{Error, Result};

impl MongoStore {
    /// Which of these idempotency keys have a recorded outcome.
    pub(crate) fn outcomes_recorded(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(10_000) {
            let cursor = self
                .coll(HOOK_OUTCOMES)
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .projection(doc! { "_id": 1 })
                .run()
                .map_err(|e| Error::mongo("read hook outcomes", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("read hook outcomes", e))?;
                if let Ok(id) = d.get_str("_id") {
                    out.insert(id.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Per encoded key, what a hook's runs covered (`hook` is
    /// `<hook>/<model>`), with the stamp a plan checks: 0 for a key without
    /// a document yet.
    pub(crate) fn hook_covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<Coverage>> {
        let ids: Vec<String> = keys.iter().map(|k| hook_run_id(hook, k)).collect();
        let mut found: HashMap<String, Coverage> = HashMap::new();
        for chunk in ids.chunks(10_000) {
            let cursor = self
                .coll(HOOK_RUNS)
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .projection(doc! { "stamp": 1, "cover": 1 })
                .run()
                .map_err(|e| Error::mongo("read hook coverage", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("read hook coverage", e))?;
                let corrupt = |detail: String| Error::Corrupt {
                    what: "hook coverage",
                    detail,
                };
                let id = d.get_str("_id").map_err(|e| corrupt(e.to_string()))?;
                let stamp = d.get("stamp").and_then(as_u64).unwrap_or(0);
                let set = match d.get("cover") {
                    Some(Bson::Binary(b)) => crate::event::from_bytes(&b.bytes)
                        .map_err(|e| corrupt(format!("{e} in {id}")))?,
                    _ => IdSet::default(),
                };
                found.insert(
                    id.to_string(),
                    Coverage {
                        set,
                        stamp: Some(stamp),
                    },
                );
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                found.remove(id).unwrap_or(Coverage {
                    set: IdSet::default(),
                    stamp: Some(0),
                })
            })
            .collect())
    }

    /// Writes each key's coverage and planned run, each on the condition
    /// that its stamp is still the one read: returns the keys another node
    /// planned meanwhile (nothing of theirs is written).
    pub(crate) fn plan_hook_runs(
        &self,
        hook: &str,
        keys: &[KeyPlan<'_>],
    ) -> Result<std::collections::HashSet<Vec<u8>>> {
        let ns = self.coll(HOOK_RUNS).namespace();
        let mut models = Vec::with_capacity(keys.len());
        for k in keys {
            let stamp = k.coverage.stamp.unwrap_or(0) as i64;
            let cover = postcard::to_stdvec(&k.coverage.set).map_err(|e| Error::Encode {
                what: "hook coverage",
                detail: e.to_string(),
            })?;
            let mut set = doc! {
                "stamp": stamp + 1,
                "h": hook,
                "cover": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: cover },
            };
            if let Some(p) = k.partition {
                set.insert("part", i64::from(p));
            }
            let mut update = doc! { "$set": set };
            if let Some(plan) = k.run {
                let bytes = postcard::to_stdvec(plan).map_err(|e| Error::Encode {
                    what: "hook plan",
                    detail: e.to_string(),
                })?;
                update.insert(
                    "$push",
                    doc! { "plans": { "id": &plan.id, "at": bson::DateTime::now(), "plan": bson::Binary {
                        subtype: bson::spec::BinarySubtype::Generic, bytes,
                    } } },
                );
            }
            models.push(WriteModel::UpdateOne(
                UpdateOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": hook_run_id(hook, k.key), "stamp": stamp })
                    .update(update)
                    .upsert(true)
                    .build(),
            ));
        }
        if models.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let refused = refused(self.client.bulk_write(models).ordered(false).run())?;
        if let Some((_, reason)) = refused.failed.iter().next() {
            return Err(Error::mongo_msg("write hook plans", reason));
        }
        Ok(refused
            .duplicates
            .iter()
            .map(|&i| keys[i].key.to_vec())
            .collect())
    }

    /// A hook's runs planned at least `min_age` ago and not yet recorded,
    /// of the keys `mine` accepts (by encoded key and changes partition).
    pub(crate) fn hook_plans(
        &self,
        hook: &str,
        min_age: Duration,
        mine: &dyn Fn(&[u8], Option<u32>) -> bool,
    ) -> Result<Vec<Plan>> {
        let before = bson::DateTime::from_millis(
            bson::DateTime::now().timestamp_millis() - min_age.as_millis() as i64,
        );
        let mut out = Vec::new();
        self.with_plans(hook, doc! { "part": 1, "plans": 1 }, |d, plans| {
            let part = d.get("part").and_then(as_u64).map(|p| p as u32);
            for p in plans {
                let Some(p) = p.as_document() else { continue };
                if p.get_datetime("at").is_ok_and(|at| *at > before) {
                    continue;
                }
                let Some(Bson::Binary(b)) = p.get("plan") else {
                    continue;
                };
                let plan: Plan =
                    crate::event::from_bytes(&b.bytes).map_err(|e| Error::Corrupt {
                        what: "hook plan",
                        detail: e,
                    })?;
                if mine(&plan.key, part) {
                    out.push(plan);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each document of a hook (`<hook>/<model>`) in
    /// `accrete.hook_runs` that has planned runs, and its plans (the fields
    /// of `projection`).
    fn with_plans(
        &self,
        hook: &str,
        projection: Document,
        mut f: impl FnMut(&Document, &bson::Array) -> Result<()>,
    ) -> Result<()> {
        let cursor = self
            .coll(HOOK_RUNS)
            .find(doc! { "h": hook, "plans.id": { "$exists": true } })
            .projection(projection)
            .run()
            .map_err(|e| Error::mongo("read hook plans", e))?;
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("read hook plans", e))?;
            if let Ok(plans) = d.get_array("plans") {
                f(&d, plans)?;
            }
        }
        Ok(())
    }

    /// How many runs of a hook (`<hook>/<model>`) are planned and not yet
    /// recorded, over all keys.
    pub(crate) fn hook_plans_open(&self, hook: &str) -> Result<u64> {
        let mut open = 0;
        self.with_plans(hook, doc! { "plans.id": 1 }, |_, plans| {
            open += plans.len() as u64;
            Ok(())
        })?;
        Ok(open)
    }

    /// Records runs' outcomes (and, for failures, their dead letters) and
    /// forgets their plans, in one ordered request (a failure part way
    /// leaves plans whose outcomes are recorded: they are not run again).
    pub(crate) fn record_outcomes(
        &self,
        hook: &str,
        model: &str,
        outcomes: &[Outcome],
    ) -> Result<()> {
        // One ordered request: the outcomes (and dead letters) first, then
        // the plans' removal, so that no plan goes without its outcome.
        let now = bson::DateTime::now();
        let runs = format!("{hook}/{model}");
        let mut models = Vec::with_capacity(outcomes.len() * 2);
        for o in outcomes {
            if let Some(reason) = &o.error {
                models.push(self.upsert(
                    HOOK_DEAD_LETTERS,
                    doc! { "_id": &o.id },
                    doc! { "$setOnInsert": {
                        "hook": hook, "reason": reason, "attempts": o.attempts as i64, "at": now,
                    }},
                ));
            }
            models.push(self.upsert(
                HOOK_OUTCOMES,
                doc! { "_id": &o.id },
                doc! { "$setOnInsert": {
                    "hook": hook, "ok": o.error.is_none(), "attempts": o.attempts as i64, "at": now,
                    "latency_ms": o.latency_ms as i64,
                }},
            ));
        }
        let ns = self.coll(HOOK_RUNS).namespace();
        for o in outcomes {
            models.push(WriteModel::UpdateOne(
                UpdateOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": hook_run_id(&runs, &o.key) })
                    .update(doc! { "$pull": { "plans": { "id": &o.id } } })
                    .build(),
            ));
        }
        if models.is_empty() {
            return Ok(());
        }
        self.client
            .bulk_write(models)
            .ordered(true)
            .run()
            .map_err(|e| Error::mongo("write hook outcomes", e))?;
        Ok(())
    }

    /// A hook's dead letters, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn hook_dead_letters(&self, hook: &str) -> Result<Vec<HookDeadLetter>> {
        let cursor = self
            .coll(HOOK_DEAD_LETTERS)
            .find(doc! { "hook": hook })
            .sort(doc! { "at": 1, "_id": 1 })
            .run()
            .map_err(|e| Error::mongo("read hook dead letters", e))?;
        let mut out = Vec::new();
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("read hook dead letters", e))?;
            out.push(HookDeadLetter {
                hook: hook.to_string(),
                idempotency_key: d.get_str("_id").unwrap_or_default().to_string(),
                reason: d.get_str("reason").unwrap_or_default().to_string(),
                attempts: d.get("attempts").and_then(as_u64).unwrap_or(0) as u32,
            });
        }
        Ok(out)
    }
}

/// The `_id` of a key's hook-run document: `<hook>/<model>/<key in hex>`.
fn hook_run_id(hook: &str, key: &[u8]) -> String {
    let mut id = String::with_capacity(hook.len() + 1 + key.len() * 2);
    id.push_str(hook);
    id.push('/');
    for b in key {
        id.push_str(&format!("{b:02x}"));
    }
    id
}
