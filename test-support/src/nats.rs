//! `nats-server` processes for the tests and benchmarks of es-nats: one node or a three-node
//! JetStream cluster on free loopback ports, each node's configuration and storage in a
//! directory of its own.
//!
//! Every node runs under a small `sh` guard that holds the read end of a pipe from the test
//! process: when the test process ends, however it ends (a panic, a kill), the pipe closes and
//! the guard kills the server and removes its directory. A [`NatsCluster`] dropped earlier
//! does the same at once. So no server outlives the tests, even the clusters shared by a
//! whole test binary (statics are never dropped).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;

/// The guard around one server: starts it, prints its pid, waits for its standard input to
/// close, then kills it and removes the node's directory.
const GUARD: &str = r#"
"$0" -c "$1/server.conf" >"$1/stdout.log" 2>&1 &
pid=$!
echo "$pid"
read -r _ignored
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$1"
"#;

/// How long a cluster may take to elect its leaders and answer JetStream requests.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Where the `nats-server` binary is: `$NATS_SERVER`, else the first on `PATH` or in the
/// system's sbin directories. Panics with the one message every NATS test fails with when
/// there is none.
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "the NATS tests need the `nats-server` binary: NATS_SERVER names {}, which is not a file",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the NATS tests need the `nats-server` binary (2.9 or later), found neither on PATH, \
                 in /usr/sbin nor in $NATS_SERVER: install it with `apt-get install nats-server` \
                 (scripts/test and .ci/run do), or point NATS_SERVER at it"
            )
        })
}

/// A free TCP port on the loopback interface (free when asked: the server binds it soon after).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
    listener.local_addr().expect("the bound port").port()
}

/// One server of a cluster.
struct Node {
    /// Its directory: configuration, JetStream storage, logs.
    dir: PathBuf,
    /// The guard (`sh`) and the pipe that keeps it waiting.
    guard: Child,
    stdin: Option<ChildStdin>,
    /// The server's own pid, as the guard printed it.
    pid: u32,
}

/// One or three `nats-server` processes with JetStream.
pub struct NatsCluster {
    nodes: Mutex<Vec<Node>>,
    /// The client ports, fixed for the life of the cluster.
    ports: Vec<u16>,
    binary: PathBuf,
}

impl NatsCluster {
    /// Starts `size` nodes (1, or 3 for a cluster) and waits until JetStream answers and can
    /// place a stream with `size` replicas.
    pub async fn start(size: usize) -> Self {
        Self::start_with_max_payload(size, None).await
    }

    /// [`NatsCluster::start`], the servers taking messages of up to `max_payload` bytes (the
    /// server's default, 1 MiB, when `None`): what a batch of thousands of events needs.
    pub async fn start_with_max_payload(size: usize, max_payload: Option<usize>) -> Self {
        let binary = server_binary();
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes = Vec::with_capacity(size);
        for (index, port) in ports.iter().enumerate() {
            // Kept, not removed on drop: the node's guard removes it once the server is dead.
            let dir = tempfile::Builder::new()
                .prefix(&format!("es-nats-n{index}-"))
                .tempdir()
                .expect("a temporary directory for a server")
                .keep();
            write_config(&dir, index, *port, &routes, max_payload);
            nodes.push(spawn(&binary, &dir));
        }
        let cluster = Self {
            nodes: Mutex::new(nodes),
            ports,
            binary,
        };
        cluster.wait_ready(size).await;
        cluster
    }

    /// The URL of every node, comma-separated, for `es_nats::NatsStore::connect`.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.ports.len()
    }

    /// The client port of node `index`.
    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to node `index`'s server.
    pub fn signal(&self, index: usize, signal: &str) {
        let pid = self.nodes.lock().expect("the node list")[index].pid;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Starts node `index` again (after a `KILL`), on its directory and ports.
    pub fn restart(&self, index: usize) {
        let mut nodes = self.nodes.lock().expect("the node list");
        let dir = nodes[index].dir.clone();
        let restarted = spawn(&self.binary, &dir);
        // The old guard only waits for its pipe: close it after the new server is up would
        // remove the directory, so keep it open until the cluster is dropped.
        let old = std::mem::replace(&mut nodes[index], restarted);
        nodes.push(Node {
            dir: PathBuf::new(),
            ..old
        });
    }

    async fn wait_ready(&self, size: usize) {
        let deadline = Instant::now() + READY_WITHIN;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match self.probe(size).await {
                Ok(()) => return,
                Err(error) => last_error = error,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let logs: Vec<String> = self
            .nodes
            .lock()
            .expect("the node list")
            .iter()
            .map(|node| std::fs::read_to_string(node.dir.join("server.log")).unwrap_or_default())
            .collect();
        panic!(
            "the NATS servers did not get ready within {READY_WITHIN:?}: {last_error}\n{}",
            logs.join("\n----\n")
        );
    }

    /// Whether every node answers and a stream of `size` replicas can be created.
    async fn probe(&self, size: usize) -> Result<(), String> {
        for port in &self.ports {
            let client = async_nats::connect(format!("127.0.0.1:{port}"))
                .await
                .map_err(|error| error.to_string())?;
            client.flush().await.map_err(|error| error.to_string())?;
        }
        let servers: Vec<String> = self.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let client = async_nats::connect(servers.as_slice())
            .await
            .map_err(|error| error.to_string())?;
        let context = jetstream::new(client);
        context
            .get_or_create_stream(jetstream::stream::Config {
                name: "ready_probe".into(),
                subjects: vec!["ready_probe".into()],
                num_replicas: size,
                ..Default::default()
            })
            .await
            .map_err(|error| error.to_string())?;
        context
            .delete_stream("ready_probe")
            .await
            .map_err(|error| error.to_string())?;
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let nodes = match self.nodes.get_mut() {
            Ok(nodes) => nodes,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Closing a guard's pipe kills its server and removes its directory.
        for node in nodes.iter_mut() {
            drop(node.stdin.take());
        }
        for node in nodes.iter_mut() {
            let _ = node.guard.wait();
        }
    }
}

fn write_config(dir: &Path, index: usize, port: u16, routes: &[u16], max_payload: Option<usize>) {
    let mut config = format!(
        "server_name: n{index}\nlisten: \"127.0.0.1:{port}\"\nlog_file: \"{log}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}}\n",
        log = dir.join("server.log").display(),
        store = dir.join("jetstream").display(),
    );
    if let Some(bytes) = max_payload {
        config.push_str(&format!("max_payload: {bytes}\n"));
    }
    if routes.len() > 1 {
        let all: Vec<String> = routes
            .iter()
            .map(|route| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        config.push_str(&format!(
            "cluster {{\n  name: \"es-test\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
            routes[index],
            all.join(", ")
        ));
    }
    std::fs::write(dir.join("server.conf"), config).expect("writing a server configuration");
}

fn spawn(binary: &Path, dir: &Path) -> Node {
    let mut guard = Command::new("sh")
        .arg("-c")
        .arg(GUARD)
        .arg(binary)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sh to guard nats-server");
    let stdout = guard.stdout.take().expect("the guard's output");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server's pid from its guard");
    let pid = line.trim().parse().expect("a pid");
    let mut stdin = guard.stdin.take();
    // Nothing is ever written: the pipe only tells the guard that the test process is alive.
    if let Some(pipe) = stdin.as_mut() {
        let _ = pipe.flush();
    }
    Node {
        dir: dir.to_path_buf(),
        guard,
        stdin,
        pid,
    }
}
