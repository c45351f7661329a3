//! Redis for cluster tests: the machine's server (each test under a cluster name of its own,
//! so tests never see each other's keys), or a `redis-server` of the test's own on a free port
//! when it must be stopped, restarted or emptied.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The shared Redis the machine runs (`BCPROXY_TEST_REDIS` overrides it).
pub fn shared_url() -> String {
    std::env::var("BCPROXY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A cluster name no other test (or run) uses.
pub fn unique_name(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "test-{test}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection for checking what a test left in Redis.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("no Redis at {url} ({e}); the tests need one (see .ci/run)"))
}

/// Keys of cluster `name` in the Redis at `url`.
pub async fn keys_of(url: &str, name: &str) -> Vec<String> {
    let mut con = connect(url).await;
    redis::cmd("KEYS")
        .arg(format!("bcproxy:{{{name}}}:*"))
        .query_async(&mut con)
        .await
        .unwrap()
}

/// A `redis-server` of the test's own, on a free loopback port, keeping nothing on disk.
pub struct OwnRedis {
    pub port: u16,
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one with extra arguments (`["--requirepass", "…"]`).
    pub async fn start(args: &[&str]) -> OwnRedis {
        OwnRedis::launch(args, false).await
    }

    /// Starts one that speaks only TLS, with the certificate and key of `files`.
    pub async fn start_tls(files: &super::TlsFiles) -> OwnRedis {
        let args = [
            "--tls-cert-file",
            files.cert.to_str().unwrap(),
            "--tls-key-file",
            files.key.to_str().unwrap(),
            "--tls-ca-cert-file",
            files.ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ];
        OwnRedis::launch(&args, true).await
    }

    async fn launch(args: &[&str], tls: bool) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = OwnRedis {
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            tls,
            child: None,
        };
        redis.run().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    async fn run(&mut self) {
        let port = self.port.to_string();
        let ports = if self.tls {
            ["--port", "0", "--tls-port", &port]
        } else {
            ["--port", &port, "--tls-port", "0"]
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the cluster tests (see .ci/run)");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Sends it a signal (`STOP` freezes it with its connections open; `CONT` thaws it).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([format!("-{name}"), child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    /// Stops it (its data is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
