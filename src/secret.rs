//! Secret values: the fields of a credential, redacted everywhere but on the wire to Vault or the
//! provider.
//!
//! Invariant: no `Debug`, `Display` or log line prints a value held here; only field names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The fields of one credential as kept in a KV v2 secret (`{"token": "..."}`).
///
/// A field Vault holds as a number, a boolean or an object is kept as its JSON text and
/// remembered as not a string: [`SecretFields::is_string`] says so (a token must be a string),
/// and [`SecretFields::to_json`] writes it back as the JSON value it was.
#[derive(Clone, Default)]
pub struct SecretFields(BTreeMap<String, SecretString>, BTreeSet<String>);

impl SecretFields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    pub fn insert(&mut self, key: &str, value: impl Into<String>) {
        self.1.remove(key);
        self.0
            .insert(key.to_string(), SecretString::from(value.into()));
    }

    /// Is `key` present and held as a JSON string (not a number, boolean, object, ...)?
    pub fn is_string(&self, key: &str) -> bool {
        self.0.contains_key(key) && !self.1.contains(key)
    }

    /// Copy every field of `from` that `self` does not set, as it is (strings stay strings,
    /// other JSON values stay what they were), except those in `except`. Returns the names of
    /// the fields copied.
    pub fn keep_missing_from(&mut self, from: &SecretFields, except: &[&str]) -> Vec<String> {
        let mut kept = Vec::new();
        for (k, v) in &from.0 {
            if self.0.contains_key(k) || except.contains(&k.as_str()) {
                continue;
            }
            self.0.insert(k.clone(), v.clone());
            if from.1.contains(k) {
                self.1.insert(k.clone());
            }
            kept.push(k.clone());
        }
        kept
    }

    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key)
    }

    /// The value of `key` exposed, for the one place that must send it somewhere.
    pub fn expose(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.expose_secret())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Same keys and same values.
    pub fn same_as(&self, other: &SecretFields) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().all(|(k, v)| {
                other
                    .0
                    .get(k)
                    .is_some_and(|o| o.expose_secret() == v.expose_secret())
            })
    }

    /// Build from a JSON object; non-string values are kept as their JSON text.
    pub fn from_json(value: &serde_json::Value) -> Option<SecretFields> {
        let map = value.as_object()?;
        let mut out = SecretFields::new();
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => out.insert(k, s.clone()),
                other => {
                    out.insert(k, other.to_string());
                    out.1.insert(k.clone());
                }
            }
        }
        Some(out)
    }

    /// The JSON object written to Vault.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| {
                    let text = v.expose_secret();
                    let value = if self.1.contains(k) {
                        serde_json::from_str(text)
                            .unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
                    } else {
                        serde_json::Value::String(text.to_string())
                    };
                    (k.clone(), value)
                })
                .collect(),
        )
    }
}

impl fmt::Debug for SecretFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for k in self.0.keys() {
            m.entry(k, &"[REDACTED]");
        }
        m.finish()
    }
}

impl Serialize for SecretFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SecretFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        SecretFields::from_json(&value)
            .ok_or_else(|| serde::de::Error::custom("secret fields must be a JSON object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let s = SecretFields::new().with("token", "hunter2-very-secret");
        let shown = format!("{s:?}");
        assert!(shown.contains("token"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn round_trips_through_json() {
        let s = SecretFields::new().with("a", "1").with("b", "two");
        let back: SecretFields = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert!(back.same_as(&s));
        assert!(!back.same_as(&SecretFields::new().with("a", "1")));
    }

    #[test]
    fn fields_that_are_not_strings_are_known_and_written_back_as_they_were() {
        let s =
            SecretFields::from_json(&serde_json::json!({"token": 42, "note": "n", "n": {"a": 1}}))
                .unwrap();
        assert!(!s.is_string("token"));
        assert!(s.is_string("note"));
        assert!(!s.is_string("absent"));
        assert_eq!(
            s.to_json(),
            serde_json::json!({"token": 42, "note": "n", "n": {"a": 1}})
        );
    }

    #[test]
    fn fields_the_supply_does_not_set_are_kept_except_those_named() {
        let current = SecretFields::from_json(
            &serde_json::json!({"token": "old", "note": "keep me", "count": 3, "client_secret": "x"}),
        )
        .unwrap();
        let mut new = SecretFields::new().with("token", "new");
        let kept = new.keep_missing_from(&current, &["client_secret"]);
        assert_eq!(kept, ["count", "note"]);
        assert_eq!(
            new.to_json(),
            serde_json::json!({"token": "new", "note": "keep me", "count": 3})
        );
    }
}
