//! The assistant's settings: `[assistant]` in the control plane's TOML file, or
//! `HEARTH_ASSISTANT__OLLAMA_URL`, `HEARTH_ASSISTANT__MODEL`, `HEARTH_ASSISTANT__TIMEOUT_MS`,
//! `HEARTH_ASSISTANT__CONFIRM_LOW_RISK` in the environment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::AssistantError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantConfig {
    /// Ollama's base URL, e.g. `http://127.0.0.1:11434` (plain HTTP, as Ollama serves it:
    /// keep it on a private network). Unset: the rules backend answers everything.
    pub ollama_url: Option<String>,
    /// The Ollama model (it must be pulled on that server).
    pub model: String,
    /// How long to wait for the model before the rules backend answers instead.
    pub timeout_ms: u64,
    /// Low-risk proposals wait for the customer's confirmation too (high-risk ones always
    /// do). A tenant may opt out through its own `Context`.
    pub confirm_low_risk: bool,
}

impl Default for AssistantConfig {
    fn default() -> Self {
        AssistantConfig { ollama_url: None, model: "llama3.2:3b".into(), timeout_ms: 15_000, confirm_low_risk: true }
    }
}

impl AssistantConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks every setting; the error names the one to fix.
    pub fn validate(&self) -> Result<(), AssistantError> {
        let invalid = |setting, env, problem: String| Err(AssistantError::InvalidSetting { setting, env, problem });
        if let Some(url) = &self.ollama_url {
            if !url.starts_with("http://") {
                return invalid(
                    "assistant.ollama_url",
                    "HEARTH_ASSISTANT__OLLAMA_URL",
                    "must be an http:// URL, e.g. http://127.0.0.1:11434 (Ollama serves plain HTTP: keep it on a \
                     private network)"
                        .into(),
                );
            }
            if let Err(e) = ollama_rs::IntoUrlSealed::into_url(url.as_str()) {
                return invalid(
                    "assistant.ollama_url",
                    "HEARTH_ASSISTANT__OLLAMA_URL",
                    format!("is not a valid URL: {e}"),
                );
            }
        }
        if self.model.trim().is_empty() {
            return invalid("assistant.model", "HEARTH_ASSISTANT__MODEL", "must name a model, e.g. llama3.2:3b".into());
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return invalid(
                "assistant.timeout_ms",
                "HEARTH_ASSISTANT__TIMEOUT_MS",
                "must be between 1 and 600000 milliseconds".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rules_only() {
        let c = AssistantConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.ollama_url, None);
        assert_eq!(c.model, "llama3.2:3b");
        assert!(c.confirm_low_risk);
    }

    #[test]
    fn errors_name_the_setting() {
        let bad = |c: AssistantConfig| c.validate().unwrap_err().to_string();
        let e = bad(AssistantConfig { ollama_url: Some("localhost:11434".into()), ..Default::default() });
        assert!(e.contains("assistant.ollama_url") && e.contains("HEARTH_ASSISTANT__OLLAMA_URL"), "{e}");
        let e = bad(AssistantConfig { ollama_url: Some("https://ollama.example".into()), ..Default::default() });
        assert!(e.contains("assistant.ollama_url") && e.contains("HEARTH_ASSISTANT__OLLAMA_URL"), "{e}");
        let e = bad(AssistantConfig { ollama_url: Some("http://[::1".into()), ..Default::default() });
        assert!(e.contains("not a valid URL"), "{e}");
        let e = bad(AssistantConfig { timeout_ms: 0, ..Default::default() });
        assert!(e.contains("HEARTH_ASSISTANT__TIMEOUT_MS"), "{e}");
        let e = bad(AssistantConfig { model: " ".into(), ..Default::default() });
        assert!(e.contains("assistant.model"), "{e}");
    }

    // figment::Error is large; this is a test.
    #[allow(clippy::result_large_err)]
    #[test]
    fn the_control_planes_configuration_carries_it() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("HEARTH_DATABASE__URL", "postgres://x@127.0.0.1/db");
            let c = crate::config::Config::load(None).expect("defaults");
            assert_eq!(c.assistant, AssistantConfig::default());
            jail.set_env("HEARTH_ASSISTANT__OLLAMA_URL", "http://10.0.0.7:11434");
            jail.set_env("HEARTH_ASSISTANT__CONFIRM_LOW_RISK", "false");
            let c = crate::config::Config::load(None).expect("from the environment");
            assert_eq!(c.assistant.ollama_url.as_deref(), Some("http://10.0.0.7:11434"));
            assert!(!c.assistant.confirm_low_risk);
            jail.set_env("HEARTH_ASSISTANT__TIMEOUT_MS", "0");
            let e = crate::config::Config::load(None).unwrap_err().to_string();
            assert!(e.contains("HEARTH_ASSISTANT__TIMEOUT_MS"), "{e}");
            Ok(())
        });
    }
}
