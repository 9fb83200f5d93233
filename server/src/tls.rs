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

/// A client configuration that trusts exactly one certificate: the one whose SHA-256 is
/// `pin` (a listener's self-signed certificate, announced by its client over TLS). Its
/// signatures are checked as any server's; names and issuers do not matter.
pub fn pinned_client_config(pin: crate::core::Pin) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(provider());
    let verifier = Arc::new(Pinned {
        pin,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// The SHA-256 of a certificate.
pub fn pin_of(cert: &[u8]) -> crate::core::Pin {
    use sha2::Digest;
    sha2::Sha256::digest(cert).into()
}

#[derive(Debug)]
struct Pinned {
    pin: crate::core::Pin,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use subtle::ConstantTimeEq;
        if bool::from(pin_of(end_entity).ct_eq(&self.pin)) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
