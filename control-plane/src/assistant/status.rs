//! What operators see of the assistant's LLM: whether the configured model is on the
//! Ollama server (checked at start and every [`CHECK_EVERY`] with `GET /api/tags`), whether
//! the last answer came from it, and so whether the assistant is in **reduced mode** (an
//! LLM is configured but the rules answer instead). Shown by `/readyz` (never failing it:
//! the assistant is optional), by `/metrics` (`hearth_assistant_reduced_mode`,
//! `hearth_assistant_model_loaded`) and by the operators' fleet summary.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// How often the control plane asks Ollama whether the model is there.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The assistant's mode, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No LLM is configured (`assistant.ollama_url` unset): the rules answer, by choice.
    RulesOnly,
    /// The LLM answers.
    Llm,
    /// An LLM is configured, but the model is not on the server, the server cannot be
    /// reached, or the last answer fell back to the rules.
    Reduced,
}

/// The assistant's LLM at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AssistantStatus {
    pub mode: Mode,
    /// The configured model (`assistant.model`); null without an LLM.
    pub model: Option<String>,
    /// The model is on the Ollama server (listed by `GET /api/tags`, or it just answered);
    /// null without an LLM, or before the first check.
    pub model_loaded: Option<bool>,
    /// Why the mode is `reduced`.
    pub reason: Option<String>,
    /// When the model was last checked (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Default)]
struct State {
    model_loaded: Option<bool>,
    /// Why the model is not usable, from the last check.
    check_problem: Option<String>,
    checked_at: Option<OffsetDateTime>,
    /// Why the last answer fell back to the rules (cleared by an answer from the model).
    answer_problem: Option<String>,
}

/// Shared by the assistant's answers and the periodic check.
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: Mutex<State>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic while holding this lock leaves plain data: keep using it.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// The model answered (so it is there).
    pub fn answered(&self) {
        self.with(|s| {
            s.answer_problem = None;
            s.model_loaded = Some(true);
            s.check_problem = None;
        });
    }

    /// The model gave no usable answer; the rules answered.
    pub fn fell_back(&self, why: String) {
        self.with(|s| s.answer_problem = Some(why));
    }

    /// The result of a check: `Ok(true)` the model is listed, `Ok(false)` it is not,
    /// `Err` the server could not be asked.
    pub fn checked(&self, model: &str, result: Result<bool, String>) {
        self.with(|s| {
            s.checked_at = Some(OffsetDateTime::now_utc());
            match result {
                Ok(true) => {
                    s.model_loaded = Some(true);
                    s.check_problem = None;
                }
                Ok(false) => {
                    s.model_loaded = Some(false);
                    s.check_problem =
                        Some(format!("the model {model} is not on the Ollama server (pull it: ollama pull {model})"));
                }
                Err(e) => {
                    s.model_loaded = Some(false);
                    s.check_problem = Some(e);
                }
            }
        })
    }

    pub fn status(&self, model: &str) -> AssistantStatus {
        self.with(|s| {
            let reason = s.check_problem.clone().or_else(|| s.answer_problem.clone());
            AssistantStatus {
                mode: if reason.is_some() { Mode::Reduced } else { Mode::Llm },
                model: Some(model.to_string()),
                model_loaded: s.model_loaded,
                reason,
                checked_at: s.checked_at,
            }
        })
    }
}

/// Whether Ollama's list of local models holds `model` (`llama3.2` is `llama3.2:latest`).
pub(crate) fn listed(names: &[String], model: &str) -> bool {
    names.iter().any(|n| n == model || (!model.contains(':') && *n == format!("{model}:latest")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduced_while_the_model_is_missing_or_the_last_answer_fell_back() {
        let h = Health::default();
        let s = h.status("m:1");
        assert_eq!((s.mode, s.model_loaded, s.reason), (Mode::Llm, None, None));

        h.checked("m:1", Ok(false));
        let s = h.status("m:1");
        assert_eq!((s.mode, s.model_loaded), (Mode::Reduced, Some(false)));
        assert!(s.reason.unwrap().contains("ollama pull m:1"));
        assert!(s.checked_at.is_some());

        h.checked("m:1", Ok(true));
        assert_eq!(h.status("m:1").mode, Mode::Llm);
        h.fell_back("no answer within 15s".into());
        let s = h.status("m:1");
        assert_eq!(
            (s.mode, s.model_loaded, s.reason.as_deref()),
            (Mode::Reduced, Some(true), Some("no answer within 15s"))
        );
        h.answered();
        assert_eq!(h.status("m:1").mode, Mode::Llm);

        h.checked("m:1", Err("cannot reach Ollama: connection refused".into()));
        let s = h.status("m:1");
        assert_eq!((s.mode, s.model_loaded), (Mode::Reduced, Some(false)));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["mode"], "reduced");
        assert_eq!(json["model"], "m:1");
    }

    #[test]
    fn a_model_without_a_tag_is_its_latest() {
        let names = vec!["llama3.2:latest".to_string(), "smollm2:135m".to_string()];
        assert!(listed(&names, "llama3.2") && listed(&names, "llama3.2:latest") && listed(&names, "smollm2:135m"));
        assert!(!listed(&names, "llama3.2:3b") && !listed(&names, "smollm2"));
    }
}
