//! The server's certificate and key (`--tls-cert`, `--tls-key`): read from PEM files at
//! start-up and again on SIGHUP. A reload that fails keeps the pair in use, and says which file
//! and why; connections made after a reload get the new pair, established ones go on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ServerConfig>,
}

impl Certificates {
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, String> {
        Ok(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: server_config(cert, key)?,
        })
    }

    /// Reads the files again; on failure the pair in use stays.
    pub fn reload(&mut self) -> Result<(), String> {
        self.config = server_config(&self.cert, &self.key)?;
        Ok(())
    }

    /// What new connections use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

/// The rustls configuration for a chain (PEM, leaf first) and its private key (PEM: PKCS#8,
/// PKCS#1 RSA or SEC1 EC), with ring's cryptography and TLS 1.2 and 1.3.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let at = |path: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| at(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| at(cert, &e))?;
    if chain.is_empty() {
        return Err(at(cert, &"no certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| at(key, &e))?;
    let provider = Arc::new(provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}

/// ring's cryptography: it builds with nothing but the C compiler a fresh Debian 12 has
/// (aws-lc-rs needs more). rustls deprecates it for lacking post-quantum key exchange
/// (X25519MLKEM768); every classical suite of TLS 1.2 and 1.3 is there.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
