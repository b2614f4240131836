//! Logging set-up (JSON lines or human-readable, `LOG_FORMAT`) and masking of secrets that
//! must never reach a log line in full.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber once; later calls (tests, embedded services) are no-ops.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init()
    } else {
        registry.with(fmt::layer().compact()).try_init()
    };
    drop(result);
}

/// Shows only the recognisable start of a secret: `pcr_ab…` or `***` when it is short.
pub fn mask(secret: &str) -> String {
    let visible: String = secret.chars().take(6).collect();
    if secret.chars().count() <= 12 { "***".to_owned() } else { format!("{visible}…") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_hides_the_body() {
        let token = "pcr_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let masked = super::mask(token);
        assert_eq!(masked, "pcr_Ab…");
        assert!(!masked.contains("Ij"));
        assert_eq!(super::mask("short"), "***");
    }
}
