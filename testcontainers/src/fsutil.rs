//! Small file-system and process helpers shared by the server backends:
//! writing private (0600) files, locating a server program on `PATH` (and in
//! the sbin directories that a non-root `PATH` often lacks), reading a log's
//! tail, and sending job-control signals without `unsafe`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::TestkitError;

/// Directories searched after `PATH`, because daemons live in sbin.
const EXTRA_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// How many log lines go into error messages.
pub(crate) const LOG_TAIL_LINES: usize = 30;

/// Writes `contents` to `path`, readable and writable by the owner only.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    // `mode` only applies on creation; make sure a pre-existing file is 0600 too.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Finds `program` on `PATH` or in the sbin directories; `ServerMissing`
/// (carrying `hint`) when it is nowhere.
pub(crate) fn find_program(program: &str, hint: &str) -> Result<PathBuf, TestkitError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path_var).chain(EXTRA_DIRS.iter().map(PathBuf::from));
    find_program_in(program, dirs).ok_or_else(|| TestkitError::ServerMissing {
        program: program.to_owned(),
        hint: hint.to_owned(),
    })
}

/// The first executable regular file named `program` in `dirs`.
fn find_program_in(program: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The whole file as (lossy) UTF-8; empty when it cannot be read.
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `signal` (a name such as `STOP` or `CONT`) to `pid` with the `kill`
/// command, so that this crate needs no `unsafe` libc call.
pub(crate) fn send_signal(pid: u32, signal: &str) -> Result<(), TestkitError> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|source| TestkitError::Spawn {
            program: "kill".to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(TestkitError::Io(std::io::Error::other(format!(
            "`kill -{signal} {pid}` failed with {status}"
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_program_and_hint() {
        let err = find_program(
            "iotload-no-such-server-program",
            "install it with `apt-get install nothing`",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "iotload-no-such-server-program not found on PATH; install it with `apt-get install nothing`"
        );
        assert!(matches!(err, TestkitError::ServerMissing { .. }));
    }

    #[test]
    fn finds_sh_and_skips_non_executables() {
        assert!(
            find_program_in("sh", [PathBuf::from("/bin"), PathBuf::from("/usr/bin")]).is_some()
        );
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join("notexec"), b"x").unwrap();
        assert!(find_program_in("notexec", [dir.path().to_path_buf()]).is_none());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
