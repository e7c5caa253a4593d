//! Device keys for the sequence tracker: numeric ids as they are, string ids (and, for
//! messages without a device field, topics) numbered densely from the top of the range.

use std::collections::HashMap;

use iotload_core::stamp::DeviceId;

/// Gives every device a numeric key: a numeric id is its own key; a string id, or the
/// topic of a message without one, gets `u32::MAX`, `u32::MAX − 1`, … in order of first
/// arrival (iotload's own numeric ids start at 0, so the two ranges do not meet in
/// practice). One hash lookup per message with a string id; no allocation after a
/// device's first message.
#[derive(Debug, Default)]
pub(crate) struct DeviceKeys {
    names: HashMap<String, u32>,
}

impl DeviceKeys {
    /// The key of a message's device: its id, else its topic.
    pub(crate) fn key(&mut self, device: Option<&DeviceId>, topic: &str) -> u32 {
        match device {
            Some(DeviceId::Number(n)) => *n,
            Some(DeviceId::Name(name)) => self.named(name),
            None => self.named(topic),
        }
    }

    fn named(&mut self, name: &str) -> u32 {
        if let Some(key) = self.names.get(name) {
            return *key;
        }
        let key = u32::MAX - u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.insert(name.to_owned(), key);
        key
    }

    /// The names behind the keys given to string ids and topics.
    pub(crate) fn into_names(self) -> HashMap<u32, String> {
        self.names
            .into_iter()
            .map(|(name, key)| (key, name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_their_own_keys_and_names_count_down_from_the_top() {
        let mut keys = DeviceKeys::default();
        assert_eq!(keys.key(Some(&DeviceId::Number(7)), "t"), 7);
        let a = keys.key(Some(&DeviceId::Name("IMEI-1".into())), "t");
        let b = keys.key(None, "iot/dev-2/action");
        assert_eq!((a, b), (u32::MAX, u32::MAX - 1));
        assert_eq!(keys.key(Some(&DeviceId::Name("IMEI-1".into())), "other"), a);
        let names = keys.into_names();
        assert_eq!(names.get(&b).map(String::as_str), Some("iot/dev-2/action"));
        assert_eq!(names.get(&7), None);
    }
}
