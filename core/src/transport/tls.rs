//! TLS client setup shared by the transports that use rustls (with the ring provider):
//! CA file or system roots, optional client certificate, and `--insecure`.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TransportError;

/// TLS files and checks for encrypted broker URLs (`mqtts://`, `tls://`).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// CA certificates (PEM) that sign the broker's certificate; the system's roots if unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate (testing only).
    pub insecure: bool,
}

/// Builds the rustls client configuration `s` describes; errors name the file at fault.
#[cfg_attr(
    not(any(feature = "mqtt", feature = "nats", feature = "amqp")),
    allow(dead_code)
)]
pub(crate) fn tls_config(s: &TlsSettings) -> Result<rustls::ClientConfig, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("the TLS provider", e))?;
    let builder = if s.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &s.ca_file {
            Some(path) => {
                let certs = read_certs(path)?;
                if certs.is_empty() {
                    return Err(tls_err(path, "no PEM certificate in the file"));
                }
                for c in certs {
                    roots.add(c).map_err(|e| tls_err(path, e))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(tls_err(
                        "the system CA store",
                        "no CA certificate found; give --ca-file",
                    ));
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            if chain.is_empty() {
                return Err(tls_err(cert, "no PEM certificate in the file"));
            }
            let key_der = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_err(key, e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(tls_err(
            "--cert-file",
            "a client certificate needs --key-file too",
        )),
        (None, Some(_)) => Err(tls_err("--key-file", "a client key needs --cert-file too")),
    }
}

fn tls_err(file: impl AsRef<Path>, reason: impl std::fmt::Display) -> TransportError {
    TransportError::Tls {
        file: file.as_ref().display().to_string(),
        reason: reason.to_string(),
    }
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, TransportError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| tls_err(path, format!("cannot open: {e}")))
}

/// The PEM certificates in `path`; errors name the file.
pub(crate) fn read_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TransportError> {
    rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, format!("not a PEM certificate file: {e}")))
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TransportError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| tls_err(path, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| tls_err(path, "no private key in the file"))
}

/// The verifier behind `--insecure`: accepts any certificate, still checks signatures.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
