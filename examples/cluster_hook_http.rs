//! A cluster hook driving an external service over HTTP, with an
//! idempotency key: the shape to copy for "send an email", "charge a card",
//! "provision a machine".
//!
//! ```sh
//! scripts/servers.sh start
//! cargo run --features kafka,mongodb --example cluster_hook_http
//! ```
//!
//! A fake payment API listens on loopback. It answers 503 to the first
//! request for each key (to show retries) and recognises a repeated
//! `Idempotency-Key` (to show why the key matters). The read model sums what
//! each customer owes. The hook charges the amount the customer owes when
//! their balance changes, passing `Trigger::idempotency_key`. Start the
//! example several times against the same topic (`ACCRETE_EVENTS_TOPIC`) and
//! the nodes share the customers.

use accrete::Deployment;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accrete::cluster::{Node, NodeConfig};
use accrete::hooks::{ClusterHook, Trigger};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Purchase {
    customer: String,
    cents: i64,
}

/// What each customer owes.
struct Owed;
impl ReadModel for Owed {
    const NAME: &'static str = "owed";
    type Event = Purchase;
    type Key = String;
    type State = Sum<i64>;
    fn project(&self, p: &Purchase, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
        out.push(p.customer.clone(), Sum(p.cents));
        Ok(())
    }
}

/// Charges a customer's balance through the payment API.
struct Charge {
    api: String,
}

impl ClusterHook for Charge {
    type Model = Owed;
    const NAME: &'static str = "charge";

    fn run(&self, t: &Trigger<'_, Owed>) -> Result<(), String> {
        let body = format!(r#"{{"customer":"{}","amount_cents":{}}}"#, t.key, t.state.0);
        let status = post(&self.api, "/charges", t.idempotency_key, &body)?;
        match status {
            200 | 201 => Ok(()),
            // Retried with backoff; after max_attempts, a dead letter.
            other => Err(format!("payment API answered {other}")),
        }
    }
}

/// A minimal HTTP/1.1 POST; returns the status code.
fn post(addr: &str, path: &str, key: &str, body: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {line:?}"))
}

/// What the fake payment API saw.
#[derive(Default)]
struct Api {
    /// Idempotency key → times seen.
    keys: HashMap<String, u32>,
    charged: u32,
    replayed: u32,
    unavailable: u32,
}

/// The fake payment API: 503 on the first attempt of each key, 201 for a
/// new charge, 200 for a repeated idempotency key.
fn serve(listener: TcpListener, api: Arc<Mutex<Api>>) {
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream);
        let mut key = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("idempotency-key:") {
                key = v.trim().to_string();
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let mut api = api.lock().unwrap();
        let seen = api.keys.entry(key).or_insert(0);
        *seen += 1;
        let status = match *seen {
            1 => {
                api.unavailable += 1;
                "503 Service Unavailable"
            }
            2 => {
                api.charged += 1;
                "201 Created"
            }
            _ => {
                api.replayed += 1;
                "200 OK"
            }
        };
        let _ = write!(
            reader.get_mut(),
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n"
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let api = Arc::new(Mutex::new(Api::default()));
    let served = api.clone();
    std::thread::spawn(move || serve(listener, served));

    let mut config = NodeConfig::load(None)?;
    if std::env::var_os("ACCRETE_EVENTS_TOPIC").is_none() {
        // A fresh topic and database per run.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        config.events_topic = format!("hook-example-{run}");
        config.group_prefix = format!("hook-example-{run}");
        config.mongodb.database = format!("hook_example_{run}");
    }
    let node = Node::start(config)?;
    node.add_model(Owed)?;
    node.add_cluster_hook(Charge { api: addr.clone() })?;

    for (i, customer) in ["ana", "bo", "cy", "ana", "bo", "ana"].iter().enumerate() {
        let p = Purchase {
            customer: customer.to_string(),
            cents: 1_000 * (i as i64 + 1),
        };
        let id = node.submit(customer, 0, &p)?;
        println!("submitted {id}: {customer} pays {} cents", p.cents);
    }

    // Wait until every change has been acted on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.hook_lag(Charge::NAME)? > 0 || node.hook_stats(Charge::NAME)?.runs == 0 {
        if Instant::now() > deadline {
            return Err("the hook did not catch up within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let stats = node.hook_stats(Charge::NAME)?;
    let api = api.lock().unwrap();
    println!("payment API at {addr}:");
    println!(
        "  {} charges created, {} 503s answered (each retried), {} replays recognised by idempotency key",
        api.charged, api.unavailable, api.replayed
    );
    println!(
        "hook `charge`: {} runs, {} retries, {} dead letters, {} triggers coalesced, change-to-hook latency median {:.0} ms",
        stats.runs, stats.retries, stats.dead_letters, stats.coalesced, stats.latency_ms.0
    );
    for customer in ["ana", "bo", "cy"] {
        println!(
            "  {customer} owes {:?}",
            node.store().get::<Owed>(&customer.to_string())?
        );
    }
    node.shutdown();
    Ok(())
}
