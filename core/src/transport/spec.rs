//! What iotload knows of a broker family before it is built: its name, URL schemes,
//! default ports and whether its URL takes a path. Read by URL parsing and display, so
//! a URL of a family left out of the build still parses and says which feature adds it.

/// The static description of one broker family (see `registry.rs`).
#[derive(Debug)]
pub struct BrokerSpec {
    /// The family's name as users know it, e.g. `MQTT`.
    pub label: &'static str,
    /// Schemes of plain connections; the first is the one printed.
    pub plain: &'static [&'static str],
    /// Port of a plain connection when the URL gives none.
    pub plain_port: u16,
    /// Schemes of TLS connections (none when the family has no TLS); the first is the one
    /// printed.
    pub tls: &'static [&'static str],
    /// Port of a TLS connection when the URL gives none.
    pub tls_port: u16,
    /// What a path in the URL means (e.g. the AMQP virtual host); `None` refuses a path.
    pub path: Option<&'static str>,
}

impl BrokerSpec {
    /// A family with these plain and TLS schemes and ports, whose URL takes no path.
    pub const fn new(
        label: &'static str,
        plain: &'static [&'static str],
        plain_port: u16,
        tls: &'static [&'static str],
        tls_port: u16,
    ) -> Self {
        Self {
            label,
            plain,
            plain_port,
            tls,
            tls_port,
            path: None,
        }
    }

    /// The same family, whose URL path means `meaning`.
    pub const fn with_path(self, meaning: &'static str) -> Self {
        Self {
            path: Some(meaning),
            ..self
        }
    }

    /// Whether `scheme` (lowercase) names this family, and if so whether it means TLS.
    pub fn tls_of(&self, scheme: &str) -> Option<bool> {
        if self.plain.contains(&scheme) {
            Some(false)
        } else if self.tls.contains(&scheme) {
            Some(true)
        } else {
            None
        }
    }

    /// The port a URL without one gets.
    pub fn default_port(&self, tls: bool) -> u16 {
        if tls { self.tls_port } else { self.plain_port }
    }

    /// The scheme printed for a connection.
    pub fn scheme(&self, tls: bool) -> &'static str {
        let names = if tls && !self.tls.is_empty() {
            self.tls
        } else {
            self.plain
        };
        names.first().copied().unwrap_or("")
    }
}
