#![allow(clippy::unwrap_used)]
//! The dashboards shipped in `compose/` stay in step with the docs: the Kibana saved
//! objects are importable NDJSON whose visualizations use only the documented document
//! fields, and the Grafana dashboard queries only documented metric names through the
//! Prometheus datasource variable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use serde_json::Value;

const KIBANA: &str = "compose/kibana/iotload-saved-objects.ndjson";
const GRAFANA: &str = "compose/grafana/iotload-dashboard.json";
const PLOTTER_DOC: &str = "docs/plotter.md";
const METRICS_DOC: &str = "docs/metrics.md";

pub(crate) fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub(crate) fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Every saved object of the Kibana export, one per line.
pub(crate) fn kibana_objects() -> Vec<Value> {
    let text = read(KIBANA);
    let mut objects = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        assert!(!line.trim().is_empty(), "{KIBANA}:{number}: empty line");
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{KIBANA}:{number}: not JSON: {e}"));
        assert!(object.is_object(), "{KIBANA}:{number}: not a JSON object");
        for key in ["type", "id"] {
            assert!(
                object[key].is_string(),
                "{KIBANA}:{number}: no string `{key}`"
            );
        }
        assert!(
            object["attributes"].is_object(),
            "{KIBANA}:{number}: no `attributes` object"
        );
        objects.push(object);
    }
    assert!(!objects.is_empty(), "{KIBANA}: no saved object");
    objects
}

/// "file: type `id`", for assertion messages.
pub(crate) fn describe(object: &Value) -> String {
    let kind = object["type"].as_str().unwrap_or("?");
    let id = object["id"].as_str().unwrap_or("?");
    format!("{KIBANA}: {kind} `{id}`")
}

/// A JSON document stored as a string inside a saved object (`visState`, `panelsJSON`,
/// `searchSourceJSON`), parsed; `None` when the object has no such attribute.
pub(crate) fn embedded(object: &Value, pointer: &str) -> Option<Value> {
    let text = object.pointer(pointer)?;
    let what = describe(object);
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {pointer} is not a string"));
    Some(
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {pointer} is not JSON: {e}")),
    )
}

/// The names between backticks in `text`.
pub(crate) fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The field names of the "Document fields" table of docs/plotter.md; object fields
/// (`latency_ms`, ...) also give `name.sub` for each sub-field their row lists in
/// backticks, and a row saying "same fields" reuses the sub-fields of the row above.
pub(crate) fn document_fields() -> BTreeSet<String> {
    let doc = read(PLOTTER_DOC);
    let section = doc
        .split("\n## Document fields")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("{PLOTTER_DOC}: no `## Document fields` section"));
    let mut fields = BTreeSet::new();
    let mut subfields: Vec<String> = Vec::new();
    for row in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [name, kind, meaning, ..] = cells.as_slice() else {
            panic!("{PLOTTER_DOC}: Document fields row with fewer than 3 cells: {row}");
        };
        let name = name.trim_matches('`');
        fields.insert(name.to_string());
        if *kind == "object" {
            let listed = backticked(meaning);
            if !listed.is_empty() {
                subfields = listed;
            }
            assert!(
                !subfields.is_empty(),
                "{PLOTTER_DOC}: object field `{name}` lists no sub-field in backticks"
            );
            fields.extend(subfields.iter().map(|sub| format!("{name}.{sub}")));
        }
    }
    fields
}

/// Every string under a `field`, `sourceField` or `fieldName` key, at any depth: the
/// fields legacy visualizations (aggregations, input controls) and Lens columns use.
pub(crate) fn collect_fields(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if matches!(key.as_str(), "field" | "sourceField" | "fieldName")
                    && let Some(name) = child.as_str()
                {
                    out.push(name.to_string());
                }
                collect_fields(child, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_fields(item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn kibana_index_pattern_is_iotload_star_on_timestamp() {
    let objects = kibana_objects();
    let patterns: Vec<&Value> = objects
        .iter()
        .filter(|object| object["type"] == "index-pattern")
        .collect();
    assert_eq!(
        patterns.len(),
        1,
        "{KIBANA}: expected one index-pattern object, found {}",
        patterns.len()
    );
    let pattern = patterns[0];
    let what = describe(pattern);
    assert_eq!(
        pattern["attributes"]["title"], "iotload-*",
        "{what}: attributes.title"
    );
    assert_eq!(
        pattern["attributes"]["timeFieldName"], "@timestamp",
        "{what}: attributes.timeFieldName"
    );
}

#[test]
fn kibana_ids_are_unique_and_every_reference_resolves() {
    let objects = kibana_objects();
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    for object in &objects {
        let id = object["id"].as_str().unwrap();
        let kind = object["type"].as_str().unwrap();
        assert!(
            kinds.insert(id, kind).is_none(),
            "{KIBANA}: id `{id}` is used by two objects"
        );
    }
    for object in &objects {
        let what = describe(object);
        let references = object["references"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no `references` array"));
        let mut names: HashSet<&str> = HashSet::new();
        for reference in references {
            let name = reference["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: a reference has no name"));
            let id = reference["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: reference `{name}` has no id"));
            let kind = reference["type"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: reference `{name}` has no type"));
            assert!(
                names.insert(name),
                "{what}: reference name `{name}` is used twice"
            );
            let target = kinds.get(id).unwrap_or_else(|| {
                panic!("{what}: reference `{name}` points to `{id}`, which is not in the file")
            });
            assert_eq!(
                *target, kind,
                "{what}: reference `{name}` says `{id}` is a {kind}, the file has a {target}"
            );
        }
        // The reference names the attributes use must be references of this object.
        let mut used: Vec<String> = Vec::new();
        if let Some(source) = embedded(object, "/attributes/kibanaSavedObjectMeta/searchSourceJSON")
            && let Some(name) = source["indexRefName"].as_str()
        {
            used.push(name.to_string());
        }
        if let Some(vis) = embedded(object, "/attributes/visState") {
            for control in vis["params"]["controls"].as_array().into_iter().flatten() {
                if let Some(name) = control["indexPatternRefName"].as_str() {
                    used.push(name.to_string());
                }
            }
        }
        if let Some(panels) = embedded(object, "/attributes/panelsJSON") {
            for panel in panels.as_array().into_iter().flatten() {
                let name = panel["panelRefName"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: a panel has no panelRefName: {panel}"));
                used.push(name.to_string());
            }
        }
        for name in used {
            assert!(
                names.contains(name.as_str()),
                "{what}: the attributes use `{name}`, which is not one of its references"
            );
        }
    }
}

#[test]
fn kibana_dashboard_shows_the_visualizations() {
    let objects = kibana_objects();
    let dashboard = objects
        .iter()
        .find(|object| {
            object["type"] == "dashboard" && object["attributes"]["title"] == "iotload latency"
        })
        .unwrap_or_else(|| panic!("{KIBANA}: no dashboard titled \"iotload latency\""));
    let what = describe(dashboard);
    let panels = embedded(dashboard, "/attributes/panelsJSON")
        .unwrap_or_else(|| panic!("{what}: no attributes.panelsJSON"));
    let count = panels.as_array().map_or(0, Vec::len);
    assert!(count >= 4, "{what}: {count} panels, expected at least 4");
}

#[test]
fn kibana_visualizations_use_only_documented_fields() {
    let documented = document_fields();
    for expected in [
        "@timestamp",
        "run_id",
        "topic",
        "sent",
        "latency_ms.p99",
        "latency_corrected_ms.p99",
    ] {
        assert!(
            documented.contains(expected),
            "{PLOTTER_DOC}: the Document fields table should give `{expected}`, found {documented:?}"
        );
    }
    let mut checked = 0;
    for object in kibana_objects() {
        let what = describe(&object);
        let mut fields = Vec::new();
        match object["type"].as_str().unwrap_or_default() {
            "visualization" => {
                let vis = embedded(&object, "/attributes/visState")
                    .unwrap_or_else(|| panic!("{what}: no attributes.visState"));
                collect_fields(&vis, &mut fields);
            }
            "lens" => collect_fields(&object["attributes"]["state"], &mut fields),
            _ => continue,
        }
        for field in fields {
            assert!(
                documented.contains(&field),
                "{what}: field `{field}` is not in the Document fields table of {PLOTTER_DOC}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{KIBANA}: no visualization uses a field");
}

pub(crate) fn grafana() -> Value {
    serde_json::from_str(&read(GRAFANA)).unwrap_or_else(|e| panic!("{GRAFANA}: not JSON: {e}"))
}

/// The dashboard's panels, with the panels nested in collapsed rows.
pub(crate) fn grafana_panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{GRAFANA}: no `panels` array"));
    let mut panels = Vec::new();
    for panel in top {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

/// "file: panel id "title"", for assertion messages.
pub(crate) fn describe_panel(panel: &Value) -> String {
    let id = &panel["id"];
    let title = panel["title"].as_str().unwrap_or("?");
    format!("{GRAFANA}: panel {id} \"{title}\"")
}

/// `${NAME}` for each datasource template variable of type prometheus and each
/// prometheus `__inputs` entry: the datasource uids a panel may use.
pub(crate) fn prometheus_uids(dashboard: &Value) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "datasource"
            && variable["query"] == "prometheus"
            && let Some(name) = variable["name"].as_str()
        {
            uids.insert(format!("${{{name}}}"));
        }
    }
    for input in dashboard["__inputs"].as_array().into_iter().flatten() {
        if input["pluginId"] == "prometheus"
            && let Some(name) = input["name"].as_str()
        {
            uids.insert(format!("${{{name}}}"));
        }
    }
    uids
}

pub(crate) fn is_prometheus(datasource: &Value, uids: &BTreeSet<String>) -> bool {
    match datasource {
        Value::String(uid) => uids.contains(uid),
        Value::Object(_) => {
            datasource["type"] == "prometheus"
                && datasource["uid"]
                    .as_str()
                    .is_some_and(|uid| uids.contains(uid))
        }
        _ => false,
    }
}

/// The query of a template variable: a string, or an object with a `query` string.
pub(crate) fn query_text(query: &Value) -> String {
    match query {
        Value::String(text) => text.clone(),
        other => other["query"].as_str().unwrap_or_default().to_string(),
    }
}

pub(crate) fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The `iotload_[a-z_]+` metric names in a PromQL expression, without the histogram and
/// summary suffixes `_bucket`, `_sum` and `_count`.
pub(crate) fn metric_names(expr: &str) -> Vec<String> {
    const PREFIX: &str = "iotload_";
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(offset) = expr[from..].find(PREFIX) {
        let start = from + offset;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if end > start + PREFIX.len() && (start == 0 || !is_word_byte(bytes[start - 1])) {
            let name = &expr[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .into_iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.push(base.to_string());
        }
        from = end;
    }
    names
}

/// Whether `word` occurs in `text` as a whole word (not inside a longer name).
pub(crate) fn contains_word(text: &str, word: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(word).any(|(at, _)| {
        let before = at == 0 || !is_word_byte(bytes[at - 1]);
        let after = bytes
            .get(at + word.len())
            .is_none_or(|&byte| !is_word_byte(byte));
        before && after
    })
}

#[test]
fn grafana_panel_ids_are_unique() {
    let dashboard = grafana();
    let mut seen = HashSet::new();
    for panel in grafana_panels(&dashboard) {
        let what = describe_panel(panel);
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: no numeric id"));
        assert!(seen.insert(id), "{what}: id {id} is used by another panel");
    }
}

#[test]
fn grafana_panels_use_the_prometheus_datasource_variable() {
    let dashboard = grafana();
    let uids = prometheus_uids(&dashboard);
    assert!(
        !uids.is_empty(),
        "{GRAFANA}: no datasource template variable of type prometheus and no prometheus __inputs"
    );
    let panels = grafana_panels(&dashboard);
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let what = describe_panel(panel);
        let datasource = &panel["datasource"];
        assert!(
            is_prometheus(datasource, &uids),
            "{what}: datasource {datasource} is not one of {uids:?}"
        );
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no `targets` array"));
        assert!(!targets.is_empty(), "{what}: no target");
        for target in targets {
            let source = &target["datasource"];
            assert!(
                source.is_null() || is_prometheus(source, &uids),
                "{what}: target {} has datasource {source}, not one of {uids:?}",
                target["refId"]
            );
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{GRAFANA}: no templating.list"));
    let run = variables
        .iter()
        .find(|variable| variable["name"] == "run")
        .unwrap_or_else(|| panic!("{GRAFANA}: no `run` template variable"));
    let query = query_text(&run["query"]);
    assert!(
        query.contains("label_values(iotload_messages_received_total, run)"),
        "{GRAFANA}: template variable `run` queries `{query}`"
    );
    assert!(
        is_prometheus(&run["datasource"], &uids),
        "{GRAFANA}: template variable `run` has datasource {}, not one of {uids:?}",
        run["datasource"]
    );
}

#[test]
fn grafana_metric_names_are_documented() {
    let dashboard = grafana();
    // docs/metrics.md documents the components' live metrics; it may not exist yet.
    let metrics_doc = std::fs::read_to_string(path(METRICS_DOC)).unwrap_or_default();
    let docs = format!("{}\n{metrics_doc}", read(PLOTTER_DOC));
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in grafana_panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((describe_panel(panel), expr.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let name = variable["name"].as_str().unwrap_or("?");
            queries.push((
                format!("{GRAFANA}: template variable `{name}`"),
                query_text(&variable["query"]),
            ));
        }
    }
    let mut checked = 0;
    for (what, expr) in &queries {
        for name in metric_names(expr) {
            assert!(
                contains_word(&docs, &name),
                "{what}: metric `{name}` (in `{expr}`) is in neither {PLOTTER_DOC} nor {METRICS_DOC}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{GRAFANA}: no iotload_ metric in any expr");
}

#[test]
fn metric_names_strip_histogram_suffixes() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(iotload_latency_seconds_bucket{run=~"$run"}[1m]))) / iotload_latency_seconds_count + xiotload_no"#
        ),
        ["iotload_latency_seconds", "iotload_latency_seconds"]
    );
    assert!(contains_word(
        "| `iotload_run_duration_seconds` |",
        "iotload_run_duration_seconds"
    ));
    assert!(!contains_word(
        "`iotload_messages_sent_total`",
        "iotload_messages_sent"
    ));
}
