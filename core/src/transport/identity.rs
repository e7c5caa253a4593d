//! Who a client is to the broker: its id and credentials, rendered per device, and the
//! login every family sends (the device's credentials, else the URL's).

use crate::plan::BrokerUrl;

/// Who a client is: id and credentials, rendered per device.
#[derive(Clone, Default)]
pub struct ClientIdentity {
    /// The client id (MQTT client identifier, consumer name, ...).
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one; never printed.
    pub password: Option<String>,
    /// Delivery guarantee for this client's publishes where the family has levels (MQTT
    /// QoS 0–2), overriding the transport's (a fleet file's group `qos`).
    pub qos: Option<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("qos", &self.qos)
            .finish()
    }
}

impl ClientIdentity {
    /// User name and password to log in with: the device's, else the URL's; `None` when
    /// neither names a user.
    pub fn login(&self, url: &BrokerUrl) -> Option<(String, String)> {
        let user = self.username.clone().or_else(|| url.username.clone())?;
        let pass = self
            .password
            .clone()
            .or_else(|| url.password.clone())
            .unwrap_or_default();
        Some((user, pass))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_login_comes_from_the_identity_then_the_url() {
        let url = BrokerUrl::parse("kafka://u:p@127.0.0.1:9092").unwrap();
        let nobody = ClientIdentity::default();
        assert_eq!(nobody.login(&url), Some(("u".into(), "p".into())));
        let device = ClientIdentity {
            client_id: "c".into(),
            username: Some("dev1".into()),
            password: Some("s".into()),
            qos: None,
        };
        assert_eq!(device.login(&url), Some(("dev1".into(), "s".into())));
        let plain = BrokerUrl::parse("kafka://127.0.0.1:9092").unwrap();
        assert_eq!(nobody.login(&plain), None);
    }
}
