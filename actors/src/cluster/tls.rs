//! Mutual TLS for the cluster transport (rustls).
//!
//! Every node holds a certificate and key signed by the cluster's CA and trusts only that CA,
//! both ways: a node dialling us must present a certificate from the CA (client auth), and the
//! node we dial must too (server auth, checked against the host name or IP we dial). A node with
//! a certificate from another CA, or none, fails the handshake before any cluster message is
//! read. The cookie is still checked inside the encrypted session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{ActorError, Result};

/// Where the node's certificate, key and the cluster CA are (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain; it must name the host peers dial (DNS name or IP).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The CA that signs every node's certificate; nothing else is trusted.
    pub ca: PathBuf,
}

/// Ready-made TLS settings for both directions.
#[derive(Clone)]
pub struct ClusterTls {
    /// Accepts peers that present a certificate from the CA.
    pub acceptor: TlsAcceptor,
    /// Dials peers, presenting this node's certificate.
    pub connector: TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls(..)")
    }
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> ActorError {
    ActorError::BadInput {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, format!("reading certificates: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("reading certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

impl ClusterTls {
    /// Loads the files and builds both sides; errors name the file and what is wrong.
    pub fn load(files: &TlsFiles) -> Result<Self> {
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| bad(&files.key, format!("reading the private key: {e}")))?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca)? {
            roots
                .add(ca)
                .map_err(|e| bad(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| bad(&files.ca, e))?;
        let server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(&files.cert, format!("certificate and key do not fit: {e}")))?;
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(&files.cert, format!("certificate and key do not fit: {e}")))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The name a dialled `host:port` must have in its certificate: the host (DNS name or IP).
pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| ActorError::Internal(format!("{addr}: not a host name or IP: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host() {
        assert!(matches!(
            server_name("127.0.0.1:4697"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:4697"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("telemetry-0.telemetry.default.svc.cluster.local:4697"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let files = TlsFiles {
            cert: empty.clone(),
            key: empty.clone(),
            ca: dir.path().join("missing.pem"),
        };
        let err = ClusterTls::load(&files).expect_err("refused").to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
