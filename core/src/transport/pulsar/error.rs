//! Turns the pulsar client's errors into [`TransportError`]s that say what to fix.
//!
//! The client reports a refused TCP connection and a timed-out one as such, but folds
//! every other failure of the connection handshake (not a Pulsar server, TLS, refused
//! credentials) into one opaque I/O error; that case is reported with the likely causes.

use std::io::ErrorKind;
use std::time::Duration;

use pulsar::error::{ConnectionError, ConsumerError, ProducerError, ServiceDiscoveryError};
use pulsar::message::proto::ServerError;

use super::super::TransportError;

/// Where an error happened, for its message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The broker URL (credentials redacted).
    pub(crate) url: &'a str,
    /// The client id used.
    pub(crate) client_id: &'a str,
    /// What the client was doing, e.g. "connecting".
    pub(crate) doing: &'static str,
    /// The connect timeout in force.
    pub(crate) waited: Duration,
    /// Whether the URL asks for TLS.
    pub(crate) tls: bool,
    /// Whether the client presented a token.
    pub(crate) token: bool,
}

impl Context<'_> {
    /// The error for a step that did not finish within the connect timeout.
    pub(crate) fn timeout(&self) -> TransportError {
        TransportError::Timeout {
            url: self.url.to_string(),
            waited_ms: u64::try_from(self.waited.as_millis()).unwrap_or(u64::MAX),
            doing: self.doing,
        }
    }

    fn connect(&self, why: String) -> TransportError {
        TransportError::Connect {
            url: self.url.to_string(),
            client_id: self.client_id.to_string(),
            source: why.into(),
        }
    }

    fn auth(&self, reason: String) -> TransportError {
        TransportError::Auth {
            url: self.url.to_string(),
            client_id: self.client_id.to_string(),
            reason,
        }
    }
}

/// The connection-level cause inside a client error, if there is one.
fn connection_cause(e: &pulsar::Error) -> Option<&ConnectionError> {
    match e {
        pulsar::Error::Connection(c)
        | pulsar::Error::Producer(ProducerError::Connection(c))
        | pulsar::Error::Consumer(ConsumerError::Connection(c))
        | pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::Connection(c)) => Some(c),
        _ => None,
    }
}

/// A server error code and message inside a client error, if there is one.
fn server_cause(e: &pulsar::Error) -> Option<(Option<ServerError>, String)> {
    match e {
        pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::Query(code, text)) => {
            Some((*code, text.clone().unwrap_or_default()))
        }
        _ => match connection_cause(e) {
            Some(ConnectionError::PulsarError(code, text)) => {
                Some((*code, text.clone().unwrap_or_default()))
            }
            _ => None,
        },
    }
}

/// The transport error for a failure while connecting, creating a producer or
/// subscribing (`cx.doing` says which).
pub(crate) fn classify(e: &pulsar::Error, cx: Context<'_>) -> TransportError {
    if let Some((code, text)) = server_cause(e) {
        return match code {
            Some(ServerError::AuthenticationError) => cx.auth(format!(
                "authentication failed: {text} (check --pulsar-token or --password)"
            )),
            Some(ServerError::AuthorizationError) => cx.auth(format!(
                "not authorized while {}: {text} (the token's role needs produce/consume \
                 permission on the namespace)",
                cx.doing
            )),
            Some(ServerError::TopicNotFound) => TransportError::Unsupported(format!(
                "{} has no such topic ({text}) while {}: does the broker allow automatic topic \
                 creation, and do --pulsar-tenant and --pulsar-namespace exist?",
                cx.url, cx.doing
            )),
            Some(ServerError::ServiceNotReady) => cx.connect(format!(
                "the broker is not ready to serve the topic while {}: {text}",
                cx.doing
            )),
            other => TransportError::Unsupported(format!(
                "{} refused {}: {} {text}",
                cx.url,
                cx.doing,
                other.map(|c| format!("{c:?}")).unwrap_or_default()
            )),
        };
    }
    match connection_cause(e) {
        Some(ConnectionError::Io(io)) => match io.kind() {
            ErrorKind::ConnectionRefused => cx.connect(format!(
                "connection refused: nothing listens on that port ({io})"
            )),
            ErrorKind::TimedOut => cx.timeout(),
            // The client's word for every other handshake failure, a refused token
            // included (the crate drops the broker's AuthenticationError; checked against
            // Pulsar 4.2.4): with a token presented that is the likely cause.
            _ if cx.doing == "connecting" && cx.token => cx.auth(format!(
                "the broker refused the connection handshake ({io}); a token was presented, \
                 so it was most likely rejected (expired, signed with another key, or not \
                 a JWT: check --pulsar-token or --password); otherwise, is this a Pulsar \
                 binary port{}? IOTLOAD_LOG=pulsar=error shows the client's own reason",
                if cx.tls {
                    " whose certificate verifies against --ca-file"
                } else {
                    ""
                }
            )),
            _ if cx.doing == "connecting" => cx.connect(format!(
                "{io}: the server accepted the TCP connection but the Pulsar handshake failed \
                 (is it a Pulsar broker's binary port, 6650 or 6651 for TLS, rather than the \
                 HTTP port?{} are the credentials right?); IOTLOAD_LOG=pulsar=error shows \
                 the client's own reason",
                if cx.tls {
                    " does its certificate verify against --ca-file, for the URL's host name?"
                } else {
                    " does it expect TLS (pulsar+ssl://)?"
                }
            )),
            _ => cx.connect(io.to_string()),
        },
        Some(ConnectionError::Tls(t)) => TransportError::Tls {
            file: "the broker certificate (checked against --ca-file and the built-in roots)"
                .into(),
            reason: t.to_string(),
        },
        Some(ConnectionError::DnsName(d)) => TransportError::Tls {
            file: "the broker host name".into(),
            reason: d.to_string(),
        },
        Some(ConnectionError::Authentication(a)) => cx.auth(a.to_string()),
        Some(ConnectionError::NotFound) => cx.connect(
            "the host name does not resolve to an address (or the URL is malformed)".into(),
        ),
        Some(other) => cx.connect(other.to_string()),
        None => match e {
            pulsar::Error::Authentication(a) => cx.auth(a.to_string()),
            pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::NotFound) => {
                TransportError::Unsupported(format!(
                    "{} found no broker for the topic while {}",
                    cx.url, cx.doing
                ))
            }
            other if cx.doing == "connecting" => cx.connect(other.to_string()),
            other => {
                TransportError::Unsupported(format!("{} refused {}: {other}", cx.url, cx.doing))
            }
        },
    }
}

/// Whether a publish failed because the connection was lost (the client reconnects).
pub(crate) fn is_connection_loss(e: &pulsar::Error) -> bool {
    matches!(
        connection_cause(e),
        Some(ConnectionError::Disconnected | ConnectionError::Shutdown | ConnectionError::Io(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(doing: &'static str) -> Context<'static> {
        Context {
            url: "pulsar://127.0.0.1:6650",
            client_id: "dev-1",
            doing,
            waited: Duration::from_secs(2),
            tls: false,
            token: false,
        }
    }

    fn io(kind: ErrorKind, text: &str) -> pulsar::Error {
        pulsar::Error::Connection(ConnectionError::Io(std::io::Error::new(kind, text)))
    }

    #[test]
    fn refused_and_timed_out_connections_are_unreachable_and_name_the_url() {
        let e = classify(
            &io(ErrorKind::ConnectionRefused, "refused"),
            cx("connecting"),
        );
        assert!(matches!(e, TransportError::Connect { .. }), "{e:?}");
        assert!(e.is_unreachable());
        assert!(e.to_string().contains("127.0.0.1:6650"), "{e}");
        let e = classify(&io(ErrorKind::TimedOut, "slow"), cx("connecting"));
        assert!(
            matches!(
                e,
                TransportError::Timeout {
                    waited_ms: 2000,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_unreachable());
    }

    #[test]
    fn an_opaque_handshake_failure_lists_the_likely_causes() {
        let e = classify(
            &io(
                ErrorKind::Other,
                "fatal error when connecting to the Pulsar server",
            ),
            cx("connecting"),
        );
        assert!(e.is_unreachable());
        let text = anyhow_like(&e);
        assert!(text.contains("handshake failed"), "{text}");
        assert!(text.contains("pulsar+ssl://"), "{text}");
        let tls = Context {
            tls: true,
            ..cx("connecting")
        };
        let e = classify(&io(ErrorKind::Other, "fatal"), tls);
        assert!(anyhow_like(&e).contains("--ca-file"), "{e:?}");
    }

    #[test]
    fn an_opaque_handshake_failure_with_a_token_is_an_auth_error() {
        let with_token = Context {
            token: true,
            ..cx("connecting")
        };
        let e = classify(
            &io(
                ErrorKind::Other,
                "fatal error when connecting to the Pulsar server",
            ),
            with_token,
        );
        assert!(matches!(e, TransportError::Auth { .. }), "{e:?}");
        assert!(e.to_string().contains("--pulsar-token"), "{e}");
    }

    #[test]
    fn server_auth_errors_are_auth_errors() {
        let e = classify(
            &pulsar::Error::Connection(ConnectionError::PulsarError(
                Some(ServerError::AuthenticationError),
                Some("bad token".into()),
            )),
            cx("connecting"),
        );
        assert!(matches!(e, TransportError::Auth { .. }), "{e:?}");
        assert!(e.to_string().contains("bad token"), "{e}");
        let e = classify(
            &pulsar::Error::Producer(ProducerError::Connection(ConnectionError::PulsarError(
                Some(ServerError::AuthorizationError),
                None,
            ))),
            cx("creating a producer"),
        );
        assert!(matches!(e, TransportError::Auth { .. }), "{e:?}");
        assert!(e.to_string().contains("creating a producer"), "{e}");
    }

    #[test]
    fn a_missing_topic_or_namespace_is_explained() {
        let e = classify(
            &pulsar::Error::Connection(ConnectionError::PulsarError(
                Some(ServerError::TopicNotFound),
                Some("Topic not found".into()),
            )),
            cx("subscribing"),
        );
        let text = e.to_string();
        assert!(text.contains("--pulsar-namespace"), "{text}");
        assert!(!e.is_unreachable());
    }

    #[test]
    fn tls_and_dns_name_errors_are_tls_errors() {
        let e = classify(
            &pulsar::Error::Connection(ConnectionError::Tls(rustls::Error::General(
                "bad cert".into(),
            ))),
            cx("connecting"),
        );
        assert!(matches!(e, TransportError::Tls { .. }), "{e:?}");
        let e = classify(
            &pulsar::Error::Connection(ConnectionError::NotFound),
            cx("connecting"),
        );
        assert!(e.is_unreachable(), "{e:?}");
        assert!(e.to_string().contains("127.0.0.1:6650"), "{e}");
    }

    #[test]
    fn lost_connections_are_told_apart_from_refusals() {
        assert!(is_connection_loss(&pulsar::Error::Producer(
            ProducerError::Connection(ConnectionError::Disconnected)
        )));
        assert!(!is_connection_loss(&pulsar::Error::Producer(
            ProducerError::Fenced
        )));
    }

    /// The error and its sources, as the binary prints them.
    fn anyhow_like(e: &TransportError) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
