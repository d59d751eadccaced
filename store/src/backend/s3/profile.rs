//! Credentials and settings from the shared files of the S3 ecosystem
//! (`~/.aws/credentials`, `~/.aws/config`), for the profile `AWS_PROFILE`
//! names (else `default`). The client crate reads only environment
//! variables; these files are what most users keep their keys in.

use std::collections::HashMap;
use std::path::PathBuf;

/// What a profile sets: keys as in the files (`aws_access_key_id`,
/// `region`, `endpoint_url`, ...).
pub(super) fn profile_settings() -> HashMap<String, String> {
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = |variable: &str, default: &str| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(default))
    };
    let mut settings = HashMap::new();
    // In `config` profiles other than `default` are `[profile NAME]`.
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    for (path, section) in [
        (file("AWS_CONFIG_FILE", "config"), config_section),
        (
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            name.clone(),
        ),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            settings.extend(section_of(&text, &section));
        }
    }
    settings
}

/// The `key = value` lines of `[section]` in an INI text.
fn section_of(text: &str, section: &str) -> HashMap<String, String> {
    let mut inside = false;
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if let (true, Some((key, value))) = (inside, line.split_once('=')) {
            out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_by_name() {
        let text = "[default]\naws_access_key_id = A\n\n[profile backup]\nregion=garage\n# note\nendpoint_url = http://127.0.0.1:3900\n[other]\nregion = x\n";
        assert_eq!(section_of(text, "default")["aws_access_key_id"], "A");
        let backup = section_of(text, "profile backup");
        assert_eq!(backup["region"], "garage");
        assert_eq!(backup["endpoint_url"], "http://127.0.0.1:3900");
        assert_eq!(backup.len(), 2);
    }
}
