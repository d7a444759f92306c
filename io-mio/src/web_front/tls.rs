//! The web console's certificate: read from the operator's PEM files, or made for a demo. Owns
//! turning files into a rustls server configuration; what the console serves is not its concern.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "could not read the web certificate {path}: {message}; give a PEM file (`cohort init` makes one)"
    )]
    Certificate { path: PathBuf, message: String },
    #[error("could not read the web key {path}: {message}; give a PEM private key matching the certificate")]
    Key { path: PathBuf, message: String },
    #[error("the web certificate {cert} and key {key} do not make a TLS configuration: {message}")]
    Config { cert: PathBuf, key: PathBuf, message: String },
    #[error("could not make a certificate for {names:?}: {message}")]
    Generate { names: Vec<String>, message: String },
}

/// A server configuration for the certificate chain at `cert` and the key at `key` (PEM), with
/// ring as the provider and HTTP/1.1 as the one protocol offered.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate { path: cert.to_owned(), message: e.to_string() })?;
    if chain.is_empty() {
        let message = "it holds no CERTIFICATE block".to_owned();
        return Err(TlsError::Certificate { path: cert.to_owned(), message });
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.to_owned(), message: e.to_string() })?;
    let config_error = |e: rustls::Error| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        message: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed certificate for `names` (DNS names or IP addresses), as PEM: (certificate, key).
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate { names: names.to_vec(), message: e.to_string() })?;
    Ok((generated.cert.pem(), generated.key_pair.serialize_pem()))
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as a browser shows it
/// (`AB:CD:...`), for an operator to compare before trusting a self-signed certificate.
pub fn fingerprint(pem: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let digest = Sha256::digest(der.as_ref());
    Some(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_loads_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert, key) = self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("a certificate");
        let (cert_path, key_path) = (dir.path().join("web.crt"), dir.path().join("web.key"));
        std::fs::write(&cert_path, &cert).expect("writes");
        std::fs::write(&key_path, &key).expect("writes");
        server_config(&cert_path, &key_path).expect("loads");
        let print = fingerprint(&cert).expect("a fingerprint");
        assert_eq!(print.len(), 32 * 3 - 1, "{print}");

        std::fs::write(&cert_path, "not a certificate").expect("writes");
        let error = server_config(&cert_path, &key_path).expect_err("refused").to_string();
        assert!(error.contains("web.crt") && error.contains("no CERTIFICATE"), "{error}");
        let error = server_config(&dir.path().join("missing.crt"), &key_path).expect_err("refused");
        assert!(error.to_string().contains("missing.crt"), "{error}");
    }
}
