//! The policies' settings: [`ResilienceSettings`] (`[resilience]`), a
//! dependency's [`PolicySettings`] and the [`Overrides`] it applies to the
//! default.

use crate::BreakerSettings;

/// The settings of one dependency's policy (`[resilience.default]`, with
/// `[resilience.<dependency>]` applied).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Timeout of one attempt, ms.
    pub attempt_timeout_ms: u64,
    /// Time for the whole call, retries included, ms.
    pub deadline_ms: u64,
    /// Retries after the first attempt (idempotent calls only).
    pub max_retries: u32,
    /// First backoff ceiling, ms (doubles per retry; full jitter).
    pub retry_base_ms: u64,
    /// Largest backoff ceiling, ms.
    pub retry_max_ms: u64,
    /// Retries may add at most this percentage of the calls made.
    pub retry_budget_percent: f64,
    /// ... plus this many retries per second, whatever the volume.
    pub retry_budget_min_per_sec: f64,
    /// Calls in flight at once; more fail fast.
    pub max_concurrent: usize,
    /// The circuit breaker.
    pub breaker: BreakerSettings,
}

/// An optional number given as a number or as text. An environment
/// variable's value that does not read back as a number stays text
/// (`host::settings`), and these fields sit under a flattened map, whose
/// buffered values serde takes as text only as text.
fn number_or_text<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Given<T> {
        Number(T),
        Text(String),
    }
    match <Option<Given<T>> as serde::Deserialize>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Given::Number(n)) => Ok(Some(n)),
        Some(Given::Text(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}"))),
    }
}

/// Partial settings of one dependency: what differs from `[resilience.default]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Replaces the default's [`PolicySettings::attempt_timeout_ms`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub attempt_timeout_ms: Option<u64>,
    /// Replaces the default's [`PolicySettings::deadline_ms`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub deadline_ms: Option<u64>,
    /// Replaces the default's [`PolicySettings::max_retries`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub max_retries: Option<u32>,
    /// Replaces the default's [`PolicySettings::retry_base_ms`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub retry_base_ms: Option<u64>,
    /// Replaces the default's [`PolicySettings::retry_max_ms`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub retry_max_ms: Option<u64>,
    /// Replaces the default's [`PolicySettings::retry_budget_percent`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub retry_budget_percent: Option<f64>,
    /// Replaces the default's [`PolicySettings::retry_budget_min_per_sec`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub retry_budget_min_per_sec: Option<f64>,
    /// Replaces the default's [`PolicySettings::max_concurrent`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub max_concurrent: Option<usize>,
    /// Breaker fields that differ.
    #[serde(default)]
    pub breaker: BreakerOverrides,
}

/// Partial breaker settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverrides {
    /// Replaces the default's [`BreakerSettings::window_size`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub window_size: Option<usize>,
    /// Replaces the default's [`BreakerSettings::minimum_calls`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub minimum_calls: Option<usize>,
    /// Replaces the default's [`BreakerSettings::failure_rate_threshold`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub failure_rate_threshold: Option<f64>,
    /// Replaces the default's [`BreakerSettings::slow_call_rate_threshold`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub slow_call_rate_threshold: Option<f64>,
    /// Replaces the default's [`BreakerSettings::slow_call_ms`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub slow_call_ms: Option<u64>,
    /// Replaces the default's [`BreakerSettings::wait_open_ms`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub wait_open_ms: Option<u64>,
    /// Replaces the default's [`BreakerSettings::half_open_calls`].
    #[serde(default, deserialize_with = "number_or_text")]
    pub half_open_calls: Option<usize>,
}

impl PolicySettings {
    /// Checks what the types alone cannot; the error names the field.
    ///
    /// # Errors
    /// `(field, message)` for the first setting that cannot work.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let b = &self.breaker;
        let percent = |v: f64| v > 0.0 && v <= 100.0;
        let checks: [(bool, &'static str, &str); 12] = [
            (
                self.attempt_timeout_ms >= 1,
                "attempt_timeout_ms",
                "must be at least 1",
            ),
            (self.deadline_ms >= 1, "deadline_ms", "must be at least 1"),
            (
                self.retry_base_ms <= self.retry_max_ms,
                "retry_base_ms",
                "must not exceed retry_max_ms",
            ),
            (
                (0.0..=100.0).contains(&self.retry_budget_percent),
                "retry_budget_percent",
                "must be between 0 and 100",
            ),
            (
                self.retry_budget_min_per_sec >= 0.0 && self.retry_budget_min_per_sec.is_finite(),
                "retry_budget_min_per_sec",
                "must not be negative",
            ),
            (
                self.max_concurrent >= 1,
                "max_concurrent",
                "must be at least 1",
            ),
            (
                b.window_size >= 1,
                "breaker.window_size",
                "must be at least 1",
            ),
            (
                (1..=b.window_size).contains(&b.minimum_calls),
                "breaker.minimum_calls",
                "must be between 1 and breaker.window_size",
            ),
            (
                percent(b.failure_rate_threshold) && percent(b.slow_call_rate_threshold),
                "breaker.failure_rate_threshold",
                "and breaker.slow_call_rate_threshold must be above 0 and at most 100",
            ),
            (
                b.wait_open_ms >= 1,
                "breaker.wait_open_ms",
                "must be at least 1",
            ),
            // 0 would count every call slow: the breaker would open and
            // never close.
            (
                b.slow_call_ms >= 1,
                "breaker.slow_call_ms",
                "must be at least 1",
            ),
            (
                b.half_open_calls >= 1,
                "breaker.half_open_calls",
                "must be at least 1",
            ),
        ];
        match checks.into_iter().find(|(ok, ..)| !ok) {
            Some((_, field, message)) => Err((field, message.to_owned())),
            None => Ok(()),
        }
    }

    /// These settings with `overrides` applied.
    pub fn with(&self, o: &Overrides) -> PolicySettings {
        let b = &self.breaker;
        let ob = &o.breaker;
        PolicySettings {
            attempt_timeout_ms: o.attempt_timeout_ms.unwrap_or(self.attempt_timeout_ms),
            deadline_ms: o.deadline_ms.unwrap_or(self.deadline_ms),
            max_retries: o.max_retries.unwrap_or(self.max_retries),
            retry_base_ms: o.retry_base_ms.unwrap_or(self.retry_base_ms),
            retry_max_ms: o.retry_max_ms.unwrap_or(self.retry_max_ms),
            retry_budget_percent: o.retry_budget_percent.unwrap_or(self.retry_budget_percent),
            retry_budget_min_per_sec: o
                .retry_budget_min_per_sec
                .unwrap_or(self.retry_budget_min_per_sec),
            max_concurrent: o.max_concurrent.unwrap_or(self.max_concurrent),
            breaker: BreakerSettings {
                window_size: ob.window_size.unwrap_or(b.window_size),
                minimum_calls: ob.minimum_calls.unwrap_or(b.minimum_calls),
                failure_rate_threshold: ob
                    .failure_rate_threshold
                    .unwrap_or(b.failure_rate_threshold),
                slow_call_rate_threshold: ob
                    .slow_call_rate_threshold
                    .unwrap_or(b.slow_call_rate_threshold),
                slow_call_ms: ob.slow_call_ms.unwrap_or(b.slow_call_ms),
                wait_open_ms: ob.wait_open_ms.unwrap_or(b.wait_open_ms),
                half_open_calls: ob.half_open_calls.unwrap_or(b.half_open_calls),
            },
        }
    }
}

/// `[resilience]`: the default policy and each dependency's differences.
/// (No `deny_unknown_fields`: serde cannot combine it with `flatten`; the
/// app checks the dependency names instead.)
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ResilienceSettings {
    /// Every dependency's policy unless it says otherwise.
    pub default: PolicySettings,
    /// `[resilience.<dependency>]`: differences per dependency (`catalog`,
    /// `user`, `inventory`, `notification`, `smtp`, `webhooks`).
    #[serde(flatten)]
    pub dependencies: std::collections::HashMap<String, Overrides>,
}

impl ResilienceSettings {
    /// The settings of `dependency`.
    pub fn for_dependency(&self, dependency: &str) -> PolicySettings {
        match self.dependencies.get(dependency) {
            Some(o) => self.default.with(o),
            None => self.default.clone(),
        }
    }
}
