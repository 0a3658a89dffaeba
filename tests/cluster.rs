//! The cluster against real servers: a Kafka-protocol broker and a
//! MongoDB-protocol server (`scripts/servers.sh start`; addresses from
//! `ACCRETE_KAFKA_BROKERS` and `ACCRETE_MONGODB_URI`). Without them the tests
//! fail, saying so.
//!
//! Node processes are this test binary re-executed (`ACCRETE_CLUSTER_CHILD`
//! names their directory); the parent submits events, kills nodes with
//! SIGKILL or failpoints, starts others, and finally compares MongoDB with
//! the plain left fold of the distinct events, and every surviving node's
//! replica with MongoDB.
#![cfg(all(feature = "kafka", feature = "mongodb"))]

mod common;

use accrete::Deployment;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use accrete::cluster::{Node, NodeConfig, NodeStats};
use accrete::hooks::{ClusterHook, Trigger};
use accrete::model::ReadModel;
use accrete::store::mongo::MongoStore;
use common::{
    Balances, Payment, Receipts, Rng, Shapes, SpendByVisitor, Visitors, oracle, payments,
};

const CHILD: &str = "ACCRETE_CLUSTER_CHILD";

/// The tests of this file run one at a time: each starts a cluster of node
/// processes against the one broker and server, on two cores.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The servers' addresses; fails loudly when one does not answer.
fn servers() -> (String, String) {
    let brokers =
        std::env::var("ACCRETE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let uri =
        std::env::var("ACCRETE_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let addr: std::net::SocketAddr = first
        .parse()
        .unwrap_or_else(|_| panic!("ACCRETE_KAFKA_BROKERS={brokers}: use ip:port"));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| {
        panic!("no Kafka broker answers at {brokers} ({e}): start one with `scripts/servers.sh start`, or set ACCRETE_KAFKA_BROKERS")
    });
    (brokers, uri)
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

fn test_config(tag: &str, partitions: u32, batch_size: usize) -> NodeConfig {
    let (brokers, uri) = servers();
    let name = unique(tag);
    let mut c = NodeConfig::default();
    c.kafka.brokers = brokers;
    c.mongodb.uri = uri;
    c.mongodb.database = name.replace('-', "_");
    c.events_topic = format!("{name}.events");
    c.group_prefix = name;
    c.partitions = partitions;
    c.batch_size = batch_size;
    c.flush_interval_ms = 20;
    c
}

/// Serves the four models, and `Shapes` (tuple keys holding quotes, dots,
/// dollars, braces) where the test asks for it: the oracle tests.
fn serve_all(node: &Node, shapes: bool) {
    node.add_model(Balances).unwrap();
    node.add_model(Receipts).unwrap();
    node.add_model(Visitors).unwrap();
    node.add_model(SpendByVisitor).unwrap();
    if shapes {
        node.add_model(Shapes).unwrap();
    }
}

/// The marker file that makes a cluster's children serve `Shapes`.
const SHAPES: &str = "shapes";

/// The marker file that makes a cluster's children serve `Balances` alone.
const ONLY_BALANCES: &str = "only-balances";

fn dump<M: ReadModel>(node: &Node, dir: &Path, id: &str) {
    let snap = node.replica_snapshot::<M>().unwrap();
    std::fs::write(
        dir.join(format!("replica-{id}-{}.json", M::NAME)),
        serde_json::to_vec(&snap).unwrap(),
    )
    .unwrap();
}

/// A node process: serves every model until `<dir>/stop` appears, then
/// waits until it is caught up, writes its replicas and stats, and leaves.
fn child(dir: &str) {
    // The node's log (its stderr goes to `node-<id>.log`).
    // Debug: each batch a materializer writes is a line.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let dir = PathBuf::from(dir);
    let config = NodeConfig::load(Some(&dir.join("config.toml"))).expect("child: config");
    let id = config.node_id.clone();
    let node = Node::start(config.clone()).expect("child: start");
    let shapes = dir.join(SHAPES).exists();
    let only = dir.join(ONLY_BALANCES).exists();
    if only {
        node.add_model(Balances).unwrap();
    } else {
        serve_all(&node, shapes);
    }
    let grafts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if std::env::var_os("ACCRETE_CLUSTER_HOOKS").is_some() {
        let report = MongoStore::connect(&config.mongodb).unwrap();
        node.add_cluster_hook(Audit {
            report,
            node: id.clone(),
        })
        .unwrap();
        let g = grafts.clone();
        node.add_node_hook::<Balances>(move |_, _, _| {
            g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    }
    while !dir.join("stop").exists() {
        if dir.join(format!("leave-{id}")).exists() {
            // Leaves the cluster mid-stream, gracefully: what it holds is
            // written and its partitions move to the others.
            node.shutdown();
            std::fs::write(dir.join(format!("left-{id}")), b"").unwrap();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Duration::from_secs(180);
    node.wait_caught_up::<Balances>(t).unwrap();
    if only {
        dump::<Balances>(&node, &dir, &id);
        let NodeStats {
            events,
            writes,
            conflicts,
            ..
        } = node.stats(Balances::NAME).unwrap();
        let stats = vec![(Balances::NAME.to_string(), events, writes, conflicts)];
        std::fs::write(
            dir.join(format!("stats-{id}.json")),
            serde_json::to_vec(&stats).unwrap(),
        )
        .unwrap();
        node.shutdown();
        return;
    }
    node.wait_caught_up::<Receipts>(t).unwrap();
    node.wait_caught_up::<Visitors>(t).unwrap();
    node.wait_caught_up::<SpendByVisitor>(t).unwrap();
    if shapes {
        node.wait_caught_up::<Shapes>(t).unwrap();
        dump::<Shapes>(&node, &dir, &id);
    }
    dump::<Balances>(&node, &dir, &id);
    dump::<Receipts>(&node, &dir, &id);
    dump::<Visitors>(&node, &dir, &id);
    dump::<SpendByVisitor>(&node, &dir, &id);
    let stats: Vec<(String, u64, u64, u64)> = [
        Balances::NAME,
        Receipts::NAME,
        Visitors::NAME,
        SpendByVisitor::NAME,
    ]
    .iter()
    .map(|m| {
        let NodeStats {
            events,
            writes,
            conflicts,
            ..
        } = node.stats(m).unwrap();
        (m.to_string(), events, writes, conflicts)
    })
    .collect();
    std::fs::write(
        dir.join(format!("grafts-{id}")),
        grafts
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("stats-{id}.json")),
        serde_json::to_vec(&stats).unwrap(),
    )
    .unwrap();
    node.shutdown();
}

/// Node processes sharing one directory.
struct Cluster {
    dir: tempfile::TempDir,
    test: &'static str,
    children: Vec<(String, Child)>,
    /// Children run the audit hooks too.
    hooks: bool,
}

impl Cluster {
    fn new(test: &'static str, config: &NodeConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), toml_of(config)).unwrap();
        Cluster {
            dir,
            test,
            children: Vec::new(),
            hooks: false,
        }
    }

    fn spawn(&mut self, id: &str, failpoint: Option<String>) {
        let exe = std::env::current_exe().unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("node-{id}.log"))).unwrap();
        // Each node runs in its own directory. One without a failpoint (a
        // failpoint aborts on purpose) may leave a core there if it crashes:
        // `explain` prints where (CI keeps only the output).
        let cwd = self.dir.path().join(format!("cwd-{id}"));
        std::fs::create_dir_all(&cwd).unwrap();
        let mut cmd = if failpoint.is_none() {
            let mut c = Command::new("sh");
            c.args(["-c", "ulimit -c unlimited 2>/dev/null; exec \"$0\" \"$@\""])
                .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.current_dir(&cwd)
            .args([self.test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, self.dir.path())
            .env("ACCRETE_NODE_ID", id)
            .env_remove("ACCRETE_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = failpoint {
            cmd.env("ACCRETE_FAILPOINT", f);
        }
        if self.hooks {
            cmd.env("ACCRETE_CLUSTER_HOOKS", "1");
        }
        self.children.push((id.to_string(), cmd.spawn().unwrap()));
    }

    /// Asks one node to leave gracefully and waits until it has: returns
    /// how long its shutdown took.
    fn leave(&mut self, id: &str, ctx: &str) -> Duration {
        let started = Instant::now();
        std::fs::write(self.dir.path().join(format!("leave-{id}")), b"").unwrap();
        let i = self.children.iter().position(|(c, _)| c == id).unwrap();
        let (_, mut child) = self.children.remove(i);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{ctx}: node {id} failed leaving ({status}){}",
                    explain(id, status, self.dir.path())
                );
                assert!(
                    self.dir.path().join(format!("left-{id}")).exists(),
                    "{ctx}: node {id} exited without leaving"
                );
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(120) {
                print_stacks(id, child.id(), self.dir.path());
                let _ = child.kill();
                panic!(
                    "{ctx}: node {id} did not leave within 120 s; logs in {}",
                    self.dir.path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self, id: &str) {
        if let Some(i) = self.children.iter().position(|(c, _)| c == id) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Restarts nodes that died (by a failpoint); returns how many.
    fn revive(&mut self, rng: &mut Rng, fresh_id: &mut usize) -> usize {
        let mut dead = Vec::new();
        for (id, child) in &mut self.children {
            if child.try_wait().unwrap().is_some() {
                dead.push(id.clone());
            }
        }
        for id in &dead {
            self.kill(id);
            *fresh_id += 1;
            let f = random_failpoint(rng);
            self.spawn(&format!("n{fresh_id}"), f);
        }
        dead.len()
    }

    /// Asks every node to finish; returns the ids that finished cleanly.
    fn stop(&mut self, ctx: &str) -> Vec<String> {
        std::fs::write(self.dir.path().join("stop"), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut done = Vec::new();
        for (id, child) in &mut self.children {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    if !status.success() {
                        let log =
                            std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log")))
                                .unwrap_or_default();
                        let tail: String = log
                            .lines()
                            .rev()
                            .take(30)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n");
                        panic!(
                            "{ctx}: node {id} failed at the end ({status}):\n{tail}{}",
                            explain(id, status, self.dir.path())
                        );
                    }
                    done.push(id.clone());
                    break;
                }
                if Instant::now() > deadline {
                    print_stacks(id, child.id(), self.dir.path());
                    let _ = child.kill();
                    panic!(
                        "{ctx}: node {id} did not finish within 240 s; logs in {}",
                        self.dir.path().display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.children.clear();
        done
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Where each living node stands, before it is killed: a node
            // that stopped making progress shows where it waits.
            for (id, c) in &mut self.children {
                if c.try_wait().ok().flatten().is_none() {
                    print_stacks(id, c.id(), self.dir.path());
                }
            }
        }
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failed test names this directory (node logs, replicas): keep it,
        // and show the end of each node's log (CI keeps only the output).
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "kept the cluster's directory: {}",
                self.dir.path().display()
            );
            let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
            logs.sort();
            for path in logs {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let notable: Vec<&str> = lines
                    .iter()
                    .copied()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
                    .collect();
                eprintln!(
                    "--- {} ({} lines; its last warnings and errors, then its last lines)",
                    path.display(),
                    lines.len()
                );
                for l in notable.iter().skip(notable.len().saturating_sub(12)) {
                    eprintln!("  {l}");
                }
                eprintln!("  ...");
                for l in lines.iter().skip(lines.len().saturating_sub(6)) {
                    eprintln!("  {l}");
                }
            }
        }
    }
}

/// How many times nodes rejoined a consumer group whose members disagreed
/// on who holds what (see `cluster::placement::Audit`), for the report.
fn rejoins(dir: &Path) -> String {
    let n: usize = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .matches("disagree on who holds")
                        .count()
                })
                .sum()
        })
        .unwrap_or(0);
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} rejoins after members disagreed on who holds what)")
    }
}

/// The threads of a living node and where accrete's code is in each, with
/// gdb (when installed; the whole dump goes to `stacks-<id>.txt`).
/// For a node killed by a fault (not a failpoint's abort): the stack of the
/// faulting thread from its core, if one was written and gdb is here; the
/// whole of every thread's stack goes to `stacks-<id>.txt`.
fn explain(id: &str, status: std::process::ExitStatus, dir: &Path) -> String {
    use std::os::unix::process::ExitStatusExt;
    // SIGILL, SIGBUS, SIGFPE, SIGSEGV.
    if !matches!(status.signal(), Some(4 | 7 | 8 | 11)) {
        return String::new();
    }
    let cwd = dir.join(format!("cwd-{id}"));
    let core = std::fs::read_dir(&cwd).ok().and_then(|entries| {
        entries.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("core"))
        })
    });
    let Some(core) = core else {
        return format!("\n(no core in {}: core dumps are off here)", cwd.display());
    };
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("gdb")
        .arg("-batch")
        .args(["-ex", "bt 40", "-ex", "thread apply all bt"])
        .arg(&exe)
        .arg(&core)
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        return format!("\n(a core is in {}; no gdb to read it)", core.display());
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::write(dir.join(format!("stacks-{id}.txt")), text.as_bytes());
    let faulting: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Thread "))
        .filter(|l| l.starts_with('#'))
        .map(|l| &l[..l.len().min(200)])
        .collect();
    format!(
        "\n--- node {id}'s faulting thread (all threads in stacks-{id}.txt):\n{}",
        faulting.join("\n")
    )
}

fn print_stacks(id: &str, pid: u32, dir: &Path) {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        eprintln!("--- node {id} (pid {pid}) is alive; no gdb to show its threads");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::write(dir.join(format!("stacks-{id}.txt")), text.as_bytes());
    eprintln!("--- node {id} (pid {pid}) is alive; its threads (accrete frames, innermost first):");
    let mut frames = 0;
    for line in text.lines() {
        if line.starts_with("Thread ") {
            eprintln!("  {line}");
            frames = 0;
        } else if line.contains("accrete::") && frames < 4 {
            frames += 1;
            let at = line.find(" in ").map_or(line, |i| &line[i + 4..]);
            eprintln!("      {}", at.chars().take(160).collect::<String>());
        }
    }
}

fn toml_of(c: &NodeConfig) -> String {
    // The config's own serde form; node_id comes from each child's env.
    let mut text = String::new();
    text.push_str(&format!(
        "events_topic = {:?}\npartitions = {}\ngroup_prefix = {:?}\nbatch_size = {}\nflush_interval_ms = {}\n",
        c.events_topic, c.partitions, c.group_prefix, c.batch_size, c.flush_interval_ms
    ));
    text.push_str(&format!("[kafka]\nbrokers = {:?}\n", c.kafka.brokers));
    if !c.kafka.properties.is_empty() {
        text.push_str("[kafka.properties]\n");
        for (k, v) in &c.kafka.properties {
            text.push_str(&format!("{k:?} = {v:?}\n"));
        }
    }
    text.push_str(&format!(
        "[mongodb]\nuri = {:?}\ndatabase = {:?}\n",
        c.mongodb.uri, c.mongodb.database
    ));
    text
}

/// A failpoint that aborts a node at a random step, or none.
fn random_failpoint(rng: &mut Rng) -> Option<String> {
    if rng.chance(0.5) {
        return None;
    }
    let points = [
        "before_store_write",
        "after_store_write",
        "after_publish",
        "after_commit",
    ];
    Some(format!(
        "{}:{}",
        points[rng.below(4) as usize],
        1 + rng.below(6)
    ))
}

fn stored<M: ReadModel>(store: &MongoStore) -> BTreeMap<M::Key, M::State> {
    let mut out = BTreeMap::new();
    store
        .scan::<M>(|k, v| {
            out.insert(k, v);
            true
        })
        .unwrap();
    out.retain(|_, v| !accrete::monoids::Monoid::is_identity(v));
    out
}

fn check_model<M>(
    model: &M,
    store: &MongoStore,
    events: &[Payment],
    dir: &Path,
    nodes: &[String],
    ctx: &str,
) where
    M: ReadModel<Event = Payment>,
{
    let stored = stored::<M>(store);
    // Only the events the projection refuses are dead letters: a write the
    // server failed for a passing reason must be retried, not parked.
    let mut deltas = accrete::model::Deltas::new();
    let refused = events
        .iter()
        .filter(|e| {
            deltas.clear();
            model.project(e, &mut deltas).is_err()
        })
        .count();
    let dead = store.dead_letters::<M>().unwrap();
    assert_eq!(
        dead.len(),
        refused,
        "{ctx}: {} has {} dead letters where its projection refuses {refused} events; e.g. {:?}",
        M::NAME,
        dead.len(),
        dead.iter().take(3).map(|d| &d.reason).collect::<Vec<_>>()
    );
    assert_eq!(
        stored,
        oracle(model, events),
        "{ctx}: {} in MongoDB differs from the fold of the distinct events",
        M::NAME
    );
    for id in nodes {
        let bytes = std::fs::read(dir.join(format!("replica-{id}-{}.json", M::NAME))).unwrap();
        let replica: Vec<(M::Key, M::State)> = serde_json::from_slice(&bytes).unwrap();
        let mut replica: BTreeMap<M::Key, M::State> = replica.into_iter().collect();
        replica.retain(|_, v| !accrete::monoids::Monoid::is_identity(v));
        let differing: Vec<String> = stored
            .iter()
            .filter(|(k, v)| replica.get(k) != Some(v))
            .map(|(k, v)| format!("{k:?}: mongodb {v:?}, replica {:?}", replica.get(k)))
            .chain(
                replica
                    .keys()
                    .filter(|k| !stored.contains_key(k))
                    .map(|k| format!("{k:?} only in the replica")),
            )
            .collect();
        assert!(
            differing.is_empty(),
            "{ctx}: node {id}'s replica of {} differs from MongoDB at {} keys, e.g. {:?}",
            M::NAME,
            differing.len(),
            &differing[..differing.len().min(4)]
        );
    }
}

/// Checks every model against the fold, then drops the test's database.
fn check_all(config: &NodeConfig, events: &[Payment], dir: &Path, nodes: &[String], ctx: &str) {
    check_all_keeping(config, events, dir, nodes, ctx);
    MongoStore::connect(&config.mongodb)
        .unwrap()
        .database()
        .drop()
        .run()
        .unwrap();
}

/// Checks every model against the fold: MongoDB, each node's replicas, the
/// dead letters.
fn check_all_keeping(
    config: &NodeConfig,
    events: &[Payment],
    dir: &Path,
    nodes: &[String],
    ctx: &str,
) {
    let store = MongoStore::connect(&config.mongodb).unwrap();
    check_model(&Balances, &store, events, dir, nodes, ctx);
    check_model(&Receipts, &store, events, dir, nodes, ctx);
    check_model(&Visitors, &store, events, dir, nodes, ctx);
    check_model(&SpendByVisitor, &store, events, dir, nodes, ctx);
    if dir.join(SHAPES).exists() {
        check_model(&Shapes, &store, events, dir, nodes, ctx);
    }
    let dead = store.dead_letters::<Balances>().unwrap();
    let zero = events.iter().filter(|p| p.cents == 0).count();
    assert_eq!(
        dead.len(),
        zero,
        "{ctx}: every payment of no money is a dead letter, once"
    );
}

fn submit(node: &Node, events: &[Payment]) {
    node.submit_batch(events.iter().map(|e| (e.from.to_le_bytes(), e.at_ms, e)))
        .unwrap();
}

/// Waits until every model has folded all `n` events (the positions kept in
/// MongoDB; the broker's reported ends are not trusted for this).
fn wait_folded(node: &Node, n: usize, ctx: &str) {
    wait_models_folded(
        node,
        &[
            Balances::NAME,
            Receipts::NAME,
            Visitors::NAME,
            SpendByVisitor::NAME,
        ],
        n,
        ctx,
    );
}

fn wait_models_folded(node: &Node, models: &[&str], n: usize, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    for &model in models {
        loop {
            let folded = node.folded(model).unwrap();
            if folded >= n as u64 {
                assert_eq!(
                    folded, n as u64,
                    "{ctx}: {model} folded more events than there are"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: {model} folded only {folded} of {n} events in 240 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn read_stats(dir: &Path, id: &str) -> Vec<(String, u64, u64, u64)> {
    serde_json::from_slice(&std::fs::read(dir.join(format!("stats-{id}.json"))).unwrap()).unwrap()
}

/// Three nodes in one group on 12 partitions; one is SIGKILLed mid-stream,
/// another joins later. The result is exact, and every surviving node's
/// replica equals MongoDB.
#[test]
fn three_nodes_one_killed_one_joining() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    let _serial = one_at_a_time();
    let config = test_config("multi", 12, 2_000);
    let mut rng = Rng(0x5eed_0001);
    let events = payments(&mut rng, 30_000, 400);
    let submitter = Node::start(config.clone()).unwrap();
    let mut cluster = Cluster::new("three_nodes_one_killed_one_joining", &config);
    let (first, rest) = events.split_at(10_000);
    submit(&submitter, first);
    for id in ["a", "b", "c"] {
        cluster.spawn(id, None);
    }
    // Mid-stream: events keep arriving while b is killed and d joins.
    for (i, chunk) in rest.chunks(2_000).enumerate() {
        submit(&submitter, chunk);
        std::thread::sleep(Duration::from_millis(400));
        if i == 3 {
            cluster.kill("b");
        }
        if i == 6 {
            cluster.spawn("d", None);
        }
    }
    wait_folded(&submitter, events.len(), "three nodes");
    let nodes = cluster.stop("three nodes");
    assert_eq!(nodes.len(), 3, "a, c and d finish");
    let busy = nodes
        .iter()
        .filter(|id| {
            read_stats(cluster.dir.path(), id)
                .iter()
                .any(|(_, events, _, _)| *events > 0)
        })
        .count();
    assert!(
        busy >= 2,
        "the partitions were split among the nodes (busy: {busy} of {nodes:?})"
    );
    for id in &nodes {
        eprintln!("node {id}: {:?}", read_stats(cluster.dir.path(), id));
    }
    check_all(
        &config,
        &events,
        cluster.dir.path(),
        &nodes,
        "three nodes, b killed, d joining",
    );
    submitter.shutdown();
}

/// The oracle test on Kafka + MongoDB: random partition counts, batch
/// sizes, node counts; nodes aborted at random failpoints and SIGKILLed at
/// random times, restarted; the result equals the fold of the distinct
/// events. `ACCRETE_CLUSTER_SEEDS` sets how many seeds (each takes seconds:
/// consumer groups rebalance), `ACCRETE_SEED` replays one.
#[test]
fn cluster_matches_the_oracle_through_kills() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    let _serial = one_at_a_time();
    for seed in common::seeds_with(
        "cluster_matches_the_oracle_through_kills",
        "ACCRETE_CLUSTER_SEEDS",
        3,
    ) {
        let mut rng = Rng(seed);
        let partitions = 1 + rng.below(8) as u32;
        let batch = 1 + rng.below(3_000) as usize;
        let config = test_config("oracle", partitions, batch);
        let n = 500 + rng.below(4_000) as usize;
        let accounts = 1 + rng.below(60) as u16;
        let events = payments(&mut rng, n, accounts);
        let ctx = format!(
            "seed {seed} (replay: ACCRETE_SEED={seed}): {n} events, {partitions} partitions, batch {batch}"
        );
        let submitter = Node::start(config.clone()).unwrap();
        let mut cluster = Cluster::new("cluster_matches_the_oracle_through_kills", &config);
        std::fs::write(cluster.dir.path().join(SHAPES), b"").unwrap();
        let nodes = 1 + rng.below(3) as usize;
        let mut fresh = 0;
        for _ in 0..nodes {
            fresh += 1;
            let f = random_failpoint(&mut rng);
            cluster.spawn(&format!("n{fresh}"), f);
        }
        let mut kills = 0;
        for chunk in events.chunks(n / 5 + 1) {
            submit(&submitter, chunk);
            std::thread::sleep(Duration::from_millis(rng.below(1_500)));
            kills += cluster.revive(&mut rng, &mut fresh);
            if rng.chance(0.4) && !cluster.children.is_empty() {
                let i = rng.below(cluster.children.len() as u64) as usize;
                let id = cluster.children[i].0.clone();
                cluster.kill(&id);
                kills += 1;
                fresh += 1;
                cluster.spawn(&format!("n{fresh}"), None);
            }
        }
        // Nodes still armed with a failpoint may die before the end: give
        // the survivors a clean replacement.
        std::thread::sleep(Duration::from_millis(500));
        kills += cluster.revive(&mut rng, &mut fresh);
        fresh += 1;
        cluster.spawn(&format!("n{fresh}"), None);
        // Nodes may still die at their failpoints meanwhile: keep one clean
        // node running until every event is folded.
        let deadline = Instant::now() + Duration::from_secs(240);
        while [
            Balances::NAME,
            Receipts::NAME,
            Visitors::NAME,
            SpendByVisitor::NAME,
            Shapes::NAME,
        ]
        .iter()
        .any(|m| submitter.folded(m).unwrap() < n as u64)
        {
            assert!(
                Instant::now() < deadline,
                "{ctx}: not folded within 240 s; logs in {}",
                cluster.dir.path().display()
            );
            if cluster.revive(&mut rng, &mut fresh) > 0 {
                kills += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let ctx = format!("{ctx}, {kills} kills");
        wait_folded(&submitter, n, &ctx);
        let finished = stop_tolerating_failpoints(&mut cluster, &ctx);
        check_all(&config, &events, cluster.dir.path(), &finished, &ctx);
        eprintln!("{ctx}: ok{}", rejoins(cluster.dir.path()));
        submitter.shutdown();
    }
}

/// Stops the cluster; a node that dies at its failpoint meanwhile is
/// dropped from the replica comparison (the others still must finish).
fn stop_tolerating_failpoints(cluster: &mut Cluster, ctx: &str) -> Vec<String> {
    std::fs::write(cluster.dir.path().join("stop"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut done = Vec::new();
    let mut children = std::mem::take(&mut cluster.children);
    for (id, child) in &mut children {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                if status.success() {
                    done.push(id.clone());
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: node {id} did not finish; logs in {}",
                cluster.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(
        !done.is_empty(),
        "{ctx}: no node finished; logs in {}",
        cluster.dir.path().display()
    );
    done
}

/// One node in this process, no faults: the baseline.
#[test]
fn one_node_folds_exactly() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let _serial = one_at_a_time();
    let mut config = test_config("single", 4, 1_000);
    // Collections under a prefix (checked below).
    config.mongodb.collection_prefix = "shop_".into();
    let mut rng = Rng(0x5eed_0002);
    let events = payments(&mut rng, 5_000, 50);
    let node = Node::start(config.clone()).unwrap();
    serve_all(&node, true);
    submit(&node, &events);
    wait_folded(&node, events.len(), "one node");
    // `wait_caught_up` trusts the broker's reported ends, which tansu has
    // been seen to report late: count the folded events of `Shapes` too.
    wait_models_folded(&node, &[Shapes::NAME], events.len(), "one node");
    let t = Duration::from_secs(120);
    node.wait_caught_up::<Balances>(t).unwrap();
    node.wait_caught_up::<Receipts>(t).unwrap();
    node.wait_caught_up::<Visitors>(t).unwrap();
    node.wait_caught_up::<SpendByVisitor>(t).unwrap();
    node.wait_caught_up::<Shapes>(t).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SHAPES), b"").unwrap();
    for f in [
        dump::<Balances>,
        dump::<Receipts>,
        dump::<Visitors>,
        dump::<SpendByVisitor>,
        dump::<Shapes>,
    ] {
        f(&node, dir.path(), "local");
    }
    let stats = node.stats(Balances::NAME).unwrap();
    eprintln!("one node: {stats:?}");
    assert_eq!(
        stats.events,
        events.len() as u64,
        "each event read once without faults"
    );
    let names = MongoStore::connect(&config.mongodb)
        .unwrap()
        .database()
        .list_collection_names()
        .run()
        .unwrap();
    for name in [
        "shop_balances",
        "shop_spend_by_visitor",
        "shop_accrete.positions",
        "shop_accrete.members",
    ] {
        assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n == "balances" || n.starts_with("accrete.")),
        "an unprefixed collection: {names:?}"
    );
    check_all(
        &config,
        &events,
        dir.path(),
        &["local".to_string()],
        "one node",
    );
    node.shutdown();
}

// ---- hooks ----

/// A cluster hook that records every run (with its node) in MongoDB, so the
/// test can count runs and duplicates.
struct Audit {
    report: MongoStore,
    node: String,
}

impl ClusterHook for Audit {
    type Model = Balances;
    const NAME: &'static str = "audit";
    fn run(&self, t: &Trigger<'_, Balances>) -> Result<(), String> {
        self.report
            .database()
            .collection::<mongodb::bson::Document>("audit_runs")
            .insert_one(mongodb::bson::doc! {
                "id": t.idempotency_key,
                "key": i64::from(*t.key),
                "version": t.version as i64,
                "state": t.state.0,
                "delta": t.delta.0,
                "node": &self.node,
            })
            .run()
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What the audit hook's runs say.
struct Audited {
    /// Per key, the highest version a run saw.
    highest: BTreeMap<u16, u64>,
    /// Per key, the deltas of its distinct runs added up.
    deltas: BTreeMap<u16, i64>,
    runs: usize,
    /// Distinct idempotency keys.
    distinct: usize,
}

/// Every key's runs. Runs sharing an idempotency key (re-runs after a
/// kill) must carry the same key and delta.
fn audit(store: &MongoStore, ctx: &str) -> Audited {
    let runs: Vec<mongodb::bson::Document> = store
        .database()
        .collection::<mongodb::bson::Document>("audit_runs")
        .find(mongodb::bson::doc! {})
        .run()
        .unwrap()
        .map(|d| d.unwrap())
        .collect();
    let mut highest = BTreeMap::new();
    let mut by_id: BTreeMap<String, (u16, i64)> = BTreeMap::new();
    for r in &runs {
        let key = r.get_i64("key").unwrap() as u16;
        let v = r.get_i64("version").unwrap() as u64;
        let delta = r.get_i64("delta").unwrap();
        let e = highest.entry(key).or_insert(0);
        *e = (*e).max(v);
        let id = r.get_str("id").unwrap().to_string();
        if let Some(first) = by_id.get(&id) {
            assert_eq!(
                *first,
                (key, delta),
                "{ctx}: a re-run of {id} carries another key or delta"
            );
        }
        by_id.insert(id, (key, delta));
    }
    let mut deltas = BTreeMap::new();
    for (key, delta) in by_id.values() {
        *deltas.entry(*key).or_insert(0) += delta;
    }
    Audited {
        highest,
        deltas,
        runs: runs.len(),
        distinct: by_id.len(),
    }
}

/// What every run of the audit hook must show: every key's latest change
/// ran; per key, the deltas of distinct runs add up to the state (no change
/// reached two runs, none was missed); with `once`, no trigger ran twice.
fn check_hook_runs(
    store: &MongoStore,
    audited: &Audited,
    final_versions: &BTreeMap<u16, u64>,
    once: bool,
    ctx: &str,
) {
    assert_eq!(
        &audited.highest, final_versions,
        "{ctx}: every key's latest change ran the hook"
    );
    let states = stored::<Balances>(store);
    let differing: Vec<String> = states
        .iter()
        .filter(|(k, s)| audited.deltas.get(*k).copied().unwrap_or(0) != s.0)
        .map(|(k, s)| format!("{k}: state {}, deltas {:?}", s.0, audited.deltas.get(k)))
        .chain(
            audited
                .deltas
                .iter()
                .filter(|(k, d)| **d != 0 && !states.contains_key(*k))
                .map(|(k, d)| format!("{k}: no state, deltas {d}")),
        )
        .collect();
    assert!(
        differing.is_empty(),
        "{ctx}: per key, the deltas of distinct runs must add up to the state; {} of {} \
         keys differ, e.g. {:?}",
        differing.len(),
        states.len(),
        &differing[..differing.len().min(5)]
    );
    if once {
        assert_eq!(
            audited.runs, audited.distinct,
            "{ctx}: without faults, no trigger runs twice"
        );
    }
}

/// Final versions of every key of Balances.
fn versions(store: &MongoStore) -> BTreeMap<u16, u64> {
    store
        .database()
        .collection::<mongodb::bson::Document>(Balances::NAME)
        .find(mongodb::bson::doc! {})
        .run()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            (
                d.get_i64("_id")
                    .map(|k| k as u16)
                    .or_else(|_| d.get_i32("_id").map(|k| k as u16))
                    .unwrap(),
                d.get_i64("v").unwrap() as u64,
            )
        })
        .collect()
}

fn wait_hook(node: &Node, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut quiet_since: Option<Instant> = None;
    loop {
        let lag = node.hook_lag_of("audit", Balances::NAME).unwrap();
        if lag == 0 {
            // Ends reported by some brokers lag behind: quiet for a while.
            match quiet_since {
                Some(t) if t.elapsed() > Duration::from_secs(3) => return,
                None => quiet_since = Some(Instant::now()),
                _ => {}
            }
        } else {
            quiet_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: the hook lags by {lag} after 240 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three node processes run a cluster hook; mid-stream one leaves
/// (gracefully, or SIGKILLed) and another joins. Every key's latest change
/// ran the hook (a run that saw a state at least as new), re-runs repeat
/// their idempotency key and delta, per key the deltas of distinct runs
/// add up to the state exactly (no change twice, none missed), without a
/// kill no trigger runs twice, and node hooks ran on every live node.
/// `ACCRETE_CLUSTER_SEEDS` sets how many seeds.
#[test]
fn cluster_hooks_run_through_a_kill() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    let _serial = one_at_a_time();
    // Its own count: each seed runs twice (a node leaving, a node killed),
    // about 90 s a seed on the test servers.
    let seeds = common::seeds_with(
        "cluster_hooks_run_through_a_kill",
        "ACCRETE_CLUSTER_HOOK_SEEDS",
        1,
    );
    for seed in seeds {
        for kill in [false, true] {
            let ctx = format!(
                "hooks, seed {seed} (replay: ACCRETE_SEED={seed}), b {}",
                if kill { "killed" } else { "leaves" }
            );
            let ctx = ctx.as_str();
            let mut rng = Rng(seed);
            let partitions = 4 + rng.below(9) as u32;
            let config = test_config("hooks", partitions, 200 + rng.below(1_500) as usize);
            let accounts = 1 + rng.below(400) as u16;
            let events = payments(&mut rng, 12_000, accounts);
            let leave_at = 2 + rng.below(4) as usize;
            let join_at = leave_at + 1 + rng.below(5) as usize;
            let submitter = Node::start(config.clone()).unwrap();
            let mut cluster = Cluster::new("cluster_hooks_run_through_a_kill", &config);
            cluster.hooks = true;
            for id in ["a", "b", "c"] {
                cluster.spawn(id, None);
            }
            let mut left_in = None;
            for (i, chunk) in events.chunks(1_000).enumerate() {
                submit(&submitter, chunk);
                std::thread::sleep(Duration::from_millis(300));
                if i == leave_at {
                    if kill {
                        cluster.kill("b");
                    } else {
                        left_in = Some(cluster.leave("b", ctx));
                    }
                }
                if i == join_at {
                    cluster.spawn("d", None);
                }
            }
            wait_folded(&submitter, events.len(), ctx);
            let hook_store = MongoStore::connect(&config.mongodb).unwrap();
            // The hook runs on the nodes; the submitter only watches its lag.
            wait_hook(&submitter, ctx);
            let nodes = cluster.stop(ctx);
            let final_versions = versions(&hook_store);
            let audited = audit(&hook_store, ctx);
            eprintln!(
                "{ctx}: {} keys, {} partitions, {} hook runs, {} duplicates{}",
                final_versions.len(),
                partitions,
                audited.runs,
                audited.runs - audited.distinct,
                left_in.map_or(String::new(), |t| format!(", b left in {t:?}"))
            );
            // The state first: the hook's deltas are checked against it.
            check_all_keeping(&config, &events, cluster.dir.path(), &nodes, ctx);
            check_hook_runs(&hook_store, &audited, &final_versions, !kill, ctx);
            hook_store.database().drop().run().unwrap();
            for id in &nodes {
                let grafts: u64 =
                    std::fs::read_to_string(cluster.dir.path().join(format!("grafts-{id}")))
                        .unwrap()
                        .parse()
                        .unwrap();
                assert!(grafts > 0, "{ctx}: node {id}'s node hook ran");
            }
            submitter.shutdown();
        }
    }
}

/// A MongoDB server slowed down on purpose: a TCP proxy in front of it
/// through which every connection shares one link of `bytes_per_sec`, and
/// every read waits `latency` more. Returns the URI to reach the server
/// through it (the proxy lives as long as the test process).
fn throttled(uri: &str, bytes_per_sec: f64, latency: Duration) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let upstream = uri
        .strip_prefix("mongodb://")
        .and_then(|rest| rest.split(['/', '?']).next())
        .filter(|host| !host.contains(',') && !host.contains('@'))
        .unwrap_or_else(|| panic!("the slow-store test needs a single-host mongodb:// URI without credentials, not {uri}"))
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // When the shared link is next free.
    let link = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let pipe = move |mut from: TcpStream,
                     mut to: TcpStream,
                     link: std::sync::Arc<std::sync::Mutex<Instant>>| {
        let mut buf = vec![0_u8; 16 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let done = {
                let mut next = link.lock().unwrap_or_else(|e| e.into_inner());
                let start = (*next).max(Instant::now());
                *next = start + Duration::from_secs_f64(n as f64 / bytes_per_sec);
                *next
            };
            std::thread::sleep(done.saturating_duration_since(Instant::now()) + latency);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (l1, l2) = (link.clone(), link.clone());
            std::thread::spawn(move || pipe(client, server, l1));
            std::thread::spawn(move || pipe(s2, c2, l2));
        }
    });
    format!("mongodb://{addr}/?directConnection=true")
}

/// What librdkafka says when a consumer missed its polls for longer than
/// `max.poll.interval.ms` and is put out of its group.
const MISSED_POLLS: [&str; 3] = [
    "Application maximum poll interval",
    "PollExceeded",
    "assignment lost",
];

/// Three nodes with a cluster hook start on a backlog behind a MongoDB
/// slowed down on purpose, with `max.poll.interval.ms` at 12 s (a batch of
/// the whole backlog takes longer to write): batches are sized to the
/// store, so no node misses its polls and leaves a group, no hook trigger
/// runs twice, a node leaves gracefully within its bound mid-stream, and
/// the rest stop within theirs; the state is the fold, every hook delta
/// exact.
#[test]
fn a_slow_store_keeps_every_node_in_its_group() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    let _serial = one_at_a_time();
    let ctx = "slow store";
    let mut rng = Rng(0x5105_5709e);
    // The submitter and the checks reach the server directly; the nodes
    // through the throttle.
    let unthrottled = test_config("slow", 6, 100_000);
    let direct = MongoStore::connect(&unthrottled.mongodb).unwrap();
    let mut config = unthrottled.clone();
    config.mongodb.uri = throttled(&config.mongodb.uri, 200_000.0, Duration::ZERO);
    // librdkafka wants the session timeout no longer than the poll
    // interval, in every client.
    for (k, v) in [
        ("max.poll.interval.ms", "12000"),
        ("session.timeout.ms", "6000"),
    ] {
        config.kafka.properties.insert(k.into(), v.into());
    }
    let events = payments(&mut rng, 3_000, 1_500);
    // The backlog is on the broker before any node starts: without batches
    // sized to the store, each node's first batch would be all it is given.
    let submitter = Node::start(unthrottled.clone()).unwrap();
    submit(&submitter, &events[..2_500]);
    let mut cluster = Cluster::new("a_slow_store_keeps_every_node_in_its_group", &config);
    std::fs::write(cluster.dir.path().join(ONLY_BALANCES), b"").unwrap();
    cluster.hooks = true;
    for id in ["a", "b", "c"] {
        cluster.spawn(id, None);
    }
    std::thread::sleep(Duration::from_secs(10));
    submit(&submitter, &events[2_500..]);
    // A graceful leave under load: what b holds is written (one batch, sized
    // to take a tenth of the poll interval) and its runs are recorded.
    let left_in = cluster.leave("b", ctx);
    wait_models_folded(&submitter, &[Balances::NAME], events.len(), ctx);
    wait_hook(&submitter, ctx);
    let stopping = Instant::now();
    let nodes = cluster.stop(ctx);
    let stopped_in = stopping.elapsed();
    let final_versions = versions(&direct);
    let audited = audit(&direct, ctx);
    eprintln!(
        "{ctx}: {} hook runs, {} duplicates, b left in {left_in:?}, the others stopped in \
         {stopped_in:?}{}",
        audited.runs,
        audited.runs - audited.distinct,
        rejoins(cluster.dir.path())
    );
    for id in ["a", "b", "c"] {
        let log = std::fs::read_to_string(cluster.dir.path().join(format!("node-{id}.log")))
            .unwrap_or_default();
        let missed: Vec<&str> = log
            .lines()
            .filter(|l| MISSED_POLLS.iter().any(|m| l.contains(m)))
            .take(3)
            .collect();
        assert!(
            missed.is_empty(),
            "{ctx}: node {id} missed its polls and left a consumer group: {missed:?}"
        );
    }
    assert!(
        left_in < Duration::from_secs(30),
        "{ctx}: b took {left_in:?} to leave (bound: 30 s)"
    );
    assert!(
        stopped_in < Duration::from_secs(60),
        "{ctx}: the nodes took {stopped_in:?} to stop (bound: 60 s)"
    );
    check_model(&Balances, &direct, &events, cluster.dir.path(), &nodes, ctx);
    check_hook_runs(&direct, &audited, &final_versions, true, ctx);
    direct.database().drop().run().unwrap();
    submitter.shutdown();
}

/// Per account, the largest payment: a `Max`, so a smaller one changes
/// nothing.
struct Largest;
impl ReadModel for Largest {
    const NAME: &'static str = "largest";
    type Event = Payment;
    type Key = u16;
    type State = accrete::monoids::Max<i64>;
    fn project(
        &self,
        p: &Payment,
        out: &mut accrete::model::Deltas<u16, accrete::monoids::Max<i64>>,
    ) -> Result<(), String> {
        out.push(p.to, accrete::monoids::Max(p.cents));
        Ok(())
    }
}

/// Fails the first attempt of every trigger; for account 7, every attempt.
struct Flaky {
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}
impl ClusterHook for Flaky {
    type Model = Largest;
    const NAME: &'static str = "flaky";
    fn run(&self, t: &Trigger<'_, Largest>) -> Result<(), String> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if *t.key == 7 {
            return Err(format!("account {} is refused by the payment API", t.key));
        }
        if t.attempt == 1 {
            return Err("503 from the payment API".into());
        }
        Ok(())
    }
    fn max_attempts(&self) -> u32 {
        3
    }
    fn backoff(&self, _: u32) -> Duration {
        Duration::from_millis(5)
    }
}

/// Fires once per account, when its largest payment reaches 5 000.
struct BigSpender;
impl ClusterHook for BigSpender {
    type Model = Largest;
    const NAME: &'static str = "big_spender";
    const ONCE: bool = true;
    fn fires(&self, state: &accrete::monoids::Max<i64>) -> bool {
        state.0 >= 5_000
    }
    fn run(&self, _: &Trigger<'_, Largest>) -> Result<(), String> {
        Ok(())
    }
}

fn pay(node: &Node, id: u64, to: u16, cents: i64) {
    let p = Payment {
        id,
        from: 0,
        to,
        cents,
        visitor: 0,
        at_ms: id as i64,
    };
    node.submit(p.to.to_le_bytes(), p.at_ms, &p).unwrap();
}

fn settle(node: &Node, hook: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = node.hook_stats(hook).unwrap();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "{hook} did not settle");
        std::thread::sleep(Duration::from_millis(100));
        let now = node.hook_stats(hook).unwrap();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Retries, dead letters, threshold hooks, and no run for a write that
/// changed nothing, on one node.
#[test]
fn hooks_retry_dead_letter_fire_once_and_skip_no_ops() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let _serial = one_at_a_time();
    let config = test_config("hookunit", 3, 100);
    let node = Node::start(config.clone()).unwrap();
    node.add_model(Largest).unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    node.add_cluster_hook(Flaky {
        attempts: attempts.clone(),
    })
    .unwrap();
    node.add_cluster_hook(BigSpender).unwrap();
    // Accounts 1..=9 get one payment each; 7 always fails.
    for to in 1..=9u16 {
        pay(&node, u64::from(to), to, 100 * i64::from(to));
    }
    settle(&node, "flaky");
    let s = node.hook_stats("flaky").unwrap();
    assert_eq!(
        s.runs, 8,
        "a transient failure is retried and succeeds: {s:?}"
    );
    assert_eq!(s.dead_letters, 1, "{s:?}");
    assert!(s.retries >= 8 + 2, "{s:?}");
    let dead = node.store().hook_dead_letters("flaky").unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("account 7 is refused"), "{dead:?}");
    assert_eq!(dead[0].attempts, 3);
    // A smaller payment into a Max changes nothing: no change, no run.
    pay(&node, 100, 3, 50);
    settle(&node, "flaky");
    assert_eq!(
        node.hook_stats("flaky").unwrap().runs,
        8,
        "no run for a write that changed nothing"
    );
    assert_eq!(
        node.store().get::<Largest>(&3).unwrap(),
        Some(accrete::monoids::Max(300))
    );
    // A larger one is a change: one more run.
    pay(&node, 101, 3, 900);
    settle(&node, "flaky");
    assert_eq!(node.hook_stats("flaky").unwrap().runs, 9);
    // The threshold: crossed once per account, however many changes follow.
    settle(&node, "big_spender");
    assert_eq!(node.hook_stats("big_spender").unwrap().runs, 0);
    for (i, cents) in [6_000, 7_000, 8_000].into_iter().enumerate() {
        pay(&node, 200 + i as u64, 4, cents);
    }
    pay(&node, 300, 5, 5_000);
    settle(&node, "big_spender");
    let s = node.hook_stats("big_spender").unwrap();
    assert_eq!(s.runs, 2, "fires once per account that crossed: {s:?}");
    node.shutdown();
    node.store().database().drop().run().unwrap();
}
