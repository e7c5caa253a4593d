//! A throwaway public-key infrastructure for TLS tests: one certificate
//! authority that signs a server certificate (valid for `localhost` and
//! `127.0.0.1`) and a client certificate, plus an unrelated second CA for
//! "wrong CA" tests. Everything is written as PEM files into a temporary
//! directory that lives as long as any clone of the [`TestPki`] value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::TestkitError;
use crate::fsutil::write_private;

/// A throwaway certificate authority with a server certificate (SAN: localhost,
/// 127.0.0.1) and a client certificate, as PEM files in a temp dir (kept alive
/// by this value and its clones).
#[derive(Clone, Debug)]
pub struct TestPki {
    dir: Arc<TempDir>,
    ca_pem: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca_pem: PathBuf,
}

impl TestPki {
    /// Generates fresh keys and certificates and writes them (mode 0600) into a
    /// new temporary directory.
    pub fn generate() -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-pki-")
            .tempdir()?;
        let path = |name: &str| dir.path().join(name);

        let ca = new_ca("iotload-testkit CA")?;
        let other_ca = new_ca("iotload-testkit unrelated CA")?;

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "iotload-test-client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &ca)?;

        let pki = Self {
            ca_pem: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            other_ca_pem: path("other-ca.pem"),
            dir: Arc::new(dir),
        };
        write_private(&pki.ca_pem, ca.pem().as_bytes())?;
        write_private(&pki.server_cert, server_cert.pem().as_bytes())?;
        write_private(&pki.server_key, server_key.serialize_pem().as_bytes())?;
        write_private(&pki.client_cert, client_cert.pem().as_bytes())?;
        write_private(&pki.client_key, client_key.serialize_pem().as_bytes())?;
        write_private(&pki.other_ca_pem, other_ca.pem().as_bytes())?;
        tracing::debug!(dir = %pki.dir.path().display(), "generated test PKI");
        Ok(pki)
    }

    /// The CA certificate that signed the server and client certificates.
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// The server certificate (SAN: `localhost`, `127.0.0.1`).
    pub fn server_cert(&self) -> &Path {
        &self.server_cert
    }

    /// The server certificate's private key (PKCS#8 PEM).
    pub fn server_key(&self) -> &Path {
        &self.server_key
    }

    /// The client certificate, for mutual TLS.
    pub fn client_cert(&self) -> &Path {
        &self.client_cert
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The certificate of an unrelated CA that signed nothing here, for
    /// wrong-CA tests.
    pub fn other_ca_pem(&self) -> &Path {
        &self.other_ca_pem
    }
}

/// A self-signed CA able to sign leaf certificates.
fn new_ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, TestkitError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_pem_files_that_live_as_long_as_a_clone() {
        let pki = TestPki::generate().unwrap();
        let clone = pki.clone();
        drop(pki);
        for path in [
            clone.ca_pem(),
            clone.server_cert(),
            clone.client_cert(),
            clone.other_ca_pem(),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        for path in [clone.server_key(), clone.client_key()] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.contains("PRIVATE KEY"), "{text}");
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
