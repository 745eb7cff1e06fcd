//! Cluster TLS with real processes on loopback: three nodes with certificates from one CA form a
//! full mesh they dial themselves (the two non-seeds learn each other from the seed), store a
//! stream and answer identically; a node with a certificate from another CA, and a node without
//! TLS, are refused although they know the cookie.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    all_points, eventually, free_port, reference_csv, wait_live, wait_stored, Node,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

const COOKIE: &str = "tls-cookie";

/// A CA that signs node certificates into a directory.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).expect("write");
        Self { cert, key, pem }
    }

    /// Certificate and key files for a node reached at 127.0.0.1.
    fn node(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

/// Starts a node named `name` on a free cluster port with `seed` and, if given, TLS files.
fn start(
    dir: &Path,
    name: &str,
    cluster: &str,
    seed: &str,
    tls: Option<[&Path; 3]>,
    extra: &[&str],
) -> Node {
    let mut args: Vec<String> = [
        "--node-name",
        name,
        "--cluster-addr",
        cluster,
        "--seeds",
        seed,
        "--cluster-cookie",
        COOKIE,
        "--partitions",
        "16",
        "--liveness-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some([cert, key, ca]) = tls {
        for (flag, path) in [
            ("--cluster-tls-cert", cert),
            ("--cluster-tls-key", key),
            ("--cluster-tls-ca", ca),
        ] {
            args.push(flag.into());
            args.push(path.to_str().expect("utf-8").into());
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_env(&dir.join(name), &args, &[("RUST_LOG", "warn")])
}

fn member_names(c: &serde_json::Value) -> HashSet<String> {
    c["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mesh_stores_and_answers_and_strangers_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ca = Ca::new(dir, "cluster");
    let other = Ca::new(dir, "other");
    let addrs: Vec<String> = (0..5)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let seed = addrs[0].clone();
    let files: Vec<(PathBuf, PathBuf)> = (0..3).map(|i| ca.node(dir, &format!("n{i}"))).collect();
    let tls = |i: usize| Some([files[i].0.as_path(), files[i].1.as_path(), ca.pem.as_path()]);

    let n0 = start(
        dir,
        "telemetry-0",
        &addrs[0],
        &seed,
        tls(0),
        &["--no-stream"],
    );
    // Connections that never start a handshake must not hold up the members' (each handshake
    // runs on its own, bounded by TLS_HANDSHAKE_TIMEOUT).
    let _silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&seed).expect("seed listens"))
        .collect();
    let n1 = start(
        dir,
        "telemetry-1",
        &addrs[1],
        &seed,
        tls(1),
        &["--no-stream"],
    );
    wait_live(&n0, 2).await;
    let csv = reference_csv(dir);
    let rows = crate::support::csv_rows(&csv);
    let stream = [
        "--csv",
        csv.to_str().expect("utf-8"),
        "--passes",
        "1",
        "--timestamps",
        "csv",
        "--rate",
        "2000",
    ];
    let n2 = start(dir, "telemetry-2", &addrs[2], &seed, tls(2), &stream);
    // telemetry-1 and telemetry-2 only know the seed: seeing each other up means they dialled
    // each other after learning the address from it (no transitive dial in TLS mode).
    wait_live(&n1, 3).await;
    wait_live(&n2, 3).await;
    let c = wait_stored(&n0, rows, Duration::from_secs(60)).await;
    assert_eq!(c["samples_stored"].as_u64(), Some(rows), "{c}");
    let (count, first) = all_points(&n0).await;
    assert_eq!(count as u64, rows);
    for node in [&n1, &n2] {
        assert_eq!(
            all_points(node).await.1,
            first,
            "{} answers differently",
            node.url
        );
    }

    // A certificate from another CA, and no TLS at all: both know the cookie, neither joins.
    let (sc, sk) = other.node(dir, "stranger");
    let stranger = start(
        dir,
        "telemetry-8",
        &addrs[3],
        &seed,
        Some([&sc, &sk, &other.pem]),
        &["--no-stream"],
    );
    let plain = start(dir, "telemetry-9", &addrs[4], &seed, None, &["--no-stream"]);
    // Both have dialled the seed and been turned away at the TLS handshake.
    eventually(
        "both strangers refused",
        Duration::from_secs(30),
        async || {
            let refusals = n0.log_text().matches("cluster TLS handshake").count();
            let dialled = stranger
                .log_text()
                .contains("cluster TLS handshake with a peer failed");
            if refusals >= 2 && dialled {
                Ok(())
            } else {
                Err(format!(
                    "{refusals} refusals at the seed, stranger turned away: {dialled}"
                ))
            }
        },
    )
    .await;
    for node in [&n0, &n1, &n2] {
        let c = node.ok("/api/v1/cluster").await;
        let names = member_names(&c);
        assert!(
            !names.contains("telemetry-8") && !names.contains("telemetry-9"),
            "{c}"
        );
        assert_eq!(c["live"].as_array().map(Vec::len), Some(3), "{c}");
    }
    for (node, me) in [(&stranger, "telemetry-8"), (&plain, "telemetry-9")] {
        let c = node.ok("/api/v1/cluster").await;
        assert_eq!(c["live"], serde_json::json!([me]), "{c}");
    }
    let seed_log = n0.log_text();
    assert!(
        seed_log.contains("cluster TLS handshake refused"),
        "{seed_log}"
    );
    let stranger_log = stranger.log_text();
    assert!(
        stranger_log.contains("cluster TLS handshake with a peer failed"),
        "{stranger_log}"
    );
    for n in [n0, n1, n2, stranger, plain] {
        n.stop();
    }
}

#[test]
fn incomplete_tls_flags_stop_start_up_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "cluster");
    let out = std::process::Command::new(crate::support::binary())
        .args(["--data-dir", tmp.path().join("d").to_str().expect("utf-8")])
        .args([
            "--cluster-tls-ca",
            ca.pem.to_str().expect("utf-8"),
            "--no-stream",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca"),
        "{err}"
    );
}
