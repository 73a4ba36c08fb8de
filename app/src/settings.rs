//! Configuration ([`host::settings`]), read with the sections of the modules
//! this binary holds.

use std::path::Path;

pub use host::settings::*;

use crate::registry::COMPILED;

/// Loads the settings for `APP_ENV` from the built-in files, `config_dir`
/// and the environment ([`Settings::load`]), with the sections of the
/// modules compiled in.
///
/// # Errors
/// [`ConfigError`] with a one-line message naming the key.
pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
    Settings::load(config_dir, COMPILED)
}

/// [`load`] with the environment given explicitly (tests).
///
/// # Errors
/// [`ConfigError`] with a one-line message naming the key.
pub fn load_from(
    config_dir: &Path,
    environment: &str,
    env_vars: &[(String, String)],
) -> Result<Settings, ConfigError> {
    Settings::load_from(config_dir, environment, env_vars, COMPILED)
}

#[cfg(test)]
mod tests;
