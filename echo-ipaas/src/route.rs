//! Maps a request topic to its action topic through the first wildcard's capture.

use iotload_core::plan::{PlanError, Template};

/// Request filters, each with its action template.
#[derive(Debug, Clone)]
pub struct Route {
    /// (filter levels, action template), tried in order.
    routes: Vec<(Vec<String>, Template)>,
}

impl Route {
    /// A route from MQTT-style filters (`+` one level, `#` the rest) to a template.
    pub fn new(filters: Vec<String>, to: Template) -> Result<Self, PlanError> {
        Self::by_filter(filters.into_iter().map(|f| (f, to.clone())).collect())
    }

    /// One template per filter (a mixed fleet's groups: each group's topics answered on
    /// its own action topics); the first filter a topic matches decides.
    pub fn by_filter(pairs: Vec<(String, Template)>) -> Result<Self, PlanError> {
        let routes: Vec<(Vec<String>, Template)> = pairs
            .into_iter()
            .map(|(f, to)| (f.split('/').map(str::to_string).collect(), to))
            .collect();
        if routes
            .iter()
            .any(|(f, to)| to.has_device() && !f.iter().any(|l| l == "+" || l == "#"))
        {
            return Err(PlanError::BadValue {
                option: "--to",
                reason: "`{device}` needs a wildcard (+ or #) in every --from filter to copy"
                    .into(),
            });
        }
        Ok(Self { routes })
    }

    /// The action topic templates as written (distinct, comma-separated).
    pub fn template(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for (_, to) in &self.routes {
            if !seen.contains(&to.as_str()) {
                seen.push(to.as_str());
            }
        }
        seen.join(", ")
    }

    /// The action topic for a request topic, or `None` when no filter matches it.
    pub fn action_topic(&self, topic: &str) -> Option<String> {
        self.routes
            .iter()
            .find_map(|(f, to)| capture(f, topic).map(|device| to.render_str(device)))
    }
}

/// The text matched by the first wildcard of `filter`, if `topic` matches it ("" when the
/// filter has no wildcard).
fn capture<'t>(filter: &[String], topic: &'t str) -> Option<&'t str> {
    let mut captured: Option<&'t str> = None;
    let mut rest = topic;
    for (i, level) in filter.iter().enumerate() {
        if level == "#" {
            return Some(captured.unwrap_or(rest));
        }
        let (head, tail) = match rest.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        if level == "+" {
            captured.get_or_insert(head);
        } else if level != head {
            return None;
        }
        match tail {
            Some(t) => rest = t,
            None => {
                return (i + 1 == filter.len()).then_some(captured.unwrap_or(""));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(from: &str, to: &str) -> Route {
        Route::new(vec![from.to_string()], Template::parse(to).unwrap()).unwrap()
    }

    #[test]
    fn action_topic_copies_the_first_wildcard() {
        let r = route("iot/+/telemetry", "iot/{device}/action");
        assert_eq!(
            r.action_topic("iot/7/telemetry").as_deref(),
            Some("iot/7/action")
        );
        assert_eq!(r.action_topic("iot/7/other"), None);
        assert_eq!(r.action_topic("iot/7/telemetry/x"), None);
        assert_eq!(r.action_topic("iot/7"), None);
    }

    #[test]
    fn hash_wildcard_captures_the_rest() {
        let r = route("req/#", "act/{device}");
        assert_eq!(r.action_topic("req/a/b").as_deref(), Some("act/a/b"));
    }

    #[test]
    fn device_placeholder_needs_a_wildcard() {
        let t = Template::parse("x/{device}").unwrap();
        assert!(Route::new(vec!["fixed/topic".into()], t).is_err());
    }
}
