//! One server process under test: spawn, wait for readiness, stop, restart.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http::http_request;
use crate::port::free_loopback_addr;
use crate::raw::RawConn;
use crate::target::Target;

const POLL_INTERVAL: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

/// How to start a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub target: Target,
    /// `--node-name` for Colony; defaults to `node-<resp port>`.
    pub name: Option<String>,
    /// Appended after the standard arguments.
    pub extra_args: Vec<String>,
    /// Reuse this directory instead of a fresh temporary one (the caller keeps it).
    pub data_dir: Option<PathBuf>,
    /// How long readiness polling may take before the start is declared failed.
    pub ready_timeout: Duration,
    /// Colony's `--fsync` policy (default `always`, as tests of durability need).
    pub fsync: String,
}

impl NodeOptions {
    pub fn new(target: Target) -> Self {
        NodeOptions {
            target,
            name: None,
            extra_args: Vec::new(),
            data_dir: None,
            ready_timeout: Duration::from_secs(30),
            fsync: "always".into(),
        }
    }

    /// Colony's `--fsync` policy: `always`, `periodic` or `never`.
    pub fn fsync(mut self, policy: impl Into<String>) -> Self {
        self.fsync = policy.into();
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

/// Why a node did not come up. Every variant that got as far as spawning carries
/// the process log, so a failing test shows what the server said.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not spawn {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("server exited before it was ready ({status}); log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("server not ready after {timeout:?}; log:\n{log}")]
    NotReady { timeout: Duration, log: String },
    #[error("testkit I/O error: {0}")]
    Io(#[from] io::Error),
}

impl StartError {
    /// The server's log up to the failure, if it was spawned.
    pub fn log(&self) -> Option<&str> {
        match self {
            StartError::Exited { log, .. } | StartError::NotReady { log, .. } => Some(log),
            StartError::Spawn { .. } | StartError::Io(_) => None,
        }
    }

    /// The exit status, if the process exited on its own.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            StartError::Exited { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    resp: SocketAddr,
    http: SocketAddr,
    cluster: SocketAddr,
}

impl Ports {
    fn fresh() -> io::Result<Self> {
        Ok(Ports {
            resp: free_loopback_addr()?,
            http: free_loopback_addr()?,
            cluster: free_loopback_addr()?,
        })
    }
}

/// A running (or stopped) server process. Killed with SIGKILL on drop; if the test
/// is panicking, its log is printed to stderr first.
pub struct Node {
    opts: NodeOptions,
    name: String,
    ports: Ports,
    data_dir: PathBuf,
    _owned_data: Option<TempDir>,
    _log_dir: TempDir,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Start and wait until ready; the error carries the log.
    pub async fn start(opts: NodeOptions) -> anyhow::Result<Node> {
        Ok(Node::try_start(opts).await?)
    }

    /// Start and wait until ready. A port taken by someone else between our pick
    /// and the server's bind is retried on fresh ports.
    pub async fn try_start(opts: NodeOptions) -> Result<Node, StartError> {
        remember_panics();
        let (owned_data, data_dir) = match &opts.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let dir = tempfile::Builder::new().prefix("colony-data-").tempdir()?;
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let log_dir = tempfile::Builder::new().prefix("colony-log-").tempdir()?;
        let log_path = log_dir.path().join("server.log");
        let ports = Ports::fresh()?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("node-{}", ports.resp.port()));
        let mut node = Node {
            opts,
            name,
            ports,
            data_dir,
            _owned_data: owned_data,
            _log_dir: log_dir,
            log_path,
            child: None,
        };
        let mut attempt = 1;
        loop {
            match node.spawn_and_wait().await {
                Err(StartError::Exited { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                    node.ports = Ports::fresh()?;
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(node),
            }
        }
    }

    /// Start again on the same ports and data directory; stops it first if running.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        Ok(self.try_restart().await?)
    }

    /// Like [`Node::restart`], returning the log in the error when the start fails.
    pub async fn try_restart(&mut self) -> Result<(), StartError> {
        if self.is_running() {
            self.stop().await?;
        }
        self.spawn_and_wait().await
    }

    /// SIGKILL and reap; the data directory is left as the crash left it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to 10 s for the process to exit (SIGKILL after that,
    /// reported as an error).
    pub async fn stop(&mut self) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("node is not running"));
        };
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::other("child pid out of range"))?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "server ignored SIGTERM for {STOP_TIMEOUT:?}; killed"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn target(&self) -> &Target {
        &self.opts.target
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn resp_addr(&self) -> SocketAddr {
        self.ports.resp
    }

    /// Colony's HTTP API. Reserved but unused for Redis: nothing listens there.
    pub fn http_addr(&self) -> SocketAddr {
        self.ports.http
    }

    /// Colony's inter-node port. Reserved but unused for Redis.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.ports.cluster
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(format!("redis://{}/", self.ports.resp))
    }

    /// A RESP2 connection. Its response timeout is generous: the client's
    /// default (500 ms) would make a timing assertion of every long pipeline
    /// on a loaded 2-core CI machine.
    pub async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client()?
            .get_multiplexed_async_connection_with_config(&conn_config())
            .await
    }

    /// A connection that negotiated RESP3 with `HELLO 3`.
    pub async fn conn_resp3(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(format!("redis://{}/?protocol=resp3", self.ports.resp))?
            .get_multiplexed_async_connection_with_config(&conn_config())
            .await
    }

    /// A raw socket to the RESP port.
    pub async fn raw(&self) -> io::Result<RawConn> {
        RawConn::connect(self.ports.resp).await
    }

    /// Everything the process (and its restarts) wrote to stdout and stderr.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => format!("<log {} unreadable: {err}>", self.log_path.display()),
        }
    }

    /// Print the log to stderr now (drop does it by itself when panicking).
    pub fn dump_log(&self) {
        eprintln!(
            "----- log of {} node {} ({}) -----\n{}\n----- end of log -----",
            self.opts.target.label(),
            self.name,
            self.log_path.display(),
            self.log()
        );
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.opts.target {
            Target::Colony { bin } => {
                let mut cmd = Command::new(bin);
                cmd.arg("start")
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .arg("--resp")
                    .arg(self.ports.resp.to_string())
                    .arg("--http")
                    .arg(self.ports.http.to_string())
                    .arg("--cluster")
                    .arg(self.ports.cluster.to_string())
                    .arg("--node-name")
                    .arg(&self.name)
                    .args(["--fsync", &self.opts.fsync]);
                cmd
            }
            Target::Redis => {
                let mut cmd = Command::new(Target::redis_program());
                cmd.arg("--port")
                    .arg(self.ports.resp.port().to_string())
                    .args(["--bind", "127.0.0.1", "--dir"])
                    .arg(&self.data_dir)
                    .args(["--save", "", "--appendonly", "yes"])
                    .args(["--appendfsync", "always"]);
                cmd
            }
        };
        cmd.args(&self.opts.extra_args);
        cmd
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let mut cmd = self.command();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        writeln!(log, "===== testkit: spawning {cmd:?} =====")?;
        let stderr = log.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().map_err(|source| StartError::Spawn {
            program: format!("{:?}", cmd.get_program()),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let timeout = self.opts.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    let log = self.log();
                    return Err(StartError::Exited { status, log });
                }
            }
            if self.probe().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill9();
                let log = self.log();
                return Err(StartError::NotReady { timeout, log });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Ready means PING answers PONG, and for Colony `GET /ping` answers 200.
    async fn probe(&self) -> bool {
        let ping = async {
            let mut conn = RawConn::connect(self.ports.resp).await.ok()?;
            conn.command(&[b"PING"]).await.ok()
        };
        let pong = tokio::time::timeout(PROBE_TIMEOUT, ping).await;
        if !matches!(pong, Ok(Some(ref reply)) if reply.as_slice() == b"+PONG\r\n") {
            return false;
        }
        if self.opts.target.is_redis() {
            return true;
        }
        let http = http_request(self.ports.http, "GET", "/ping", b"", &[]);
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, http).await,
            Ok(Ok(response)) if response.status == 200
        )
    }
}

fn conn_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)))
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
            // The logs can be long; say again why the test failed, so the
            // reason is at the end of the output, where a truncated CI
            // excerpt still shows it.
            if let Some(why) = last_panic() {
                eprintln!("----- the test failed: {why}");
            }
        }
        self.kill9();
    }
}

/// The message and place of the last panic in this process.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Install (once) a panic hook that records each panic's message and
/// place in [`LAST_PANIC`] before the usual report.
fn remember_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // Long messages (a whole status document) are cut: the full
            // one is printed above by the usual hook.
            let msg: String = msg.chars().take(2000).collect();
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(format!("{msg} (at {place})"));
            }
            previous(info);
        }));
    });
}

fn last_panic() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|l| l.clone())
}
