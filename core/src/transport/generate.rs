//! The macro behind `registry.rs`: from one line per broker family it generates
//! [`BrokerKind`](super::registry::BrokerKind), the family flags, the `Any*` enums that
//! dispatch to the built families, and their trait impls. Read `registry.rs` first;
//! nothing here changes when a family is added.

/// Generates everything the registry derives from its lines.
macro_rules! brokers {
    ($(
        $(#[doc = $doc:literal])*
        $kind:ident => $module:ident::{$transport:ident, $flags:ident} if $feature:literal,
            $spec:expr;
    )*) => {
        $(
            #[cfg(feature = $feature)]
            use super::$module;
        )*

        /// Which broker family a URL names; one variant per registry line, built into
        /// this binary or not.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum BrokerKind {
            $( $(#[doc = $doc])* $kind, )*
        }

        impl BrokerKind {
            /// Every family, in registry order.
            pub const ALL: &'static [BrokerKind] = &[$(Self::$kind),*];

            /// What is known of the family without building it.
            pub fn spec(self) -> &'static BrokerSpec {
                match self {
                    $( Self::$kind => {
                        const SPEC: BrokerSpec = $spec;
                        &SPEC
                    } )*
                }
            }

            /// The cargo feature that builds the family in.
            pub fn feature(self) -> &'static str {
                match self { $( Self::$kind => $feature, )* }
            }

            /// Whether this binary has the family.
            pub fn is_built(self) -> bool {
                match self { $( Self::$kind => cfg!(feature = $feature), )* }
            }
        }

        /// The flags of every family built into this binary, each group under its own
        /// help heading.
        #[derive(Debug, Clone, clap::Args)]
        pub struct BrokerFlags {
            $(
                #[cfg(feature = $feature)]
                #[command(flatten)]
                #[doc = concat!("Options only ", stringify!($kind), " takes.")]
                pub $module: $module::$flags,
            )*
        }

        /// A transport of any family built into this binary.
        pub enum AnyTransport {
            $(
                #[cfg(feature = $feature)]
                #[doc = concat!("A ", stringify!($kind), " transport.")]
                $kind($module::$transport),
            )*
        }

        /// A publishing connection of any built family.
        #[allow(
            clippy::large_enum_variant,
            reason = "publishers live in one vector per shard; boxing would add a hop per message"
        )]
        pub enum AnyPublisher {
            $(
                #[cfg(feature = $feature)]
                #[doc = concat!("A ", stringify!($kind), " publisher.")]
                $kind(<$module::$transport as Transport>::Publisher),
            )*
        }

        /// A receiving connection of any built family.
        #[allow(
            clippy::large_enum_variant,
            reason = "a process holds a few subscribers; boxing would add a hop per message"
        )]
        pub enum AnySubscriber {
            $(
                #[cfg(feature = $feature)]
                #[doc = concat!("A ", stringify!($kind), " subscriber.")]
                $kind(<$module::$transport as Transport>::Subscriber),
            )*
        }

        impl AnyTransport {
            /// The transport `url` names, built from `broker`'s flags. Refuses a family
            /// left out of this binary (naming the feature that adds it) and flags of
            /// another family than the URL's.
            pub fn open(url: BrokerUrl, broker: &BrokerArgs) -> Result<Self, TransportError> {
                #[allow(unused_variables)]
                let flags = &broker.family;
                $(
                    #[cfg(feature = $feature)]
                    if url.kind != BrokerKind::$kind {
                        if let Some(flag) =
                            <$module::$transport as Registered>::stray_flag(&flags.$module)
                        {
                            return Err(TransportError::Unsupported(format!(
                                "{flag} needs a {} broker ({})",
                                BrokerKind::$kind.label(),
                                BrokerKind::$kind.schemes()
                            )));
                        }
                    }
                )*
                match url.kind {
                    $(
                        #[cfg(feature = $feature)]
                        BrokerKind::$kind => Ok(Self::$kind(
                            <$module::$transport as Registered>::open(url, broker, &flags.$module)?,
                        )),
                    )*
                    #[allow(unreachable_patterns)]
                    other => Err(other.not_built()),
                }
            }
        }

        impl BrokerArgs {
            /// Why the `header` stamp carrier cannot ride on `kind` with these flags.
            pub fn header_stamp_problem(&self, kind: BrokerKind) -> Option<String> {
                match kind {
                    $(
                        #[cfg(feature = $feature)]
                        BrokerKind::$kind => <$module::$transport as Registered>::header_stamp_problem(
                            &self.family.$module,
                        ),
                    )*
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }

        impl BrokerArgs {
            /// The first flag given that makes subscribers share one consumer group or
            /// queue, in any built family.
            pub fn shared_consumers_flag(&self) -> Option<&'static str> {
                $(
                    #[cfg(feature = $feature)]
                    if let Some(flag) = <$module::$transport as Registered>::shared_consumers_flag(
                        &self.family.$module,
                    ) {
                        return Some(flag);
                    }
                )*
                None
            }
        }

        impl Transport for AnyTransport {
            type Publisher = AnyPublisher;
            type Subscriber = AnySubscriber;

            fn url(&self) -> &BrokerUrl {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$kind(ref t) => t.url(), )*
                }
            }

            #[allow(unused_variables)]
            async fn publisher(
                &self,
                identity: &ClientIdentity,
            ) -> Result<AnyPublisher, TransportError> {
                match *self {
                    $(
                        #[cfg(feature = $feature)]
                        Self::$kind(ref t) => t.publisher(identity).await.map(AnyPublisher::$kind),
                    )*
                }
            }

            #[allow(unused_variables)]
            async fn subscriber(
                &self,
                identity: &ClientIdentity,
                filters: &[String],
            ) -> Result<AnySubscriber, TransportError> {
                match *self {
                    $(
                        #[cfg(feature = $feature)]
                        Self::$kind(ref t) => {
                            t.subscriber(identity, filters).await.map(AnySubscriber::$kind)
                        }
                    )*
                }
            }
        }

        impl Publisher for AnyPublisher {
            #[allow(unused_variables)]
            async fn publish(&mut self, message: Outgoing<'_>) -> Result<(), TransportError> {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$kind(ref mut p) => p.publish(message).await, )*
                }
            }

            async fn close(self) -> Result<(), TransportError> {
                match self {
                    $( #[cfg(feature = $feature)] Self::$kind(p) => p.close().await, )*
                }
            }

            fn disconnections(&self) -> u64 {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$kind(ref p) => p.disconnections(), )*
                }
            }

            fn disconnected_for(&self) -> std::time::Duration {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$kind(ref p) => p.disconnected_for(), )*
                }
            }
        }

        impl Subscriber for AnySubscriber {
            async fn recv(&mut self) -> Result<Incoming, TransportError> {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$kind(ref mut s) => s.recv().await, )*
                }
            }

            async fn close(self) -> Result<(), TransportError> {
                match self {
                    $( #[cfg(feature = $feature)] Self::$kind(s) => s.close().await, )*
                }
            }

            fn dropped(&self) -> u64 {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$kind(ref s) => s.dropped(), )*
                }
            }
        }
    };
}
