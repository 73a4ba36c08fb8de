//! Account rules: email addresses, the password policy, display names, and
//! what a user or an admin may change on an account.

use kernel::{FieldError, Role};
use user_api::{NewUser, UserStatus};

/// Shortest password, in characters (NIST SP 800-63B allows 8; we ask 12).
pub(crate) const PASSWORD_MIN: usize = 12;
/// Longest password, in characters: long enough for any passphrase.
pub(crate) const PASSWORD_MAX: usize = 256;
/// Longest display name, in characters.
const DISPLAY_NAME_MAX: usize = 100;

/// Commonly used passwords of policy length, one per line (`#` comments).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// The longest email address (RFC 5321: a path of 256 octets, less its brackets).
pub(crate) const MAX_EMAIL_LEN: usize = 254;

/// A normalised email address: lower-case, in the API's form
/// (`kernel::patterns::EMAIL`, at most 254 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    /// Checks an address a client gives and normalises it to lower case.
    /// The rule is the schema's, whole: no surrounding whitespace, plain
    /// ASCII (an internationalised address would need SMTPUTF8 all the
    /// way to the mailbox).
    pub(crate) fn parse(raw: &str) -> Result<Email, String> {
        if raw.len() > MAX_EMAIL_LEN {
            return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
        }
        if !kernel::patterns::is_email(raw) {
            return Err("must be an email address like name@example.com".to_owned());
        }
        Ok(Email(raw.to_ascii_lowercase()))
    }

    /// The form an address is looked up in: what a client types at sign-in
    /// (surrounding spaces, any case) finds the account it registered.
    pub(crate) fn lookup_key(raw: &str) -> String {
        raw.trim().to_lowercase()
    }

    /// An address already stored (checked when it was).
    pub(crate) fn stored(address: String) -> Email {
        Email(address)
    }

    /// The normalised address, as it is stored.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a new password against the policy. Its length is counted
/// without surrounding white space and with each run of white space inside
/// as one character (NIST SP 800-63B allows collapsing them), the same form
/// the list of common passwords is compared in: twelve spaces, or
/// `"qwerty      "`, are not twelve characters of secret. The password
/// itself is kept as given.
pub(crate) fn check_password(password: &str, email: Option<&Email>) -> Result<(), String> {
    if password.chars().count() > PASSWORD_MAX {
        return Err(format!("must be at most {PASSWORD_MAX} characters"));
    }
    let words: Vec<&str> = password.split_whitespace().collect();
    let length =
        words.iter().map(|w| w.chars().count()).sum::<usize>() + words.len().saturating_sub(1);
    if length < PASSWORD_MIN {
        return Err(format!(
            "must be at least {PASSWORD_MIN} characters, not counting surrounding spaces and counting a run of spaces as one"
        ));
    }
    let lowered = words.join(" ").to_lowercase();
    let common = COMMON_PASSWORDS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.trim() == lowered);
    if common {
        return Err("is a commonly used password; choose another".to_owned());
    }
    if let Some(email) = email {
        let local = email.as_str().split('@').next().unwrap_or_default();
        if lowered == email.as_str() || lowered == local {
            return Err("must not be your email address".to_owned());
        }
    }
    Ok(())
}

/// Checks and trims a display name.
pub(crate) fn check_display_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let length = name.chars().count();
    if length == 0 || length > DISPLAY_NAME_MAX || name.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {DISPLAY_NAME_MAX} characters, without control characters"
        ));
    }
    Ok(name.to_owned())
}

/// A registration whose fields passed every rule.
#[derive(Clone)]
pub(crate) struct ValidNewUser {
    pub(crate) email: Email,
    pub(crate) password: String,
    pub(crate) display_name: String,
}

/// Checks a registration, reporting every invalid field.
pub(crate) fn validate_new(new: NewUser) -> Result<ValidNewUser, Vec<FieldError>> {
    let mut errors = Vec::new();
    let email = Email::parse(&new.email)
        .map_err(|m| errors.push(FieldError::new("email", m)))
        .ok();
    if let Err(m) = check_password(&new.password, email.as_ref()) {
        errors.push(FieldError::new("password", m));
    }
    let display_name = check_display_name(&new.display_name)
        .map_err(|m| errors.push(FieldError::new("display_name", m)))
        .ok();
    match (email, display_name) {
        (Some(email), Some(display_name)) if errors.is_empty() => Ok(ValidNewUser {
            email,
            password: new.password,
            display_name,
        }),
        _ => Err(errors),
    }
}

/// A profile change whose fields passed every rule; `None` leaves a field
/// as it is.
pub(crate) struct ValidProfile {
    pub(crate) display_name: Option<String>,
    pub(crate) email: Option<Email>,
}

/// Checks the display name and email a user gives for their own account,
/// reporting every invalid field.
pub(crate) fn validate_profile(
    display_name: Option<&str>,
    email: Option<&str>,
) -> Result<ValidProfile, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut valid = ValidProfile {
        display_name: None,
        email: None,
    };
    if let Some(name) = display_name {
        match check_display_name(name) {
            Ok(name) => valid.display_name = Some(name),
            Err(m) => errors.push(FieldError::new("display_name", m)),
        }
    }
    if let Some(email) = email {
        match Email::parse(email) {
            Ok(email) => valid.email = Some(email),
            Err(m) => errors.push(FieldError::new("email", m)),
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

/// Checks the roles and status an admin sets on an account (`is_self`: their
/// own): at least one role, never `service`, and no admin may remove their
/// own admin role or disable themselves.
pub(crate) fn check_admin_changes(
    roles: Option<&[Role]>,
    status: Option<UserStatus>,
    is_self: bool,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Some(roles) = roles {
        if roles.is_empty() {
            errors.push(FieldError::new("roles", "must hold at least one role"));
        } else if roles.contains(&Role::Service) {
            errors.push(FieldError::new(
                "roles",
                "`service` is the identity of the shop's own modules, not a user's role",
            ));
        } else if is_self && !roles.contains(&Role::Admin) {
            errors.push(FieldError::new(
                "roles",
                "you cannot remove your own admin role",
            ));
        }
    }
    if is_self && status == Some(UserStatus::Disabled) {
        errors.push(FieldError::new("status", "you cannot disable yourself"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("Ada@Example.COM").unwrap().as_str(),
            "ada@example.com"
        );
        assert_eq!(Email::lookup_key("  Ada@Example.COM "), "ada@example.com");
        for bad in [
            "",
            "  ada@example.com ",
            "ädä@example.com",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@-x.com",
            "ada@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy() {
        let email = Email::parse("someone.long@example.com").unwrap();
        assert!(check_password("short", None).is_err());
        assert!(
            check_password("PassWord1234", None).is_err(),
            "common, any case"
        );
        assert!(
            check_password("someone.long", Some(&email)).is_err(),
            "the email's local part"
        );
        assert!(check_password(&"x".repeat(257), None).is_err());
        assert!(check_password("plum kettle orbit 42", Some(&email)).is_ok());
        // Length counts characters, not bytes.
        assert!(check_password("ééééééééééé", None).is_err());
        // Spaces around, or a run of them inside, do not make the length.
        assert!(check_password(&" ".repeat(12), None).is_err());
        assert!(check_password("password123 ", None).is_err());
        assert!(check_password("qwerty      ", None).is_err());
        assert!(check_password("ab          cd", None).is_err());
        assert!(check_password("  plum kettle orbit  ", None).is_ok());
        // A common password with its spaces doubled is still common.
        assert!(check_password(" Correct  horse battery   staple", None).is_err());
    }

    #[test]
    fn every_common_password_meets_the_length_rule() {
        // Otherwise the list would hold dead entries.
        for line in COMMON_PASSWORDS.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.chars().count() >= PASSWORD_MIN, "{line}");
        }
    }

    #[test]
    fn admin_changes_keep_an_admin_and_no_service_role() {
        let fields = |r: Result<(), Vec<FieldError>>| -> Vec<String> {
            r.err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert!(check_admin_changes(Some(&[Role::Customer]), None, false).is_ok());
        assert_eq!(
            fields(check_admin_changes(Some(&[]), None, false)),
            ["roles"]
        );
        assert_eq!(
            fields(check_admin_changes(Some(&[Role::Service]), None, false)),
            ["roles"]
        );
        assert_eq!(
            fields(check_admin_changes(
                Some(&[Role::Customer]),
                Some(UserStatus::Disabled),
                true
            )),
            ["roles", "status"]
        );
        assert!(check_admin_changes(None, Some(UserStatus::Disabled), false).is_ok());
    }
}
