//! The `--config` YAML file: its values become the defaults of the options it names, so
//! flags and environment variables still win over it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Command;
use serde_json::Value;

/// Finds `--config PATH` (or `--config=PATH`, or IOTLOAD_CONFIG) before clap parses.
pub(crate) fn locate(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("IOTLOAD_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A parsed config file.
pub(crate) struct ConfigFile {
    path: PathBuf,
    root: serde_json::Map<String, Value>,
}

/// Reads and parses the YAML file.
pub(crate) fn load(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(path, &text)
}

/// Parses the YAML text of the file at `path`.
fn parse(path: &Path, text: &str) -> anyhow::Result<ConfigFile> {
    let value: Value = serde_saphyr::from_str(text)
        .with_context(|| format!("config file {} is not valid YAML", path.display()))?;
    let root = match value {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        _ => bail!(
            "config file {} must be a mapping of option names to values, e.g. `rate: 10`",
            path.display()
        ),
    };
    Ok(ConfigFile {
        path: path.to_path_buf(),
        root,
    })
}

impl ConfigFile {
    /// Makes the file's values the defaults of the named options of every subcommand.
    /// Records `subcommand:option-id` of every option it set in `from_file`.
    pub(crate) fn apply(
        &self,
        mut command: Command,
        from_file: &mut BTreeSet<String>,
    ) -> anyhow::Result<Command> {
        let sub_names: Vec<String> = command
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        let mut known = BTreeSet::new();
        for sub in &sub_names {
            let section = self.root.get(sub).and_then(Value::as_object);
            let mut values: Vec<(String, &Value)> = Vec::new();
            for (key, value) in &self.root {
                if !sub_names.contains(key) {
                    values.push((normalise(key), value));
                }
            }
            for (key, value) in section.into_iter().flatten() {
                values.push((normalise(key), value));
            }
            let Some(sc) = command.find_subcommand(sub) else {
                continue;
            };
            let ids: Vec<(String, String)> = sc
                .get_arguments()
                .filter_map(|a| {
                    a.get_long()
                        .map(|l| (l.to_string(), a.get_id().to_string()))
                })
                .collect();
            for (key, value) in values {
                let Some((_, id)) = ids.iter().find(|(long, _)| *long == key) else {
                    continue;
                };
                known.insert(key.clone());
                let texts = scalars(value)
                    .with_context(|| format!("config file {}: key `{key}`", self.path.display()))?;
                from_file.insert(format!("{sub}:{id}"));
                let id = id.clone();
                command = command.mut_subcommand(sub, |sc| {
                    sc.mut_arg(&id, |a| a.default_values(texts.clone()))
                });
            }
        }
        for key in self.root.keys() {
            let k = normalise(key);
            if !sub_names.contains(key) && !known.contains(&k) && k != "config" {
                bail!(
                    "config file {}: unknown option `{key}`; keys are option names such as \
                     `rate`, `devices`, `broker` (see `iotload run --help`)",
                    self.path.display()
                );
            }
        }
        Ok(command)
    }
}

fn normalise(key: &str) -> String {
    key.replace('_', "-")
}

fn scalars(value: &Value) -> anyhow::Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Array(_) | Value::Object(_) | Value::Null => {
                    bail!("list items must be plain values")
                }
                other => Ok(scalars(other)?.remove(0)),
            })
            .collect(),
        Value::Null => bail!("has no value"),
        Value::Object(_) => bail!("must be a plain value or a list, not a mapping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use proptest::prelude::*;

    /// Parses `text` as a config file and, when it is accepted, parses `iotload run` with
    /// it; any outcome but a panic is fine.
    fn parse_with(text: &str) {
        let Ok(file) = parse(Path::new("fuzz.yaml"), text) else {
            return;
        };
        let mut from_file = BTreeSet::new();
        let Ok(command) = file.apply(crate::cli::Cli::command(), &mut from_file) else {
            return;
        };
        let _ = command.try_get_matches_from(["iotload", "run", "--dry-run"]);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            parse_with(&text);
        }

        #[test]
        fn yaml_like_text_never_panics(
            text in "((run|loadgen|plotter|rate|devices|broker|duration|qos|topic|x_y|config):( |\n  )?(-?[0-9]{1,22}(\\.[0-9]+)?|true|null|~|\"[^\"\n]{0,12}\"|\\[[0-9a-z, ]{0,12}\\]|\\{[a-z: 0-9]{0,12}\\}|&a [0-9]|\\*a|!!str 5|[a-z/+#:{}]{0,12})\n){0,8}"
        ) {
            parse_with(&text);
        }
    }

    #[test]
    fn rejected_files_say_why() {
        for (text, needle) in [
            ("- 1\n- 2\n", "must be a mapping"),
            ("rate: [1, [2]]\n", "list items must be plain values"),
            ("rate: {a: 1}\n", "not a mapping"),
            ("nope: 1\n", "unknown option `nope`"),
            ("rate: [1\n", "not valid YAML"),
        ] {
            let result = parse(Path::new("f.yaml"), text).and_then(|f| {
                f.apply(crate::cli::Cli::command(), &mut BTreeSet::new())
                    .map(|_| ())
            });
            let err = format!("{:#}", result.expect_err(text));
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
