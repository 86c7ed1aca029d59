//! An OpenBao cluster on integrated storage (Raft) on loopback, built as an operator would build
//! one: a `bao server` per node with `storage "raft"` (`performance_multiplier = 1`, so a new
//! leader is elected in seconds), the first node initialised with one key share and unsealed, the
//! others joining it (`retry_join`) and unsealed with the same key, every node a voter, KV v2 at
//! `secret/`. The initial root token creates a root token whose id is [`ROOT_TOKEN`], so the
//! [`OpenBao`] helpers work on any node ([`RaftCluster::client`]).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{bao_binary, free_port_pair, OpenBao, ROOT_TOKEN};

pub struct RaftCluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
    /// The nodes' data and logs (`node-N.log`).
    pub dir: tempfile::TempDir,
}

struct Node {
    addr: String,
    child: Option<Child>,
}

impl RaftCluster {
    /// Start `n` nodes and wait until they form one cluster of `n` voters with KV v2 at
    /// `secret/` writable. Takes about 10-30 s.
    pub async fn start(n: usize) -> RaftCluster {
        assert!(n >= 1);
        let dir = tempfile::tempdir().unwrap();
        let mut taken = HashSet::new();
        let ports: Vec<u16> = (0..n)
            .map(|_| loop {
                let p = free_port_pair();
                if !taken.contains(&p) && !taken.contains(&(p + 1)) && !taken.contains(&(p - 1)) {
                    taken.insert(p);
                    taken.insert(p + 1);
                    return p;
                }
            })
            .collect();
        let addr = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let mut nodes = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let join = if i > 0 {
                format!(
                    "  retry_join {{\n    leader_api_addr = \"{}\"\n  }}\n",
                    addr(0)
                )
            } else {
                String::new()
            };
            let hcl = format!(
                r#"ui = false
disable_mlock = true
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster}"
storage "raft" {{
  path = "{data}"
  node_id = "node-{i}"
  performance_multiplier = 1
{join}}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
"#,
                cluster = port + 1,
                data = dir.path().join(format!("node-{i}")).display(),
            );
            nodes.push(Node {
                addr: addr(i),
                child: Some(spawn_node(dir.path(), i, &hcl)),
            });
        }
        let cluster = RaftCluster {
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            dir,
        };
        cluster.form().await;
        cluster
    }

    async fn form(&self) {
        let started = Instant::now();
        let first = &self.nodes[0].addr;
        self.wait_for(first, Duration::from_secs(20), |s| s == 501)
            .await;
        let (status, init) = self
            .call(
                "",
                "PUT",
                first,
                "sys/init",
                Some(json!({ "secret_shares": 1, "secret_threshold": 1 })),
            )
            .await;
        assert_eq!(status, 200, "init: {init}");
        let key = init["keys_base64"][0].as_str().unwrap().to_string();
        let initial_root = init["root_token"].as_str().unwrap().to_string();
        self.unseal(0, &key).await;
        self.wait_for(first, Duration::from_secs(20), |s| s == 200)
            .await;
        let root = |method: &'static str, path: &'static str, body: Value| {
            let token = initial_root.clone();
            async move {
                let (status, v) = self.call(&token, method, first, path, Some(body)).await;
                assert!((200..300).contains(&status), "{path}: {status} {v}");
            }
        };
        root(
            "POST",
            "auth/token/create",
            json!({ "id": ROOT_TOKEN, "policies": ["root"], "no_parent": true }),
        )
        .await;
        // Promote the joining nodes to voters soon after they are healthy (default 10 s).
        root(
            "POST",
            "sys/storage/raft/autopilot/configuration",
            json!({ "server_stabilization_time": "1s" }),
        )
        .await;
        root(
            "POST",
            "sys/mounts/secret",
            json!({ "type": "kv", "options": { "version": "2" } }),
        )
        .await;
        for i in 1..self.nodes.len() {
            self.unseal(i, &key).await;
        }
        self.wait_for_voters(Duration::from_secs(60)).await;
        // The new KV v2 mount answers a transient 400 until it is upgraded: write once.
        let leader = self.wait_active(Duration::from_secs(20)).await;
        let bao = self.client(leader);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, v) = bao
                .call_as(
                    ROOT_TOKEN,
                    "POST",
                    "secret/data/raft-ready",
                    Some(json!({ "data": { "ready": true } })),
                )
                .await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < until, "KV v2 not writable: {status} {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "raft cluster of {} voters formed in {:?}",
            self.nodes.len(),
            started.elapsed()
        );
    }

    /// Give node `i` the unseal key until it is unsealed (a joining node takes it once it has
    /// reached the leader).
    async fn unseal(&self, i: usize, key: &str) {
        let addr = &self.nodes[i].addr;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, v) = self
                .call("", "PUT", addr, "sys/unseal", Some(json!({ "key": key })))
                .await;
            if status == 200 && v["sealed"] == false {
                return;
            }
            assert!(
                Instant::now() < until,
                "node {i} not unsealed: {status} {v}\n{}",
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn wait_for_voters(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            if let Some(leader) = self.active().await {
                let (status, v) = self
                    .call(
                        ROOT_TOKEN,
                        "GET",
                        &self.nodes[leader].addr,
                        "sys/storage/raft/configuration",
                        None,
                    )
                    .await;
                let servers = v["data"]["config"]["servers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let voters = servers.iter().filter(|s| s["voter"] == true).count();
                if status == 200 && voters == self.nodes.len() {
                    return;
                }
                assert!(
                    Instant::now() < until,
                    "not every node is a voter after {limit:?}: {v}"
                );
            }
            assert!(Instant::now() < until, "no active node after {limit:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Every node's address, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The [`OpenBao`] helpers on node `i` (as root).
    pub fn client(&self, i: usize) -> OpenBao {
        OpenBao::attach(&self.nodes[i].addr)
    }

    /// The node whose `sys/health` answers 200 now, among those still running.
    pub async fn active(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_some() && self.health(&node.addr).await == Some(200) {
                return Some(i);
            }
        }
        None
    }

    /// Waits for an active node; its index.
    pub async fn wait_active(&self, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        loop {
            if let Some(i) = self.active().await {
                return i;
            }
            assert!(Instant::now() < until, "no active node within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What node `i` logged.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    }

    async fn health(&self, addr: &str) -> Option<u16> {
        let resp = self
            .http
            .get(format!("{addr}/v1/sys/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        Some(resp.status().as_u16())
    }

    async fn wait_for(&self, addr: &str, limit: Duration, want: impl Fn(u16) -> bool) {
        let until = Instant::now() + limit;
        loop {
            if self.health(addr).await.is_some_and(&want) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{addr}: sys/health not as expected within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(
        &self,
        token: &str,
        method: &str,
        addr: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{addr}/v1/{path}"));
        if !token.is_empty() {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn spawn_node(dir: &Path, i: usize, hcl: &str) -> Child {
    let config = dir.join(format!("node-{i}.hcl"));
    std::fs::create_dir_all(dir.join(format!("node-{i}"))).unwrap();
    std::fs::write(&config, hcl).unwrap();
    let log = std::fs::File::create(dir.join(format!("node-{i}.log"))).unwrap();
    Command::new(bao_binary())
        .arg("server")
        .arg(format!("-config={}", config.display()))
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn bao server")
}
