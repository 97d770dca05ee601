//! A real Redis Cluster on loopback for tests and benchmarks: six `redis-server --cluster-enabled
//! yes` (3 masters + 3 replicas) on free ports in a temporary directory, joined by `redis-cli
//! --cluster create --cluster-replicas 1`, with a short `cluster-node-timeout` so a killed master
//! fails over within a few seconds. Optionally TLS-only (self-signed, `tls-cluster yes`) with a
//! password. Every process is killed when the [`Cluster`] is dropped.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `cluster-node-timeout` in milliseconds: a master is marked failing after about this long.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// Panics (never skips) when the Redis tools are missing.
pub fn require_redis_tools() {
    for tool in ["redis-server", "redis-cli"] {
        let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} is required for the Redis Cluster tests (apt-get install redis-server) and was not found");
    }
}

/// TLS material and the password of a TLS cluster.
pub struct Tls {
    /// Self-signed certificate for `127.0.0.1`, also the CA file clients trust.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub password: String,
}

/// One `redis-server` of the cluster.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

/// The running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub tls: Option<Tls>,
}

/// A port `p` that is free, with its cluster bus port `p + 10000` free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else { continue };
        let port = l.local_addr().unwrap().port();
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) for a Redis Cluster node");
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub port: u16,
    pub flags: String,
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn is_live_master(&self) -> bool {
        self.flags.split(',').any(|f| f == "master") && !self.flags.contains("fail")
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _id = f.next()?;
            let addr = f.next()?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f.next()?.to_owned();
            let slots = f
                .skip(5)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeLine { port, flags, slots })
        })
        .collect()
}

impl Cluster {
    /// Starts six nodes and creates the cluster; returns once every node reports
    /// `cluster_state:ok`. With `tls`, nodes speak TLS only (clients, replication and the bus) and
    /// require a password.
    pub fn start(tls: bool) -> Cluster {
        require_redis_tools();
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
            let (cert, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, key.cert.pem()).unwrap();
            std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
            Tls { cert, key: key_file, password: format!("cluster-{:016x}", fastrand::u64(..)) }
        });
        let mut cluster = Cluster { dir, nodes: Vec::new(), tls };
        let mut ports = Vec::new();
        for _ in 0..6 {
            ports.push(free_cluster_port(&ports));
        }
        for &port in &ports {
            let child = cluster.spawn_node(port);
            cluster.nodes.push(Node { port, child: Some(child) });
        }
        for &port in &ports {
            cluster.wait_answers(port, Duration::from_secs(10));
        }
        let mut create = cluster.cli_command(ports[0]);
        create.args(["--cluster", "create"]);
        create.args(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_state_ok(Duration::from_secs(20));
        // `cluster_state:ok` can come before every node has gossiped the others' roles: wait
        // until each node sees all six, three of them live masters, none still in handshake.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ports.iter().all(|&p| {
            let view = cluster.view(p);
            view.len() == 6
                && view.iter().filter(|n| n.is_live_master()).count() == 3
                && !view.iter().any(|n| n.flags.contains("handshake") || n.flags.contains("noaddr"))
        }) {
            assert!(Instant::now() < deadline, "the cluster nodes did not agree on three masters");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn spawn_node(&self, port: u16) -> Child {
        let d = self.dir.path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--cluster-enabled", "yes", "--save", "", "--appendonly", "no"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // Any replica may take over, however long it was disconnected: failover tests are short.
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--cluster-port", &(port + 10_000).to_string()])
            .arg("--cluster-config-file")
            .arg(d.join(format!("nodes-{port}.conf")))
            .arg("--logfile")
            .arg(d.join(format!("redis-{port}.log")))
            .arg("--dir")
            .arg(d);
        match &self.tls {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(t) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(&t.cert)
                    .arg("--tls-key-file")
                    .arg(&t.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.cert)
                    .args(["--requirepass", &t.password, "--masterauth", &t.password]);
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"))
    }

    /// `redis-cli` against node `port`, with TLS and password as the cluster needs.
    pub fn cli_command(&self, port: u16) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(t) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(&t.cert).args(["-a", &t.password, "--no-auth-warning"]);
        }
        cmd
    }

    /// Runs a command on node `port`; its stdout (empty when the node does not answer).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = self.cli_command(port).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_answers(&self, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while self.cli(port, &["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server on port {port} did not come up: {}", self.log(port));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of node `port`'s log, for failure messages.
    pub fn log(&self, port: u16) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("redis-{port}.log"))).unwrap_or_default();
        text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The ports of nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// True when every running node reports `cluster_state:ok`.
    pub fn state_ok(&self) -> bool {
        self.live_ports()
            .iter()
            .all(|&p| self.cli(p, &["CLUSTER", "INFO"]).lines().any(|l| l.trim() == "cluster_state:ok"))
    }

    pub fn wait_state_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.state_ok() {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `CLUSTER NODES` as node `port` sees it.
    pub fn view(&self, port: u16) -> Vec<NodeLine> {
        parse_nodes(&self.cli(port, &["CLUSTER", "NODES"]))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        self.cli(port, &["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap()
    }

    /// The port of the live master serving `slot`, as a live node sees it.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        let port = self.live_ports()[0];
        self.view(port).into_iter().find(|n| n.is_live_master() && n.owns(slot)).map(|n| n.port)
    }

    /// The ports of the live masters.
    pub fn masters(&self) -> Vec<u16> {
        let port = self.live_ports()[0];
        self.view(port).into_iter().filter(NodeLine::is_live_master).map(|n| n.port).collect()
    }

    /// The seed URL for node `port`.
    pub fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{port}")
    }

    /// Kills node `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until another live node serves `slot` and every live node reports
    /// `cluster_state:ok`: the failover is complete as the cluster reports it. Returns the new
    /// master's port.
    pub fn wait_failover(&self, slot: u16, old: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(new) = self.master_of(slot).filter(|&p| p != old)
                && self.state_ok()
            {
                return new;
            }
            assert!(Instant::now() < deadline, "no failover of slot {slot} within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True when `key` exists (`-c` follows the cluster's redirection to its master).
    pub fn exists(&self, key: &str) -> bool {
        let port = self.live_ports()[0];
        let out = self.cli_command(port).arg("-c").args(["EXISTS", key]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Keys held by master `port`.
    pub fn dbsize(&self, port: u16) -> u64 {
        self.cli(port, &["DBSIZE"]).trim().parse().unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
