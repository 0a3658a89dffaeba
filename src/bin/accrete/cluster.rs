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
pub(crate) fn demo(
    _: Option<&Path>,
    _: Option<(&str, &str)>,
    _: usize,
    _: f64,
    _: u64,
) -> Fallible<ExitCode> {
    unavailable()
}

#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
pub(crate) fn node(_: Option<&Path>) -> Fallible<ExitCode> {
    unavailable()
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
pub(crate) use enabled::{demo, node};

#[cfg(all(feature = "kafka", feature = "mongodb"))]
mod enabled {
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::Duration;

    use crate::domain::{LastSeen, PageVisitors, ProductSales, Sales, TopProducts};
    use accrete::Deployment;
    use accrete::cluster::{Node, NodeConfig};
    use accrete::model::ReadModel;

    use crate::Fallible;

    /// The demo on Kafka + MongoDB: the configuration file (if any), with
    /// the brokers and URI given on the command line over it.
    pub(crate) fn demo(
        file: Option<&Path>,
        addresses: Option<(&str, &str)>,
        n: usize,
        duplicates: f64,
        seed: u64,
    ) -> Fallible<ExitCode> {
        let mut config = NodeConfig::load(file)?;
        if let Some((kafka, mongodb)) = addresses {
            config.kafka.brokers = kafka.into();
            config.mongodb.uri = mongodb.into();
        }
        // A fresh topic and database per run, so that runs do not add up.
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        config.events_topic = format!("{}-demo-{run_id}", config.events_topic);
        config.mongodb.database = format!("{}_demo_{run_id}", config.mongodb.database);
        config.group_prefix = format!("{}-demo-{run_id}", config.group_prefix);
        println!(
            "accrete demo on Kafka ({}) + MongoDB ({}): topic {}, database {}",
            config.kafka.brokers, config.mongodb.uri, config.events_topic, config.mongodb.database
        );
        println!(
            "a shop's events, delivered at least once and out of order, folded by four read models\n"
        );
        let node = Node::start(config)?;
        // A check only this backend has: the node's replica of
        // product_sales equals what MongoDB holds.
        let ok = crate::demo::run(&node, n, duplicates, seed, |sales| {
            let replica = node.replica_snapshot::<ProductSales>()?;
            let held: Vec<(String, Sales)> =
                sales.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Ok(crate::check(
                "product_sales",
                replica == held,
                "in this node's replica equals MongoDB",
            ))
        })?;
        println!(
            "\nRun more nodes on the same topic with `accrete node --config FILE` (see README); \
             the demo's topic and database are left in place for inspection."
        );
        node.shutdown();
        Ok(crate::exit_code(ok))
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
                s.events,
                s.writes,
                status.lag()
            );
        }
    }
}
