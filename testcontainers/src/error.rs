//! The one error type of the test kit: every way that starting, driving or
//! stopping a throwaway server can fail, with enough context (program, address,
//! server log tail) to make a failing test's message self-explanatory.

use std::time::Duration;

/// Everything that can go wrong while providing a test server.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The server program is not installed (or not executable) on this machine.
    #[error("{program} not found on PATH; {hint}")]
    ServerMissing {
        /// The program that was looked for, e.g. `mosquitto`.
        program: String,
        /// How to install it, e.g. "install it with `apt-get install mosquitto`".
        hint: String,
    },

    /// A JVM server's jars have not been resolved into the cache yet.
    #[error("the {server} jars are not in {folder}; {hint}")]
    JarsMissing {
        /// The server, e.g. `kafka`.
        server: String,
        /// The folder where they were looked for.
        folder: String,
        /// How to resolve them.
        hint: String,
    },

    /// The server program exists but could not be started.
    #[error("failed to spawn {program}: {source}")]
    Spawn {
        /// The program that was started.
        program: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// The server was started but did not accept connections in time (or exited).
    #[error("{what} at {addr} not ready after {waited:?}; last lines of its log:\n{log}")]
    NotReady {
        /// What was waited for, e.g. "mosquitto (TLS listener)".
        what: String,
        /// The address that was probed.
        addr: String,
        /// How long the kit waited before giving up.
        waited: Duration,
        /// The last lines of the server's log.
        log: String,
    },

    /// An administration command (e.g. `rabbitmqctl add_vhost`) failed.
    #[error("`{command}` failed: {output}")]
    Admin {
        /// The command line that was run.
        command: String,
        /// What it printed.
        output: String,
    },

    /// The Docker backend cannot run a container: no engine, a missing image,
    /// or the engine refused (the message says which and what to do).
    #[error("{0}")]
    Docker(String),

    /// A file or process operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// Generating the test certificates failed.
    #[error("test PKI generation failed: {0}")]
    Pki(#[from] rcgen::Error),
}
