//! The `shop` binary's command line and start-up checks.

use std::process::Command;

fn shop() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    // Nothing from the developer's environment leaks in.
    command
        .env_remove("DATABASE_URL")
        .env_remove("APP_ENV")
        .env(
            "APP_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        );
    command
}

#[test]
fn invalid_config_stops_the_start_with_one_line_naming_the_key() {
    let cases = [
        ("APP__SERVER__PORT", "not-a-port", "server.port"),
        (
            "APP__MODULES__ENABLED",
            "catalog,warehouse",
            "modules.enabled",
        ),
        ("DATABASE_URL", "mysql://nope", "database.url"),
    ];
    for (key, value, named) in cases {
        let output = shop().env(key, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: invalid configuration"),
            "{stderr}"
        );
        assert!(stderr.contains(named), "{stderr}");
    }
    let output = shop()
        .env("APP__MODULES__CATALOG__MODE", "remote")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("modules.catalog.url"), "{stderr}");
}

#[test]
fn production_refuses_to_start_without_a_database_url() {
    let output = shop().env("APP_ENV", "production").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("database.url") && stderr.contains("production"),
        "{stderr}"
    );
}

#[test]
fn openapi_subcommand_prints_the_committed_spec_from_any_directory() {
    let output = shop()
        .env_remove("APP_CONFIG_DIR")
        .current_dir(std::env::temp_dir())
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed, app::openapi::api_doc_json().unwrap());
}
