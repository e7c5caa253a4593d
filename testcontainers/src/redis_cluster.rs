//! A fresh Redis Cluster per test: `redis-server` processes in cluster mode on loopback
//! ports, joined with `redis-cli --cluster create`, ready once every node reports
//! `cluster_state:ok` (and every master its replicas). Killed on drop.
//!
//! Facts this relies on (checked with Debian 12's redis 7.0): `--cluster-port` sets the
//! cluster bus port; `redis-cli --cluster create … --cluster-replicas N --cluster-yes`
//! assigns the slots without asking; with `--cluster-node-timeout 1000` a replica takes
//! over from a killed master in about 2–3 s.

use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::fsutil::find_program;
use crate::redis::{INSTALL_HINT, ProcessRedis, RedisOptions};

/// The command-line client that joins the nodes.
const REDIS_CLI: &str = "redis-cli";
/// How long the nodes may take to agree on the slots once joined.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis Cluster of processes owned by one test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ProcessRedis>,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3, as Redis requires) with `replicas` replicas
    /// each, joins them and waits until the cluster serves every slot.
    pub async fn start(masters: usize, replicas: usize) -> Result<Self, TestkitError> {
        if masters < 3 {
            return Err(TestkitError::Admin {
                command: "redis-cli --cluster create".into(),
                output: format!("a Redis Cluster needs at least 3 masters, not {masters}"),
            });
        }
        let count = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(ProcessRedis::start(RedisOptions::default(), true).await?);
        }
        let cluster = Self { nodes };
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        cli(&create).await?;
        cluster.wait_until_formed(masters, replicas).await?;
        Ok(cluster)
    }

    /// The cluster as `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…/` (the store's URL).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/", nodes.join(","))
    }

    /// Every node's port, running or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.process.port()).collect()
    }

    /// The ports of the running nodes that are masters now.
    pub async fn master_ports(&self) -> Result<Vec<u16>, TestkitError> {
        let mut masters = Vec::new();
        for node in &self.nodes {
            if node.process.pid().is_none() {
                continue;
            }
            let port = node.process.port();
            let role = cli(&["-p".into(), port.to_string(), "ROLE".into()]).await?;
            if role.lines().next() == Some("master") {
                masters.push(port);
            }
        }
        Ok(masters)
    }

    /// Kills the node on `port` (SIGKILL) and waits for it to exit.
    pub async fn kill(&mut self, port: u16) -> Result<(), TestkitError> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.process.port() == port)
            .ok_or_else(|| TestkitError::Admin {
                command: format!("kill node {port}"),
                output: "no node of this cluster listens there".into(),
            })?;
        node.process.stop().await
    }

    /// Waits until every running node says `cluster_state:ok` and, with `replicas`,
    /// until `masters` masters have that many replicas each in sync; polling, as the
    /// nodes agree among themselves without telling anyone.
    pub async fn wait_until_formed(
        &self,
        masters: usize,
        replicas: usize,
    ) -> Result<(), TestkitError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let (ok, state) = self.formed(masters, replicas).await?;
            if ok {
                return Ok(());
            }
            if started.elapsed() > FORM_TIMEOUT {
                return Err(TestkitError::NotReady {
                    what: "redis cluster".into(),
                    addr: self.url(),
                    waited: started.elapsed(),
                    log: format!("{state}\n{}", self.log()),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Whether the cluster is formed, and what it looks like (for messages).
    async fn formed(
        &self,
        masters: usize,
        replicas: usize,
    ) -> Result<(bool, String), TestkitError> {
        let mut state = String::new();
        let mut ok = true;
        let mut full_masters = 0;
        for node in &self.nodes {
            if node.process.pid().is_none() {
                continue;
            }
            let port = node.process.port().to_string();
            let info = cli(&["-p".into(), port.clone(), "CLUSTER".into(), "INFO".into()]).await?;
            let node_ok = info.lines().any(|l| l.trim() == "cluster_state:ok");
            ok &= node_ok;
            let replication = cli(&[
                "-p".into(),
                port.clone(),
                "INFO".into(),
                "replication".into(),
            ])
            .await?;
            let online = replication
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            if replication.lines().any(|l| l.trim() == "role:master") && online >= replicas {
                full_masters += 1;
            }
            state.push_str(&format!(
                "node {port}: ok={node_ok}, replicas online={online}\n"
            ));
        }
        Ok((ok && full_masters >= masters, state))
    }

    /// Every node's log, one after the other, for assertion messages.
    pub fn log(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.process.port(), n.process.log()))
            .collect()
    }
}

/// Runs `redis-cli` with `args` and returns what it printed; fails when it fails.
async fn cli(args: &[String]) -> Result<String, TestkitError> {
    let program = find_program(REDIS_CLI, INSTALL_HINT)?;
    let output = tokio::process::Command::new(&program)
        .args(args)
        .output()
        .await
        .map_err(|source| TestkitError::Spawn {
            program: REDIS_CLI.into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.starts_with("ERR") {
        return Err(TestkitError::Admin {
            command: format!("{REDIS_CLI} {}", args.join(" ")),
            output: format!("{text}{}", String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn three_masters_form_a_cluster_and_a_replica_takes_over() {
        let mut cluster = RedisCluster::start(3, 1).await.unwrap();
        assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
        let masters = cluster.master_ports().await.unwrap();
        assert_eq!(masters.len(), 3, "{}", cluster.log());
        cluster.kill(masters[0]).await.unwrap();
        // Three masters again: the dead one's replica was promoted.
        cluster.wait_until_formed(3, 0).await.unwrap();
        let now = cluster.master_ports().await.unwrap();
        assert_eq!(now.len(), 3, "{}", cluster.log());
        assert!(!now.contains(&masters[0]));
    }
}
