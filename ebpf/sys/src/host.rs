//! Host identity.

/// This machine's host name as a Kubernetes-style node name: lower case, characters outside
/// `[a-z0-9.-]` replaced by `-`, leading and trailing `-`/`.` trimmed; `localhost` when the
/// kernel reports none.
pub fn host_name() -> String {
    node_name_from(
        &nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

fn node_name_from(raw: &str) -> String {
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.');
    if name.is_empty() {
        "localhost".into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_node_names() {
        for (raw, want) in [
            ("worker-1\n", "worker-1"),
            ("Worker_1.Example.COM", "worker-1.example.com"),
            ("-.edge.-", "edge"),
            ("", "localhost"),
            ("___", "localhost"),
        ] {
            assert_eq!(node_name_from(raw), want, "raw {raw:?}");
        }
    }

    #[test]
    fn this_host_has_a_valid_node_name() {
        let name = host_name();
        assert!(!name.is_empty());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'),
            "{name:?}"
        );
    }
}
