//! iotload's MQTT-style topics as Pulsar topic names, and filters as topic patterns.
//!
//! A topic `iot/7/telemetry` becomes the local name `iot.7.telemetry` inside one
//! tenant and namespace: `persistent://public/default/iot.7.telemetry`. A filter without
//! wildcards names its topics exactly; one with `+` or `#` becomes an anchored regular
//! expression over full topic names, which the client matches against the namespace's
//! topic list (a pattern subscription).

use super::super::TransportError;

/// Where iotload's topics live: the topic domain, tenant and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpace {
    /// `persistent://tenant/namespace/`, the prefix of every full topic name.
    prefix: String,
    /// `tenant/namespace`, as the namespace's topic list is asked for.
    namespace: String,
}

impl TopicSpace {
    /// Checks the tenant and namespace names; `persistent` picks the topic domain.
    pub fn new(persistent: bool, tenant: &str, namespace: &str) -> Result<Self, TransportError> {
        for (option, value) in [
            ("--pulsar-tenant", tenant),
            ("--pulsar-namespace", namespace),
        ] {
            if value.is_empty() || value.contains('/') || value.contains(char::is_whitespace) {
                return Err(TransportError::Unsupported(format!(
                    "{option} `{value}` is not a Pulsar name: give one non-empty word without \
                     `/` or spaces (e.g. public and default)"
                )));
            }
        }
        let domain = if persistent {
            "persistent"
        } else {
            "non-persistent"
        };
        Ok(Self {
            prefix: format!("{domain}://{tenant}/{namespace}/"),
            namespace: format!("{tenant}/{namespace}"),
        })
    }

    /// `tenant/namespace`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The full Pulsar topic name of an MQTT-style topic.
    pub fn full_name(&self, topic: &str) -> String {
        format!("{}{}", self.prefix, topic_to_local_name(topic))
    }

    /// The MQTT-style topic of a full Pulsar topic name (a partition is reported as its
    /// topic). A name from another namespace keeps its full form, `.` and all.
    pub fn topic_of(&self, full_name: &str) -> String {
        let name = strip_partition(full_name);
        match name.strip_prefix(&self.prefix) {
            Some(local) => local_name_to_topic(local),
            None => name.to_string(),
        }
    }

    /// The anchored pattern that matches every topic (and partition) one of `filters`
    /// matches, for a pattern subscription.
    pub fn pattern(&self, filters: &[String]) -> Result<String, TransportError> {
        let mut alternatives = Vec::with_capacity(filters.len());
        for filter in filters {
            alternatives.push(filter_pattern(filter)?);
        }
        Ok(format!(
            "^{}(?:{})(?:-partition-[0-9]+)?$",
            regex::escape(&self.prefix),
            alternatives.join("|")
        ))
    }
}

/// The local topic name for an MQTT-style topic: `/` becomes `.`.
pub fn topic_to_local_name(topic: &str) -> String {
    topic.replace('/', ".")
}

/// The MQTT-style topic for a local topic name: `.` becomes `/`.
pub fn local_name_to_topic(name: &str) -> String {
    name.replace('.', "/")
}

/// Whether a filter has an MQTT wildcard (`+` or `#`) and so needs a pattern.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains('+') || filter.contains('#')
}

/// `name` without a `-partition-N` suffix.
fn strip_partition(name: &str) -> &str {
    if let Some((base, n)) = name.rsplit_once("-partition-")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return base;
    }
    name
}

/// The regular expression for one MQTT filter over local names: levels joined by `\.`,
/// `+` as one level (`[^.]*`), a trailing `#` as the parent and any levels below it.
fn filter_pattern(filter: &str) -> Result<String, TransportError> {
    let bad = |why: &str| {
        TransportError::Unsupported(format!("the topic filter `{filter}` is not valid: {why}"))
    };
    if filter.is_empty() {
        return Err(bad("it is empty"));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let mut out = String::new();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        match *level {
            "#" if !last => return Err(bad("`#` must be the last level")),
            "#" if i == 0 => return Ok(".*".into()),
            // `a/#` matches `a` itself and everything below it, as in MQTT.
            "#" => {
                out.push_str("(?:\\..*)?");
                return Ok(out);
            }
            _ if level.contains('#') || (level.contains('+') && *level != "+") => {
                return Err(bad("a wildcard (`+`, `#`) must fill a whole level"));
            }
            _ => {}
        }
        if i > 0 {
            out.push_str("\\.");
        }
        if *level == "+" {
            out.push_str("[^.]*");
        } else {
            out.push_str(&regex::escape(level));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> TopicSpace {
        TopicSpace::new(true, "public", "default").unwrap()
    }

    fn matches(filter: &str, topic: &str) -> bool {
        let s = space();
        let re = regex::Regex::new(&s.pattern(&[filter.to_string()]).unwrap()).unwrap();
        re.is_match(&s.full_name(topic))
    }

    #[test]
    fn topics_map_to_names_in_the_namespace_and_back() {
        let s = space();
        assert_eq!(
            s.full_name("iot/7/telemetry"),
            "persistent://public/default/iot.7.telemetry"
        );
        assert_eq!(
            s.topic_of("persistent://public/default/iot.7.telemetry"),
            "iot/7/telemetry"
        );
        assert_eq!(s.namespace(), "public/default");
        let np = TopicSpace::new(false, "acme", "edge").unwrap();
        assert_eq!(
            np.full_name("a/b"),
            "non-persistent://acme/edge/a.b",
            "non-persistent domain"
        );
    }

    #[test]
    fn partitions_are_reported_as_their_topic() {
        let s = space();
        assert_eq!(
            s.topic_of("persistent://public/default/iot.7.action-partition-3"),
            "iot/7/action"
        );
        // Not a partition suffix: kept.
        assert_eq!(
            s.topic_of("persistent://public/default/a-partition-x"),
            "a-partition-x"
        );
        // Another namespace: the full name, unchanged.
        assert_eq!(
            s.topic_of("persistent://other/ns/a.b"),
            "persistent://other/ns/a.b"
        );
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        assert!(matches("iot/+/telemetry", "iot/7/telemetry"));
        assert!(matches("iot/+/telemetry", "iot//telemetry"));
        assert!(!matches("iot/+/telemetry", "iot/7/8/telemetry"));
        assert!(!matches("iot/+/telemetry", "iot/7/telemetryx"));
        assert!(!matches("iot/+/telemetry", "xiot/7/telemetry"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
    }

    #[test]
    fn hash_matches_the_parent_and_everything_below() {
        assert!(matches("iot/#", "iot"));
        assert!(matches("iot/#", "iot/7"));
        assert!(matches("iot/#", "iot/7/telemetry"));
        assert!(!matches("iot/#", "iotx/7"));
        assert!(matches("#", "anything/at/all"));
    }

    #[test]
    fn pattern_matches_partitions_and_stays_in_the_namespace() {
        let s = space();
        let re = regex::Regex::new(&s.pattern(&["iot/+/action".into()]).unwrap()).unwrap();
        assert!(re.is_match("persistent://public/default/iot.7.action-partition-0"));
        assert!(!re.is_match("persistent://other/default/iot.7.action"));
        assert!(!re.is_match("non-persistent://public/default/iot.7.action"));
    }

    #[test]
    fn literal_levels_are_escaped_and_filters_combine() {
        let s = space();
        let pattern = s
            .pattern(&["a(b)/+".to_string(), "plain/topic".to_string()])
            .unwrap();
        let re = regex::Regex::new(&pattern).unwrap();
        assert!(re.is_match(&s.full_name("a(b)/x")));
        assert!(re.is_match(&s.full_name("plain/topic")));
        assert!(!re.is_match(&s.full_name("ab/x")));
    }

    #[test]
    fn malformed_filters_are_refused_with_the_reason() {
        let s = space();
        for (filter, why) in [
            ("iot/#/x", "last level"),
            ("iot/a+/x", "whole level"),
            ("iot/#a", "whole level"),
            ("", "empty"),
        ] {
            let e = s.pattern(&[filter.to_string()]).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(filter), "{filter}: {e}");
        }
    }

    #[test]
    fn bad_tenant_or_namespace_names_the_option() {
        let e = TopicSpace::new(true, "", "default")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pulsar-tenant"), "{e}");
        let e = TopicSpace::new(true, "public", "a/b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pulsar-namespace"), "{e}");
    }

    #[test]
    fn wildcards_are_detected() {
        assert!(has_wildcard("a/+/b"));
        assert!(has_wildcard("a/#"));
        assert!(!has_wildcard("a/b"));
    }
}
