//! What a reload (SIGHUP) does with each key: every key of [`Settings`] is either applied to
//! the running proxy ([`LIVE`]) or named as needing a restart ([`RESTART`]). A test walks every
//! key of the settings, so a new key cannot be added without deciding which it is.

use toml::Value;

use super::Settings;

/// Keys a reload applies to the calls that follow.
pub const LIVE: &[&str] = &[
    // Judged against the reloaded file like every other rule of `check`.
    "listen.allow_anonymous",
    "upstream.username",
    "upstream.api_key",
    "upstream.api_key_file",
    "upstream.client_id",
    "upstream.max_concurrency",
    "budget.limit",
    "budget.window",
    "budget.reserve_writes",
    "budget.max_wait",
    "budget.max_queue",
    "cache.ttl",
    "cache.stale",
    "cache.rules",
    "cache.couplings",
    "clients",
    "log.level",
    // Read again on every reload (on only when the listener started with TLS).
    "listen.tls_cert",
    "listen.tls_key",
];

/// Keys that take effect only after a restart.
pub const RESTART: &[&str] = &[
    "listen.addr",
    "listen.max_body",
    "listen.header_timeout",
    "listen.body_timeout",
    "listen.body_memory",
    "listen.shutdown_grace",
    "listen.max_connections",
    "upstream.url",
    "upstream.auth",
    "upstream.ca_file",
    "upstream.connect_timeout",
    "upstream.timeout",
    "budget.dialect",
    "budget.state_file",
    "cache.enabled",
    "cache.max_size",
    "log.format",
    "log.summary_every",
    "admin.addr",
    "webhooks.secret_file",
    "webhooks.header",
    "webhooks.max_age",
    "webhooks.addr",
    "cluster.redis_url",
    "cluster.redis_password_file",
    "cluster.redis_password",
    "cluster.name",
    "cluster.instance",
    "cluster.expected_instances",
    "cluster.shared_cache",
];

/// The dotted keys whose values differ between two settings (arrays compare whole; the key
/// compares by value, though it prints redacted).
pub fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    let mut changed = Vec::new();
    let (a, b) = (as_value(old), as_value(new));
    let mut keys = leaves(&a, "");
    for key in leaves(&b, "") {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        if lookup(&a, &key) != lookup(&b, &key) {
            changed.push(key);
        }
    }
    // Secrets print redacted: compare them by value.
    for (key, differs) in [
        (
            "upstream.api_key",
            old.upstream.api_key != new.upstream.api_key,
        ),
        (
            "webhooks.header",
            old.webhooks.header != new.webhooks.header,
        ),
    ] {
        if differs && !changed.iter().any(|k| k == key) {
            changed.push(key.into());
        }
    }
    changed
}

/// The changed keys a reload applies (`old` is what runs now).
pub fn applied(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let changed = changed_keys(old, new);
    LIVE.iter()
        .copied()
        .filter(|key| changed.iter().any(|c| c == key))
        .collect()
}

/// The changed keys that only a restart applies (`old`: the settings the process started
/// with, which those keys still hold).
pub fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let changed = changed_keys(old, new);
    RESTART
        .iter()
        .copied()
        .filter(|key| changed.iter().any(|c| c == key))
        .collect()
}

fn as_value(settings: &Settings) -> Value {
    Value::try_from(settings).unwrap_or_else(|_| Value::Table(Default::default()))
}

/// Every key of a table, dotted; arrays and scalars are leaves.
fn leaves(value: &Value, prefix: &str) -> Vec<String> {
    match value {
        Value::Table(table) => table
            .iter()
            .flat_map(|(k, v)| {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key)
            })
            .collect(),
        _ => vec![prefix.to_string()],
    }
}

fn lookup<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    key.split('.').try_fold(value, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn full() -> Settings {
        let text = r#"
            [upstream]
            url = "https://store-abc123.mybigcommerce.com"
            username = "admin"
            api_key = "k3y"
            ca_file = ""
            [[cache.rules]]
            prefix = "/api/v2/orders"
            ttl = "5s"
            [[cache.couplings]]
            when = "/api/v2/orders"
            drop = ["/api/v2/customers"]
            [[clients]]
            name = "erp"
            token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        "#;
        Settings::from_toml(text, HashMap::new()).unwrap()
    }

    /// Every key of the settings is either applied by a reload or named as needing a restart.
    #[test]
    fn every_key_is_classified_once() {
        let keys = leaves(&as_value(&full()), "");
        assert!(keys.len() > 30, "{keys:?}");
        for key in &keys {
            let live = LIVE.contains(&key.as_str());
            let restart = RESTART.contains(&key.as_str());
            assert!(
                live ^ restart,
                "{key} must be in exactly one of reload::LIVE and reload::RESTART"
            );
        }
        for listed in LIVE.iter().chain(RESTART) {
            assert!(keys.iter().any(|k| k == listed), "{listed} is not a key");
        }
    }

    #[test]
    fn changes_are_named_and_sorted_by_kind() {
        let old = full();
        let mut new = full();
        new.listen.max_body = bytesize::ByteSize::mib(1);
        new.budget.limit = 10;
        new.upstream.api_key = crate::secret::Secret::new("rotated");
        let changed = changed_keys(&old, &new);
        assert!(
            changed.contains(&"listen.max_body".to_string()),
            "{changed:?}"
        );
        assert!(changed.contains(&"budget.limit".to_string()), "{changed:?}");
        assert!(
            changed.contains(&"upstream.api_key".to_string()),
            "{changed:?}"
        );
        assert_eq!(needs_restart(&old, &new), vec!["listen.max_body"]);
        assert!(changed_keys(&old, &full()).is_empty());
    }
}
