//! Where the JVM servers' jars are and which `java` runs them. The jars come
//! from Maven Central: `scripts/jvm-servers` resolves each server's POM (kept in
//! `testcontainers/jvm/NAME/`) once per machine into `CACHE/NAME/lib/`, where
//! CACHE is env `IOTLOAD_JVM_CACHE`, else `$XDG_CACHE_HOME/iotload/jvm`, else
//! `~/.cache/iotload/jvm`. A server is then `java -cp 'CACHE/NAME/lib/*' MAIN`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::fsutil::find_program;
use crate::{TestkitError, is_ci};

/// Environment variable that overrides the jar cache's location.
pub const JVM_CACHE_ENV: &str = "IOTLOAD_JVM_CACHE";

/// JVM options for a server in a test: a small heap and one GC thread, so
/// several fit at once on a small machine, and no lingering after running out
/// of memory.
pub(crate) const SMALL_JVM: [&str; 5] = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
];

/// The command that fills the cache.
pub const JVM_SERVERS_INSTALL: &str = "scripts/jvm-servers";

/// The folder holding one folder of jars per JVM server.
pub fn jvm_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(JVM_CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("iotload").join("jvm")
}

/// A JVM server's jars, resolved and ready to run.
#[derive(Debug, Clone)]
pub(crate) struct JvmJars {
    /// `java` (from `JAVA_HOME` when set, else `PATH`).
    pub(crate) java: PathBuf,
    /// The `-cp` value: every jar of the server's `lib/` folder.
    pub(crate) classpath: OsString,
}

/// The jars of server `name` (`kafka`, `pulsar`, `elasticsearch`), or
/// `ServerMissing` saying how to resolve them.
pub(crate) fn jars(name: &str) -> Result<JvmJars, TestkitError> {
    let java = java_program()?;
    let lib = jvm_cache_dir().join(name).join("lib");
    let has_jars = std::fs::read_dir(&lib)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "jar"))
        })
        .unwrap_or(false);
    if !has_jars {
        return Err(TestkitError::JarsMissing {
            server: name.to_owned(),
            folder: lib.display().to_string(),
            hint: format!(
                "resolve them from Maven Central with `{JVM_SERVERS_INSTALL} {name}` \
                 (scripts/test does it; set {JVM_CACHE_ENV} to use another folder)"
            ),
        });
    }
    let mut classpath = lib.into_os_string();
    classpath.push("/*");
    Ok(JvmJars { java, classpath })
}

/// Whether server `name`'s jars and Java are here. When they are not: with
/// `CI=true` this panics with the command that resolves them; otherwise it
/// warns and returns `false`, so the test can return early.
///
/// # Panics
///
/// When the jars are missing and `CI=true`.
pub(crate) fn available(name: &str) -> bool {
    match jars(name) {
        Ok(_) => true,
        Err(err) if is_ci() => panic!("{err} (CI=true, so this test may not be skipped)"),
        Err(err) => {
            tracing::warn!("skipped: {err}");
            eprintln!("skipped: {err}");
            false
        }
    }
}

/// `$JAVA_HOME/bin/java` when `JAVA_HOME` is set, else `java` on `PATH`.
fn java_program() -> Result<PathBuf, TestkitError> {
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        let java = PathBuf::from(home).join("bin").join("java");
        if java.is_file() {
            return Ok(java);
        }
    }
    find_program(
        "java",
        "install a Java 17 runtime with `apt-get install openjdk-17-jre-headless`",
    )
}
