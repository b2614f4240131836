//! A human description of the device behind a session, from its `User-Agent`.

/// Longest `User-Agent` kept; longer ones are cut so a client cannot bloat storage.
const MAX_USER_AGENT: usize = 512;

/// `"Firefox 128.0 on Linux"`, or `"Unknown device"`.
pub fn describe(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.map(str::trim).filter(|ua| !ua.is_empty()) else {
        return "Unknown device".to_owned();
    };
    let ua: String = ua.chars().take(MAX_USER_AGENT).collect();
    match woothee::parser::Parser::new().parse(&ua) {
        Some(r) if r.name != "UNKNOWN" => {
            let browser = if r.version.is_empty() || r.version == "UNKNOWN" {
                r.name.to_owned()
            } else {
                format!("{} {}", r.name, r.version)
            };
            if r.os == "UNKNOWN" { browser } else { format!("{browser} on {}", r.os) }
        }
        _ => ua.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn describes_browsers_and_tools() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert!(super::describe(Some(firefox)).starts_with("Firefox"));
        assert_eq!(super::describe(None), "Unknown device");
        assert!(super::describe(Some("curl/8.5.0")).contains("curl"));
    }
}
