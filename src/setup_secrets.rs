//! Setup secrets (SPEC section 15): values an admin defines on the dashboard, stored
//! sealed in the `setup_secrets` hash (name → [`SecretBox`] text, bound to the name), and
//! handed to a repository's `setup` commands as environment variables when its
//! `.repobox.yml` names them in `setup_env`. Never to the agent, and masked in the job
//! log like every other secret.
//!
//! Names are environment variable names of our choosing: upper case, digits and `_`,
//! not starting with a digit, and none the sandbox sets itself (`PATH`, `HOME`, the
//! proxy variables…), so a secret can neither hide the proxy nor take over `PATH`.

use crate::crypto::SecretBox;
use crate::secret::Secret;
use crate::store::Store;

/// Longest name, and largest value, an admin may store.
pub const MAX_NAME: usize = 64;
pub const MAX_VALUE: usize = 16 * 1024;

/// Names the sandbox sets (or a program's loader reads) and a secret may not replace.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
];

/// Why a name cannot be a setup secret, for the admin (dashboard) or the job (`.repobox.yml`).
pub fn check_name(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(format!(
            "`{}` is not a setup secret name: upper-case letters, digits and `_`, at most {MAX_NAME} characters, not starting with a digit",
            name.chars().take(MAX_NAME).collect::<String>()
        ));
    }
    if RESERVED.contains(&name) || name.starts_with("REPOBOX_") {
        return Err(format!(
            "`{name}` is set by the sandbox itself and cannot be a setup secret"
        ));
    }
    Ok(())
}

/// The associated data a secret is sealed with: a sealed value copied to another name
/// does not open.
pub fn context(name: &str) -> String {
    format!("setup_secret:{name}")
}

/// The secrets `names` (from `.repobox.yml` `setup_env`), opened; the error is the
/// job's failure message and never holds a value.
pub async fn resolve(
    store: &dyn Store,
    secret_box: Option<&SecretBox>,
    names: &[String],
) -> Result<Vec<(String, Secret)>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    for name in names {
        check_name(name).map_err(|e| format!(".repobox.yml setup_env: {e}"))?;
    }
    let secret_box = secret_box
        .ok_or("setup_env needs REPOBOX_SECRET_KEY on the runner to open setup secrets")?;
    let stored = store
        .setup_secrets()
        .await
        .map_err(|e| format!("cannot read the setup secrets: {e}"))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let sealed = stored.get(name).ok_or_else(|| {
            format!("setup_env names `{name}`, which no admin has defined (dashboard: Admin → Setup secrets)")
        })?;
        let value = secret_box.open(sealed, &context(name)).map_err(|e| {
            format!(
                "the setup secret `{name}` cannot be opened ({e}): was REPOBOX_SECRET_KEY changed?"
            )
        })?;
        out.push((name.clone(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_variable_names_the_sandbox_does_not_own() {
        for good in ["NPM_TOKEN", "A", "PIP_INDEX_URL_2", "_X"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "npm_token",
            "1X",
            "A-B",
            "A B",
            "PATH",
            "HOME",
            "HTTPS_PROXY",
            "LD_PRELOAD",
            "REPOBOX_PROMPT",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"A".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn a_sealed_value_is_bound_to_its_name() {
        let b = SecretBox::new(&[7; 32]);
        let sealed = b.seal("s3cret", &context("NPM_TOKEN"));
        assert_eq!(
            b.open(&sealed, &context("NPM_TOKEN")).unwrap().expose(),
            "s3cret"
        );
        assert!(b.open(&sealed, &context("OTHER")).is_err());
    }
}
