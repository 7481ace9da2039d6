//! The LLM backend: one `POST /api/chat` through ollama-rs with the system prompt, the
//! conversation as `user`/`assistant` messages and the answer's JSON schema as `format`,
//! bounded by a timeout. Every way it can fail is an [`OllamaFailure`], on which the
//! caller answers with the rules backend instead.

use std::sync::Arc;
use std::time::Duration;

use ollama_rs::error::OllamaError;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::generation::parameters::FormatType;
use ollama_rs::models::ModelOptions;
use ollama_rs::{IntoUrlSealed, Ollama};
use serde::Deserialize;
use serde_json::Value;

use super::text::shorten;
use super::{prompt, AssistantError, Context, Role, Turn};

/// Turns of history sent to the model (the latest ones).
const HISTORY: usize = 20;
/// Longest reply taken from the model, in characters.
const MAX_REPLY: usize = 2000;

#[derive(Debug, Clone)]
pub(crate) struct OllamaBackend {
    client: Ollama,
    model: String,
    timeout: Duration,
}

/// Why the model gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OllamaFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Ollama: {0}")]
    Unreachable(String),
    #[error("Ollama answered with an error: {0}")]
    Refused(String),
    #[error("the model's answer is not the expected JSON: {0}")]
    Malformed(String),
}

/// What the model said, before anything is trusted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ModelAnswer {
    pub reply: String,
    #[serde(default)]
    pub proposal: Option<ModelProposal>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ModelProposal {
    pub action: String,
    /// Any JSON: the validator decides.
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub appliance: Option<String>,
}

impl OllamaBackend {
    pub fn new(url: &str, model: &str, timeout: Duration) -> Result<Self, AssistantError> {
        let invalid = |problem: String| AssistantError::InvalidSetting {
            setting: "assistant.ollama_url",
            env: "HEARTH_ASSISTANT__OLLAMA_URL",
            problem,
        };
        // Not `Ollama::try_new`: it builds a default reqwest client, which panics without a
        // default crypto provider.
        let url = url.into_url().map_err(|e| invalid(format!("is not a valid URL: {e}")))?;
        // Our own HTTP client: reqwest is built with rustls but without a default crypto
        // provider (see the workspace's TLS profile), and Ollama is plain HTTP, so the TLS
        // configuration is the ring provider with no trusted roots.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup: {e}")))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| invalid(format!("cannot build its HTTP client: {e}")))?;
        let client = Ollama::builder().url(url).reqwest_client(http).build();
        Ok(OllamaBackend { client, model: model.to_string(), timeout })
    }

    pub async fn ask(&self, ctx: &Context, turns: &[Turn]) -> Result<ModelAnswer, OllamaFailure> {
        let format: FormatType = serde_json::from_value(prompt::answer_schema(ctx))
            .map_err(|e| OllamaFailure::Malformed(format!("the answer schema: {e}")))?;
        let mut messages = vec![ChatMessage::system(prompt::system_prompt(ctx))];
        let start = turns.len().saturating_sub(HISTORY);
        messages.extend(turns[start..].iter().map(|t| match t.role {
            Role::Customer => ChatMessage::user(t.text.clone()),
            Role::Assistant => ChatMessage::assistant(t.text.clone()),
        }));
        let request = ChatMessageRequest::new(self.model.clone(), messages)
            .format(format)
            .options(ModelOptions::default().temperature(0.0));
        let response = match tokio::time::timeout(self.timeout, self.client.send_chat_messages(request)).await {
            Err(_) => return Err(OllamaFailure::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(failure(e)),
            Ok(Ok(r)) => r,
        };
        parse(&response.message.content)
    }

    /// Whether the configured model is on the server (`GET /api/tags`); `Err` says why the
    /// server could not be asked.
    pub async fn model_listed(&self) -> Result<bool, String> {
        match tokio::time::timeout(self.timeout, self.client.list_local_models()).await {
            Err(_) => Err(OllamaFailure::Timeout(self.timeout).to_string()),
            Ok(Err(e)) => Err(failure(e).to_string()),
            Ok(Ok(models)) => {
                let names: Vec<String> = models.into_iter().map(|m| m.name).collect();
                Ok(super::status::listed(&names, &self.model))
            }
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s = format!("{s}: {c}");
        cause = c.source();
    }
    s
}

fn failure(e: OllamaError) -> OllamaFailure {
    match e {
        // Without the URL: it may carry credentials.
        OllamaError::ReqwestError(e) if e.is_decode() => OllamaFailure::Malformed(chain(&e.without_url())),
        OllamaError::ReqwestError(e) => OllamaFailure::Unreachable(chain(&e.without_url())),
        OllamaError::JsonError(e) => OllamaFailure::Malformed(format!("the response envelope: {e}")),
        OllamaError::InternalError(e) => OllamaFailure::Refused(shorten(&e.message, 200)),
        OllamaError::Other(body) => OllamaFailure::Refused(shorten(&body, 200)),
        OllamaError::ToolCallError(e) => OllamaFailure::Malformed(e.to_string()),
    }
}

/// The model's message content as a [`ModelAnswer`].
pub(crate) fn parse(content: &str) -> Result<ModelAnswer, OllamaFailure> {
    let mut answer: ModelAnswer =
        serde_json::from_str(content.trim()).map_err(|e| OllamaFailure::Malformed(e.to_string()))?;
    answer.reply = shorten(answer.reply.trim(), MAX_REPLY);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_the_schema_allows_and_nothing_else() {
        let a = parse(r#"{"reply": "Sure.", "proposal": {"action": "users.add", "params": {"username": "bob"}, "appliance": "x"}}"#)
            .unwrap();
        assert_eq!(a.proposal.unwrap().params, json!({"username": "bob"}));
        assert_eq!(parse(r#" {"reply": "Hi", "proposal": null} "#).unwrap().proposal, None);
        for bad in [
            "",
            "Sure! I'll do it.",
            r#"{"proposal": null}"#,
            r#"{"reply": 5}"#,
            r#"{"reply": "x", "proposal": 3}"#,
            "[1]",
        ] {
            assert!(matches!(parse(bad), Err(OllamaFailure::Malformed(_))), "{bad}");
        }
        let long = format!(r#"{{"reply": "{}", "proposal": null}}"#, "a".repeat(5000));
        assert_eq!(parse(&long).unwrap().reply.chars().count(), MAX_REPLY);
    }
}
