//! Real node processes on loopback, for the benchmark (`telemetry-node bench`) and the
//! integration tests alike: started with flags on a free port, found by their `listening on`
//! line, stopped by signal, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How often [`NodeProcess::stop`] and [`eventually`] look again.
pub const POLL: Duration = Duration::from_millis(50);

/// A running node process; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT` of its REST API.
    pub url: String,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    /// Where its stderr goes (`DATA_DIR.log`).
    pub log: PathBuf,
    /// How it was started: binary, flags, environment.
    launch: (PathBuf, Vec<String>, Vec<(String, String)>),
}

impl NodeProcess {
    /// Starts `binary` with `--data-dir data_dir --http-addr 127.0.0.1:0`, then `args`, with
    /// `RUST_LOG=warn` and `env`; returns once it listens.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("node did not start: {line:?}\n{text}");
        };
        Ok(Self {
            url: url.to_string(),
            child,
            data_dir: data_dir.to_path_buf(),
            log,
            launch: (
                binary.to_path_buf(),
                args.iter().map(|a| a.to_string()).collect(),
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        })
    }

    /// Starts the same node again (same binary, data directory, flags and environment), as a
    /// supervisor restarts a process that ended; this one should have ended.
    pub fn start_again(&self) -> anyhow::Result<Self> {
        let (binary, args, env) = &self.launch;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start(binary, &self.data_dir, &args, &env)
    }

    /// What the node wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`, …).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{sig} {} failed: {status}", self.child.id());
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("node did not stop within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Peak resident memory so far (MiB; NaN where /proc does not say).
    pub fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports [`free_port`] draws from: below Linux's ephemeral range (32768–60999 by default), so
/// between the check and the node's own bind the kernel never gives the port to an outgoing
/// connection or to a bind to port 0 elsewhere.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Ports this process handed out, never handed out twice (tests run side by side).
static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A free loopback port for a node's cluster transport, unique within this process.
pub fn free_port() -> std::io::Result<u16> {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(PORT_RANGE);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {PORT_RANGE:?} after 1000 tries"),
    ))
}

/// Flags that stream `csv` once, unthrottled, with the file's own timestamps.
pub fn one_pass(csv: &str) -> [&str; 8] {
    [
        "--csv",
        csv,
        "--rate",
        "0",
        "--passes",
        "1",
        "--timestamps",
        "csv",
    ]
}

/// Polls `check` until it yields a value, pausing `every` between looks; after `timeout` the
/// error carries `what` and the last look's description.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                bail!("{what}: not reached within {timeout:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_success_or_says_what_timed_out() {
        let mut n = 0;
        let got = eventually(
            "three looks",
            Duration::from_secs(5),
            Duration::ZERO,
            async || {
                n += 1;
                if n == 3 {
                    Ok(n)
                } else {
                    Err(format!("look {n}"))
                }
            },
        )
        .await
        .expect("reached");
        assert_eq!(got, 3);
        let err = eventually(
            "never",
            Duration::from_millis(30),
            Duration::from_millis(5),
            async || Err::<(), _>("still no".to_string()),
        )
        .await
        .expect_err("times out");
        assert!(err.to_string().contains("never") && err.to_string().contains("still no"));
    }
}
