//! The Redis client a store URL describes, TLS included: `rediss://` with the server's CA
//! (`?ca_file=`), a client certificate for mutual TLS (`&cert_file=&key_file=`) and
//! `#insecure`, the same choices `--ca-file`, `--cert-file`, `--key-file` and
//! `--insecure` give for brokers, carried in the URL so one `IOTLOAD_STORE` holds them.

use std::path::Path;

use redis::{ClientTlsConfig, TlsCertificates};

use crate::store::StoreError;

/// The TLS files a store URL names.
#[derive(Debug, Default, PartialEq)]
struct TlsFiles {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// Builds the client for `url` (`redacted` is how errors show it). Without TLS options
/// the URL goes to the client unchanged; with them the files are read here, so a missing
/// or unreadable file is named before any connection is tried.
pub(super) fn client(url: &str, redacted: &str) -> Result<redis::Client, StoreError> {
    let bad = |reason: String| StoreError::BadUrl {
        url: redacted.to_owned(),
        reason,
    };
    if url.starts_with("rediss://") {
        // rustls needs one crypto provider for the process; the brokers' TLS uses ring
        // too. Already installed (by an earlier store) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let (rest, files) = split_tls_options(url).map_err(bad)?;
    if files == TlsFiles::default() {
        return redis::Client::open(rest.as_str()).map_err(|e| bad(client_error(&e)));
    }
    if !rest.starts_with("rediss://") {
        return Err(bad(
            "ca_file, cert_file and key_file are TLS options: write the URL as rediss://…".into(),
        ));
    }
    let client_tls = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem(cert, "cert_file").map_err(bad)?,
            client_key: read_pem(key, "key_file").map_err(bad)?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad("a client certificate (cert_file) needs key_file".into()));
        }
        (None, Some(_)) => return Err(bad("a client key (key_file) needs cert_file".into())),
    };
    let root_cert = match &files.ca_file {
        Some(ca) => Some(read_pem(ca, "ca_file").map_err(bad)?),
        None => None,
    };
    redis::Client::build_with_tls(
        rest.as_str(),
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| bad(client_error(&e)))
}

/// The URL without the TLS options, and the options.
fn split_tls_options(url: &str) -> Result<(String, TlsFiles), String> {
    if !url.contains('?') {
        return Ok((url.to_owned(), TlsFiles::default()));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let mut files = TlsFiles::default();
    let mut others = Vec::new();
    for (key, value) in parsed.query_pairs() {
        let slot = match key.as_ref() {
            "ca_file" => &mut files.ca_file,
            "cert_file" => &mut files.cert_file,
            "key_file" => &mut files.key_file,
            _ => {
                others.push((key.into_owned(), value.into_owned()));
                continue;
            }
        };
        if value.is_empty() {
            return Err(format!("{key} is empty; give a file path"));
        }
        *slot = Some(value.into_owned());
    }
    if others.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(others);
    }
    Ok((parsed.into(), files))
}

/// Reads a PEM file for option `option`, checking it holds PEM text.
fn read_pem(path: &str, option: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(Path::new(path))
        .map_err(|e| format!("{option}={path} cannot be read: {e}"))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{option}={path} holds no PEM block (-----BEGIN …)"));
    }
    Ok(bytes)
}

/// The client's complaint, with how to write the URL.
fn client_error(e: &redis::RedisError) -> String {
    format!(
        "{}; write it as redis://[:password@]host[:port][/db], or rediss://… for TLS \
         (?ca_file=PATH, &cert_file=PATH&key_file=PATH for mutual TLS, #insecure to skip \
         the check)",
        e.detail().unwrap_or(&e.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_and_the_rest_kept() {
        let (rest, files) =
            split_tls_options("rediss://:pw@h:6380/2?ca_file=%2Ftmp%2Fca.pem&protocol=resp3&key_file=k&cert_file=c#insecure")
                .unwrap();
        assert_eq!(rest, "rediss://:pw@h:6380/2?protocol=resp3#insecure");
        assert_eq!(
            files,
            TlsFiles {
                ca_file: Some("/tmp/ca.pem".into()),
                cert_file: Some("c".into()),
                key_file: Some("k".into()),
            }
        );
        let (rest, files) = split_tls_options("rediss://h/0?ca_file=a").unwrap();
        assert_eq!(rest, "rediss://h/0");
        assert_eq!(files.ca_file.as_deref(), Some("a"));
        let (rest, files) = split_tls_options("redis://h:6379/0").unwrap();
        assert_eq!(
            (rest.as_str(), files),
            ("redis://h:6379/0", TlsFiles::default())
        );
    }

    #[test]
    fn wrong_tls_options_are_refused_with_the_reason() {
        let reason = |url: &str| match client(url, "shown") {
            Err(StoreError::BadUrl { reason, .. }) => reason,
            other => panic!("{url}: {other:?}"),
        };
        assert!(reason("redis://h/0?ca_file=x").contains("rediss://"));
        assert!(reason("rediss://h/0?cert_file=x").contains("needs key_file"));
        assert!(reason("rediss://h/0?ca_file=").contains("empty"));
        assert!(reason("rediss://h/0?ca_file=/nonexistent/ca.pem").contains("cannot be read"));
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let url = format!("rediss://h/0?ca_file={}", not_pem.display());
        assert!(reason(&url).contains("no PEM block"));
    }
}
