//! iotload's MQTT-style topics as Kafka topic names, and filters as the regular
//! expressions librdkafka subscribes with.
//!
//! Kafka topic names cannot hold `/`, so each `/` becomes `.` on the way out and each
//! `.` becomes `/` on the way in (as with NATS subjects and AMQP routing keys). A filter
//! becomes an anchored pattern (`^...$`, which librdkafka treats as a regular
//! expression): a `+` level matches one level (`[^.]*`), a trailing `#` matches the
//! parent and everything below it (`(\..*)?`), and every other character is escaped.

/// The longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// The Kafka topic for an MQTT-style topic (`/` → `.`), or why Kafka would refuse it.
pub fn topic_to_kafka(topic: &str) -> Result<String, String> {
    let name = topic.replace('/', ".");
    check_name(topic, &name)?;
    Ok(name)
}

/// The MQTT-style topic for a Kafka topic (`.` → `/`).
pub fn kafka_to_topic(name: &str) -> String {
    name.replace('.', "/")
}

fn legal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_name(topic: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic `{topic}` is no Kafka topic name"));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic `{topic}` is longer than Kafka's {MAX_TOPIC_LEN} characters"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !legal(*c)) {
        return Err(format!(
            "topic `{topic}` has `{bad}`, which Kafka topic names cannot hold (only letters, \
             digits, `.`, `_`, `-`; `/` becomes `.`)"
        ));
    }
    Ok(())
}

/// The subscription pattern for an MQTT-style filter, or why it cannot be one.
pub fn filter_to_pattern(filter: &str) -> Result<String, String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let mut pattern = String::from("^");
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        match *level {
            "#" if last => {
                if i == 0 {
                    pattern.push_str(".*");
                } else {
                    pattern.push_str("(\\..*)?");
                }
                pattern.push('$');
                return Ok(pattern);
            }
            "#" => return Err(format!("`#` must be the last level of filter `{filter}`")),
            "+" => {
                if i > 0 {
                    pattern.push_str("\\.");
                }
                pattern.push_str("[^.]*");
            }
            literal => {
                if literal.contains(['+', '#']) {
                    return Err(format!(
                        "a wildcard must fill a whole level of filter `{filter}`"
                    ));
                }
                if let Some(bad) = literal.chars().find(|c| !legal(*c)) {
                    return Err(format!(
                        "filter `{filter}` has `{bad}`, which Kafka topic names cannot hold"
                    ));
                }
                if i > 0 {
                    pattern.push_str("\\.");
                }
                // `-` and `_` are plain characters in every regex dialect; only `.`
                // needs escaping.
                pattern.push_str(&literal.replace('.', "\\."));
            }
        }
    }
    pattern.push('$');
    Ok(pattern)
}

/// Whether the Kafka topic `name` matches the MQTT-style `filter` as the pattern from
/// [`filter_to_pattern`] does (a `.` in either separates levels).
pub fn filter_matches(filter: &str, name: &str) -> bool {
    let topic: Vec<&str> = name.split('.').collect();
    let levels: Vec<&str> = filter.split(['/', '.']).collect();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < topic.len() => {}
            literal if topic.get(i) == Some(&literal) => {}
            _ => return false,
        }
    }
    levels.len() == topic.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_kafka_names_and_back() {
        assert_eq!(topic_to_kafka("iot/7/req").unwrap(), "iot.7.req");
        assert_eq!(kafka_to_topic("iot.7.req"), "iot/7/req");
        assert!(topic_to_kafka("iot/7 x/req").unwrap_err().contains("` `"));
        assert!(topic_to_kafka(&"a".repeat(250)).is_err());
        assert!(topic_to_kafka("").is_err());
    }

    #[test]
    fn filters_become_anchored_patterns() {
        assert_eq!(filter_to_pattern("iot/7/req").unwrap(), r"^iot\.7\.req$");
        assert_eq!(
            filter_to_pattern("iot/+/req").unwrap(),
            r"^iot\.[^.]*\.req$"
        );
        assert_eq!(filter_to_pattern("iot/#").unwrap(), r"^iot(\..*)?$");
        assert_eq!(filter_to_pattern("#").unwrap(), "^.*$");
        assert_eq!(filter_to_pattern("+/a").unwrap(), r"^[^.]*\.a$");
        assert_eq!(filter_to_pattern("a-b_c/x").unwrap(), r"^a-b_c\.x$");
        assert_eq!(filter_to_pattern("v1.2/x").unwrap(), r"^v1\.2\.x$");
        assert!(filter_to_pattern("a/#/b").is_err());
        for (filter, name, matches) in [
            ("iot/+/req", "iot.7.req", true),
            ("iot/+/req", "iot.7.act", false),
            ("iot/+/req", "iot.7.req.x", false),
            ("iot/#", "iot", true),
            ("iot/#", "iot.7.req", true),
            ("iot/#", "iotx.7", false),
            ("#", "anything.at.all", true),
            ("v1.2/x", "v1.2.x", true),
            ("a/b", "a.b", true),
            ("a/b", "a", false),
        ] {
            assert_eq!(filter_matches(filter, name), matches, "{filter} on {name}");
        }
        assert!(filter_to_pattern("a/b+/c").is_err());
        assert!(filter_to_pattern("a/b c").is_err());
    }
}
