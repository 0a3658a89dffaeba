//! `accrete demo --kafka … --mongodb …` and `accrete node`: the quickstart
//! on Kafka + MongoDB.

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
use std::{path::Path, process::ExitCode};

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
use crate::Fallible;

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
fn unavailable() -> Fallible<ExitCode> {
    Err("this `accrete` was built without Kafka and MongoDB; build it with them: \
         cargo run --release --features kafka,mongodb -- demo --kafka 127.0.0.1:9092 --mongodb mongodb://127.0.0.1:27017"
        .into())
}

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
pub(crate) fn demo(_: Option<&Path>, _: &str, _: &str, _: usize, _: u64) -> Fallible<ExitCode> {
    unavailable()
}

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
pub(crate) fn demo_from_file(_: &Path, _: usize, _: u64) -> Fallible<ExitCode> {
    unavailable()
}

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
pub(crate) fn node(_: Option<&Path>) -> Fallible<ExitCode> {
    unavailable()
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
pub(crate) use enabled::{demo, demo_from_file, node};

#[cfg(all(feature = "kafka", feature = "mongodb"))]
mod enabled {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use accrete::cluster::{Node, NodeConfig};
    use accrete::demo::{
        BestSeller, LastSeen, PageVisitors, ProductSales, TopProducts, shop_events,
    };
    use accrete::model::ReadModel;
    use accrete::store::mongo::MongoStore;

    use crate::{Fallible, best_seller_units, check, fold, progress};

    pub(crate) fn demo(
        file: Option<&Path>,
        kafka: &str,
        mongodb: &str,
        n: usize,
        seed: u64,
    ) -> Fallible<ExitCode> {
        let mut config = NodeConfig::load(file)?;
        config.kafka.brokers = kafka.into();
        config.mongodb.uri = mongodb.into();
        run(config, n, seed)
    }

    pub(crate) fn demo_from_file(file: &Path, n: usize, seed: u64) -> Fallible<ExitCode> {
        run(NodeConfig::load(Some(file))?, n, seed)
    }

    fn serve(node: &Node) -> Fallible<()> {
        node.add_model(ProductSales)?;
        node.add_model(PageVisitors)?;
        node.add_model(LastSeen)?;
        node.add_model(TopProducts)?;
        Ok(())
    }

    pub(crate) fn node(file: Option<&Path>) -> Fallible<ExitCode> {
        let config = NodeConfig::load(file)?;
        println!(
            "accrete node {}: events topic {}, brokers {}, database {}",
            config.node_id, config.events_topic, config.kafka.brokers, config.mongodb.database
        );
        let node = Node::start(config)?;
        serve(&node)?;
        println!("serving product_sales, page_visitors, last_seen, top_products; stop with Ctrl-C");
        loop {
            std::thread::sleep(Duration::from_secs(10));
            let s = node.stats(ProductSales::NAME)?;
            let status = node.status(ProductSales::NAME)?;
            println!(
                "product_sales: {} events read here, {} writes, lag {}",
                s.events, s.writes, status.lag
            );
        }
    }

    fn stored<M: ReadModel>(store: &MongoStore) -> Fallible<BTreeMap<M::Key, M::State>> {
        let mut out = BTreeMap::new();
        store.scan::<M>(|k, v| {
            out.insert(k, v);
            true
        })?;
        Ok(out)
    }

    fn run(mut config: NodeConfig, n: usize, seed: u64) -> Fallible<ExitCode> {
        // A fresh topic and database per run, so that runs do not add up.
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        config.events_topic = format!("{}-demo-{run_id}", config.events_topic);
        config.mongodb.database = format!("{}_demo_{run_id}", config.mongodb.database);
        config.group_prefix = format!("{}-demo-{run_id}", config.group_prefix);
        println!(
            "accrete demo on Kafka ({}) + MongoDB ({}): topic {}, database {}\n",
            config.kafka.brokers, config.mongodb.uri, config.events_topic, config.mongodb.database
        );
        let node = Node::start(config)?;
        let events = shop_events(n, seed);
        let started = Instant::now();
        serve(&node)?;
        // The quickstart's cluster hook: each product announced once when it
        // passes the mark, by one node of the cluster.
        let best_seller = BestSeller {
            units: best_seller_units(n),
            ..BestSeller::default()
        };
        let announced = best_seller.announced.clone();
        node.add_cluster_hook(best_seller)?;
        let bar = progress(n as u64, "submitting");
        for chunk in events.chunks(1_000) {
            node.submit_batch(chunk.iter().map(|e| (e.routing_key(), e.at_ms(), e)))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        let bar = progress(n as u64, "folding");
        let models = [
            ProductSales::NAME,
            PageVisitors::NAME,
            LastSeen::NAME,
            TopProducts::NAME,
        ];
        loop {
            // Folded: the positions kept in MongoDB (the broker's reported
            // ends are not trusted); then the replica has every change.
            let folded = models
                .iter()
                .map(|m| node.folded(m))
                .collect::<Result<Vec<u64>, _>>()?;
            bar.set_position(folded.iter().copied().min().unwrap_or(0));
            if folded.iter().all(|f| *f >= n as u64) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        node.wait_caught_up::<ProductSales>(Duration::from_secs(120))?;
        bar.finish();
        let took = started.elapsed();
        println!(
            "\n{n} events submitted to Kafka and folded into MongoDB by four read models in {:.1}s\n",
            took.as_secs_f64()
        );
        let store = node.store();
        let mut ok = true;
        let sales = stored::<ProductSales>(store)?;
        ok &= check(
            "product_sales",
            sales == fold(&ProductSales, &events),
            "equals the plain fold, exactly (pushdown: one blind $inc upsert per product per batch)",
        );
        ok &= check(
            "page_visitors",
            stored::<PageVisitors>(store)? == fold(&PageVisitors, &events),
            "equals the plain fold, exactly (HyperLogLog: read-modify-write)",
        );
        ok &= check(
            "last_seen",
            stored::<LastSeen>(store)? == fold(&LastSeen, &events),
            "equals the plain fold, exactly",
        );
        let top = store.get::<TopProducts>(&())?.unwrap_or_default();
        let expected = fold(&TopProducts, &events).remove(&()).unwrap_or_default();
        ok &= check(
            "top_products",
            top.within_bound(&expected),
            "within its error bound of the plain fold",
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while node.hook_lag(BestSeller::HOOK)? > 0 {
            if Instant::now() > deadline {
                return Err("the best_seller hook did not catch up within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut fired: Vec<String> = announced
            .lock()
            .map_err(|_| "poisoned")?
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        fired.sort();
        let mut passed: Vec<String> = sales
            .iter()
            .filter(|(_, s)| s.units.0 >= best_seller_units(n))
            .map(|(p, _)| p.clone())
            .collect();
        passed.sort();
        let stats = node.hook_stats(BestSeller::HOOK)?;
        ok &= check(
            "best_seller",
            fired == passed,
            &format!(
                "hook announced exactly the {} products past {} units, each once \
                 (change-to-hook latency median {:.0} ms, p99 {:.0} ms)",
                passed.len(),
                best_seller_units(n),
                stats.latency_ms.0,
                stats.latency_ms.1
            ),
        );
        let replica_ok =
            node.replica_snapshot::<ProductSales>()? == sales.into_iter().collect::<Vec<_>>();
        ok &= check(
            "product_sales",
            replica_ok,
            "in this node's replica equals MongoDB",
        );
        for m in [
            ProductSales::NAME,
            PageVisitors::NAME,
            LastSeen::NAME,
            TopProducts::NAME,
        ] {
            let s = node.stats(m)?;
            println!(
                "  {m:<14} {} events, {} batches, {} MongoDB writes ({:.3} per event), {} changes",
                s.events,
                s.batches,
                s.writes,
                s.writes as f64 / s.events.max(1) as f64,
                s.changes
            );
        }
        println!(
            "\nRun more nodes on the same topic with `accrete node --config FILE` (see README); \
             the demo's topic and database are left in place for inspection."
        );
        node.shutdown();
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
