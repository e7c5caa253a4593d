//! rumqttc's MQTT 3.1.1 and 5 clients behind one protocol-neutral face: requests,
//! polled events and their errors.

use super::*;

pub(super) fn qos5(q: rumqttc::QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        rumqttc::QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// A client of either protocol version together with its event loop.
// One per connection, never per message: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Client {
    V4(rumqttc::AsyncClient, rumqttc::EventLoop),
    V5(rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop),
}

/// The request side of a client.
pub(super) enum Sender {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event side of a client.
#[allow(clippy::large_enum_variant)]
pub(super) enum Events {
    V4(rumqttc::EventLoop),
    V5(rumqttc::v5::EventLoop),
}

/// What one poll of an event loop produced, in protocol-neutral terms.
pub(super) enum Polled {
    ConnAck,
    SubAck { ok: bool },
    Message(Incoming),
    DisconnectSent,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum PollError {
    #[error("broker refused the connection: {code}")]
    Refused { auth: bool, code: String },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(String),
    #[error("client closed")]
    RequestsDone,
}

impl Client {
    pub(super) fn split(self) -> (Sender, Events) {
        match self {
            Client::V4(c, e) => (Sender::V4(c), Events::V4(e)),
            Client::V5(c, e) => (Sender::V5(c), Events::V5(e)),
        }
    }

    pub(super) async fn poll(&mut self) -> Result<Polled, PollError> {
        match self {
            Client::V4(_, e) => poll_v4(e).await,
            Client::V5(_, e) => poll_v5(e).await,
        }
    }

    pub(super) fn subscribe(&self, filters: &[String], qos: rumqttc::QoS) -> Result<(), PollError> {
        let err = |e: rumqttc::ClientError| PollError::Io(e.to_string());
        match self {
            Client::V4(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos)),
                )
                .map_err(err),
            Client::V5(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos5(qos))),
                )
                .map_err(|e| PollError::Io(e.to_string())),
        }
    }

    pub(super) fn disconnect(&self) -> Result<(), PollError> {
        match self {
            Client::V4(c, _) => c.try_disconnect().map_err(|e| PollError::Io(e.to_string())),
            Client::V5(c, _) => c.try_disconnect().map_err(|e| PollError::Io(e.to_string())),
        }
    }
}

impl Events {
    pub(super) async fn poll(&mut self) -> Result<Polled, PollError> {
        match self {
            Events::V4(e) => poll_v4(e).await,
            Events::V5(e) => poll_v5(e).await,
        }
    }
}

async fn poll_v4(events: &mut rumqttc::EventLoop) -> Result<Polled, PollError> {
    use rumqttc::{ConnectionError as E, Event, Packet};
    match events.poll().await {
        Ok(Event::Incoming(Packet::Publish(p))) => Ok(Polled::Message(Incoming {
            received_us: now_us(),
            record_time_us: None,
            topic: p.topic,
            payload: p.payload,
            headers: Vec::new(),
        })),
        Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Polled::ConnAck),
        Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Polled::SubAck {
            ok: s
                .return_codes
                .iter()
                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
        }),
        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Ok(Polled::DisconnectSent),
        Ok(_) => Ok(Polled::Other),
        Err(E::RequestsDone) => Err(PollError::RequestsDone),
        Err(E::ConnectionRefused(code)) => Err(PollError::Refused {
            auth: matches!(
                code,
                rumqttc::ConnectReturnCode::BadUserNamePassword
                    | rumqttc::ConnectReturnCode::NotAuthorized
            ),
            code: format!("{code:?}"),
        }),
        Err(E::Tls(e)) => Err(PollError::Tls(e.to_string())),
        Err(e) => Err(classify_io(e.to_string())),
    }
}

async fn poll_v5(events: &mut rumqttc::v5::EventLoop) -> Result<Polled, PollError> {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as C, Packet, SubscribeReasonCode as S};
    use rumqttc::v5::{ConnectionError as E, Event};
    match events.poll().await {
        Ok(Event::Incoming(Packet::Publish(p))) => {
            let received_us = now_us();
            Ok(Polled::Message(Incoming {
                received_us,
                record_time_us: None,
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                headers: p
                    .properties
                    .map(|pr| pr.user_properties)
                    .unwrap_or_default(),
            }))
        }
        Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Polled::ConnAck),
        Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Polled::SubAck {
            ok: s.return_codes.iter().all(|c| matches!(c, S::Success(_))),
        }),
        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Ok(Polled::DisconnectSent),
        Ok(_) => Ok(Polled::Other),
        Err(E::RequestsDone) => Err(PollError::RequestsDone),
        Err(E::ConnectionRefused(code)) => Err(PollError::Refused {
            auth: matches!(
                code,
                C::BadUserNamePassword | C::NotAuthorized | C::BadAuthenticationMethod
            ),
            code: format!("{code:?}"),
        }),
        Err(E::Tls(e)) => Err(PollError::Tls(e.to_string())),
        Err(e) => Err(classify_io(e.to_string())),
    }
}

pub(super) fn classify_io(text: String) -> PollError {
    // rustls reports certificate problems as I/O errors of the TLS stream.
    if text.contains("certificate") || text.contains("InvalidCertificate") {
        PollError::Tls(text)
    } else {
        PollError::Io(text)
    }
}
