//! Configuration read once at cold start. A missing or malformed variable stops the function
//! with an error that names it, before the first request is taken.

/// Where variables come from: the process environment in a function, a map in tests.
pub trait EnvSource {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A variable that must be set and non-empty.
pub fn required(env: &impl EnvSource, name: &'static str) -> Result<String, ConfigError> {
    match env.get(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ConfigError::Missing(name)),
    }
}

/// A variable parsed with `FromStr`, or `default` when unset.
pub fn parsed_or<T>(env: &impl EnvSource, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match env.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: format!("`{v}`: {e}"),
        }),
    }
}

/// `true` or `false`, nothing else: a typo in a mode switch must not pass silently.
pub fn required_bool(env: &impl EnvSource, name: &'static str) -> Result<bool, ConfigError> {
    match required(env, name)?.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ConfigError::Invalid {
            name,
            reason: format!("expected `true` or `false`, got `{other}`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_variable() {
        let env = [("A", "x"), ("EMPTY", " "), ("FLAG", "yes"), ("N", "12a")];
        assert_eq!(required(&env, "A").unwrap(), "x");
        assert_eq!(required(&env, "B"), Err(ConfigError::Missing("B")));
        assert_eq!(required(&env, "EMPTY"), Err(ConfigError::Missing("EMPTY")));
        let err = required_bool(&env, "FLAG").unwrap_err();
        assert!(err.to_string().contains("FLAG"), "{err}");
        let err = parsed_or::<u32>(&env, "N", 5).unwrap_err();
        assert!(
            err.to_string().contains('N') && err.to_string().contains("12a"),
            "{err}"
        );
        assert_eq!(parsed_or::<u32>(&env, "UNSET", 5).unwrap(), 5);
    }
}
