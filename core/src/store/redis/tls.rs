//! The Redis client a store URL describes, TLS and Redis Cluster included: `rediss://`
//! with the server's CA (`?ca_file=`), a client certificate for mutual TLS
//! (`&cert_file=&key_file=`) and `#insecure`, the same choices `--ca-file`, `--cert-file`,
//! `--key-file` and `--insecure` give for brokers, carried in the URL so one
//! `IOTLOAD_STORE` holds them; `redis+cluster://h1:p1,h2:p2/` (or `rediss+cluster://`)
//! for a Redis Cluster reached through any of the nodes listed.

use std::path::Path;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{ClientTlsConfig, TlsCertificates, TlsMode};

use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::store::StoreError;

/// How often the cluster client tries a command again after a connection error or while
/// a shard fails over, before the store's callers (the writer retries batches) see the
/// error.
const CLUSTER_RETRIES: u32 = 4;
/// How long a command may take on a cluster, its retries included. Without it the
/// cluster client waits for some replies forever: a command caught in a fail-over (a
/// master killed while it was on its way) then never returned (measured: 1 run in 6).
const CLUSTER_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The TLS files a store URL names.
#[derive(Debug, Default, PartialEq)]
struct TlsFiles {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// The client a store URL describes.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one per store, built once")]
pub(super) enum Client {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster.
    Cluster(ClusterClient),
}

/// Builds the client for `url` (`redacted` is how errors show it). Without TLS options
/// the URL goes to the client unchanged; with them the files are read here, so a missing
/// or unreadable file is named before any connection is tried.
pub(super) fn client(url: &str, redacted: &str) -> Result<Client, StoreError> {
    let bad = |reason: String| StoreError::BadUrl {
        url: redacted.to_owned(),
        reason,
    };
    if url.starts_with("rediss://") || url.starts_with("rediss+cluster://") {
        // rustls needs one crypto provider for the process; the brokers' TLS uses ring
        // too. Already installed (by an earlier store) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if let Some(nodes) = cluster_nodes(url).map_err(bad)? {
        return cluster_client(&nodes).map_err(bad).map(Client::Cluster);
    }
    let (rest, files) = split_tls_options(url).map_err(bad)?;
    let certificates = certificates(&rest, &files).map_err(bad)?;
    match certificates {
        None => redis::Client::open(rest.as_str()),
        Some(certificates) => redis::Client::build_with_tls(rest.as_str(), certificates),
    }
    .map(Client::Single)
    .map_err(|e| bad(client_error(&e)))
}

/// The node URLs (`redis://` or `rediss://`, each with the URL's credentials, path,
/// query and fragment) of a `redis+cluster://` or `rediss+cluster://` URL; `None` for
/// other URLs.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest),
        Some(("rediss+cluster", rest)) => ("rediss", rest),
        _ => return Ok(None),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{credentials}{host}{tail}"))
        .collect();
    if nodes.is_empty() {
        return Err(format!(
            "no nodes: write it as {scheme}+cluster://[:password@]host1:port1,host2:port2/"
        ));
    }
    Ok(Some(nodes))
}

/// The cluster client for `nodes` (node URLs, TLS options still in them).
fn cluster_client(nodes: &[String]) -> Result<ClusterClient, String> {
    let mut plain = Vec::with_capacity(nodes.len());
    let mut files = TlsFiles::default();
    for node in nodes {
        let (rest, node_files) = split_tls_options(node)?;
        plain.push(rest);
        files = node_files;
    }
    let first = plain.first().map(String::as_str).unwrap_or_default();
    let mut builder = ClusterClientBuilder::new(plain.iter().map(String::as_str))
        .retries(CLUSTER_RETRIES)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_COMMAND_TIMEOUT));
    if let Some(certificates) = certificates(first, &files)? {
        builder = builder.certs(certificates);
        if first.ends_with("#insecure") {
            builder = builder.tls(TlsMode::Insecure);
        }
    }
    builder.build().map_err(|e| cluster_error(&e))
}

/// The certificates `files` name, read and checked; `None` when there are none.
/// `url` is the URL without them, which must then be a TLS one.
fn certificates(url: &str, files: &TlsFiles) -> Result<Option<TlsCertificates>, String> {
    if *files == TlsFiles::default() {
        return Ok(None);
    }
    if !url.starts_with("rediss://") {
        return Err(
            "ca_file, cert_file and key_file are TLS options: write the URL as rediss://… \
             (rediss+cluster://… for a cluster)"
                .into(),
        );
    }
    let client_tls = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem(cert, "cert_file")?,
            client_key: read_pem(key, "key_file")?,
        }),
        (None, None) => None,
        (Some(_), None) => return Err("a client certificate (cert_file) needs key_file".into()),
        (None, Some(_)) => return Err("a client key (key_file) needs cert_file".into()),
    };
    let root_cert = match &files.ca_file {
        Some(ca) => Some(read_pem(ca, "ca_file")?),
        None => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
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
         the check), or redis+cluster://host1:port1,host2:port2/ for a Redis Cluster",
        e.detail().unwrap_or(&e.to_string())
    )
}

/// The cluster client's complaint, with how to write the URL.
fn cluster_error(e: &redis::RedisError) -> String {
    format!(
        "{}; write it as redis+cluster://[:password@]host1:port1,host2:port2/ \
         (rediss+cluster://… with ?ca_file=, &cert_file=&key_file=, #insecure for TLS)",
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
    fn a_cluster_url_names_every_node_with_the_same_options() {
        assert_eq!(cluster_nodes("redis://h:1/0").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://:pw@h1:7000,h2:7001/").unwrap(),
            Some(vec![
                "redis://:pw@h1:7000/".to_owned(),
                "redis://:pw@h2:7001/".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h1:7000, h2:7001?ca_file=c#insecure").unwrap(),
            Some(vec![
                "rediss://h1:7000?ca_file=c#insecure".to_owned(),
                "rediss://h2:7001?ca_file=c#insecure".to_owned()
            ])
        );
        assert!(
            cluster_nodes("redis+cluster:///")
                .unwrap_err()
                .contains("no nodes")
        );
        assert!(matches!(
            client("redis+cluster://h1:7000,h2:7001/", "shown"),
            Ok(Client::Cluster(_))
        ));
        match client("redis+cluster://h1:7000/?cert_file=c", "shown") {
            Err(StoreError::BadUrl { reason, .. }) => {
                assert!(reason.contains("rediss"), "{reason}")
            }
            _ => panic!("TLS options on a plain cluster URL must be refused"),
        }
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
