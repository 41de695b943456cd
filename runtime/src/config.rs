//! Typed configuration read once from prefixed environment variables; a bad
//! value fails fast and names the variable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::{fmt::Display, str::FromStr, time::Duration};

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

/// Environment variables under one prefix (`ORDERS_`, `PAYMENTS_`, `GATEWAY_`).
#[derive(Debug, Clone)]
pub struct Env {
    prefix: String,
    vars: HashMap<String, String>,
    /// Every name the program asked for, with the default it uses when the
    /// variable is unset (`None`: unset means off, or the value is
    /// required), so unknown variables can be spotted and the documented
    /// table checked against the code.
    asked: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Env {
    /// The current process environment.
    pub fn from_process(prefix: &str) -> Self {
        Self::from_pairs(prefix, std::env::vars())
    }

    /// An explicit environment, for tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        prefix: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            prefix: prefix.to_owned(),
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            asked: Arc::default(),
        }
    }

    /// The full variable name for `name`.
    pub fn var_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The raw value of `name`, if set.
    pub fn raw(&self, name: &str) -> Option<&str> {
        let full = self.var_name(name);
        let value = self.vars.get(&full).map(String::as_str);
        if let Ok(mut asked) = self.asked.lock() {
            asked.entry(full).or_insert(None);
        }
        value
    }

    /// Records `default` as what `name` means when unset.
    fn note_default(&self, name: &str, default: String) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(self.var_name(name), Some(default));
        }
    }

    /// Every variable asked for so far (full names), with its default when
    /// it has one.
    pub fn asked(&self) -> BTreeMap<String, Option<String>> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Variables under this prefix that are set but that nothing asked for
    /// (misspelt or obsolete), after configuration has been read.
    pub fn unknown(&self) -> Vec<String> {
        let asked = self.asked.lock().map(|a| a.clone()).unwrap_or_default();
        let mut unknown: Vec<String> = self
            .vars
            .keys()
            .filter(|k| k.starts_with(&self.prefix) && !asked.contains_key(*k))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }

    /// `name` parsed as `T`, or `default` when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + Display,
        T::Err: Display,
    {
        let raw = self.raw(name);
        self.note_default(name, default.to_string());
        match raw {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                var: self.var_name(name),
                value: raw.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// `name` as a string, or `default` when unset.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        let value = self.raw(name).unwrap_or(default).to_owned();
        self.note_default(name, default.to_owned());
        value
    }

    /// `name` as milliseconds, or `default` when unset; zero is refused.
    pub fn millis_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        let ms: u64 = self.parse_or(name, default_ms)?;
        if ms == 0 {
            return Err(self.invalid(name, "0", "must be greater than 0"));
        }
        Ok(Duration::from_millis(ms))
    }

    /// An error for `name`.
    pub fn invalid(&self, name: &str, value: &str, reason: &str) -> ConfigError {
        ConfigError {
            var: self.var_name(name),
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("expected `text` or `json`, got `{other}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_value_names_the_variable() {
        let env = Env::from_pairs("PAYMENTS_", [("PAYMENTS_POOL_SIZE", "many")]);
        let err = env
            .parse_or::<usize>("POOL_SIZE", 16)
            .expect_err("must fail");
        assert_eq!(err.var, "PAYMENTS_POOL_SIZE");
        assert!(err.to_string().contains("PAYMENTS_POOL_SIZE"), "{err}");
    }

    #[test]
    fn unknown_variables_are_reported() {
        let env = Env::from_pairs(
            "X_",
            [
                ("X_DATABASE_URL", "postgres://h/d"),
                ("X_DATABSE_URL", "typo"),
                ("Y_A", "other"),
            ],
        );
        assert_eq!(env.string_or("DATABASE_URL", "default"), "postgres://h/d");
        assert_eq!(env.unknown(), vec!["X_DATABSE_URL".to_owned()]);
        assert_eq!(
            env.asked().get("X_DATABASE_URL"),
            Some(&Some("default".to_owned()))
        );
    }

    #[test]
    fn zero_durations_are_refused() {
        let env = Env::from_pairs("X_", [("X_TIMEOUT_MS", "0")]);
        assert!(env.millis_or("TIMEOUT_MS", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn log_format_parses_case_insensitively() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
