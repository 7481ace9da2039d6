//! The support assistant: turns a customer's words into an answer, and sometimes into a
//! *proposal* for one catalog task on one of the customer's own appliances.
//!
//! ```text
//!  turns ──▶ guard ──▶ Ollama (structured output) ──┐
//!              │          │ down / slow / malformed │
//!              │          ▼                         ▼
//!              │        rules ───────────────▶ vet: catalog validation, the tenant's own
//!              ▼                                appliances, risk → needs_confirmation
//!           refusal                                 │
//!                                                   ▼
//!                      Answer { reply, proposals (a plan, in order), language, backend_used, degraded }
//! ```
//!
//! - [`guard`]: refusals decided before any backend reads the text (instructions to the
//!   assistant, shell commands, other customers, foreign appliance ids).
//! - [`rules`]: the deterministic backend — a request cut into its steps, each recognised
//!   by the objects and verbs it names, with [`extract`] filling parameters by the catalog's
//!   formats and enums (explicit values first); a missing detail asked for and taken from
//!   the next turn; [`lang`] for German and Spanish requests and answers; [`facts`] and
//!   [`knowledge`] answering questions; the embedded default and the fallback.
//! - [`ollama`]: the LLM backend through ollama-rs; [`prompt`] builds its system prompt and
//!   the JSON schema of its answer from the catalog, the appliances and the knowledge base.
//! - [`vet`]: the one path from "someone suggested action X with params P on appliance A"
//!   to a [`Proposal`]. Nothing either backend says is trusted: every proposal is validated
//!   by `hearth_protocol::catalog` (the same validator as the task API) and must name an
//!   appliance of this tenant.
//! - [`knowledge`]: short articles kept in `control-plane/assistant/knowledge/`, embedded.
//! - [`intents`]: `hearth-control-plane intents`, the evaluation command.
//! - [`status`]: whether the configured model is there and answering (reduced mode), for
//!   `/readyz`, `/metrics` and the operators' fleet summary.
//!
//! The engine never creates a task: the caller (`domain::support`, the chat) shows the
//! proposal and creates the task once the customer confirms (or at once when
//! `needs_confirmation` is false), through the task API's own validation.
//!
//! It is pure logic below the domain: it reads no database and knows no stored row. The
//! caller builds its [`Context`] and [`Turn`]s from what it stored and stores the [`Answer`].

pub mod config;
mod extract;
mod facts;
mod guard;
pub mod intents;
mod knowledge;
mod lang;
mod ollama;
mod prompt;
mod rules;
pub mod status;
mod text;
mod vet;

use hearth_protocol::catalog::{Policy, Risk};
use hearth_protocol::ApplianceId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Who said a turn: the same type as a stored message's role.
pub use crate::model::MessageRole as Role;
pub use config::AssistantConfig;
pub use lang::Lang;
pub use status::{AssistantStatus, Mode};

/// Longest customer (or assistant) turn accepted, in characters.
pub const MAX_TURN_CHARS: usize = 4000;
/// Most turns in one conversation.
pub const MAX_TURNS: usize = 200;

/// What the assistant knows about the tenant it is talking to.
#[derive(Debug, Clone)]
pub struct Context {
    /// The tenant's appliances — the only ones a proposal may name.
    pub appliances: Vec<ApplianceFacts>,
    /// The appliance the conversation is about (e.g. the chat was opened on its page), used
    /// when the customer does not name one.
    pub current_appliance: Option<ApplianceId>,
    /// Local domains etc. for parameter validation.
    pub policy: Policy,
    /// Low-risk proposals wait for confirmation too (high-risk ones always do).
    pub confirm_low_risk: bool,
    /// The appliances' latest tasks, newest first (for "is my box ok?").
    pub recent_tasks: Vec<TaskFacts>,
}

/// One recent task of an appliance.
#[derive(Debug, Clone, Serialize)]
pub struct TaskFacts {
    pub appliance_id: ApplianceId,
    pub action: String,
    pub params: Map<String, Value>,
    /// A task status: `queued` … `succeeded`, `failed`, `timed_out`, `cancelled`.
    pub status: String,
    /// When it finished, else when it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Context {
    /// A context with the configured defaults (`assistant.confirm_low_risk`, the catalog's
    /// local domains).
    pub fn new(appliances: Vec<ApplianceFacts>, config: &AssistantConfig) -> Context {
        Context {
            appliances,
            current_appliance: None,
            policy: Policy::default(),
            confirm_low_risk: config.confirm_low_risk,
            recent_tasks: Vec::new(),
        }
    }

    fn appliance(&self, id: ApplianceId) -> Option<&ApplianceFacts> {
        self.appliances.iter().find(|a| a.id == id)
    }
}

/// One appliance and its latest facts.
#[derive(Debug, Clone, Serialize)]
pub struct ApplianceFacts {
    pub id: ApplianceId,
    pub name: String,
    /// `never_seen`, `online` or `offline`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub agent_version: Option<String>,
    /// Addresses on the home network, when known.
    pub addresses: Vec<String>,
    /// Root filesystem, from the latest heartbeat.
    pub disk: Option<Usage>,
    pub memory: Option<Usage>,
    pub uptime_s: Option<u64>,
}

/// Total and available bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// One turn of the conversation, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

impl Turn {
    pub fn customer(text: impl Into<String>) -> Turn {
        Turn { role: Role::Customer, text: text.into() }
    }
    pub fn assistant(text: impl Into<String>) -> Turn {
        Turn { role: Role::Assistant, text: text.into() }
    }
}

/// Which backend produced an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Rules,
    Ollama,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Rules => "rules",
            Backend::Ollama => "ollama",
        }
    }
}

/// The assistant's answer to the conversation's last turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// For the customer; plain text with a little markdown.
    pub reply: String,
    /// The tasks asked for, in order (a plan of several steps, one, or none), each already
    /// validated; never run without the caller's decision.
    pub proposals: Vec<Proposal>,
    /// The language of the reply (the customer's request's).
    pub language: Lang,
    pub backend_used: Backend,
    /// The LLM was configured but failed (unreachable, too slow, malformed answer), so the
    /// rules backend answered; the reply says so.
    pub degraded: bool,
}

/// A catalog task the assistant suggests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    pub action: String,
    /// As returned by the catalog validator (schema defaults filled in, host names
    /// normalised): what the task API will store.
    pub params: Map<String, Value>,
    pub appliance_id: ApplianceId,
    pub risk: Risk,
    /// High-risk actions always; low-risk ones unless the tenant opted out.
    pub needs_confirmation: bool,
    /// What it does, in a few words of the customer's language.
    pub summary: String,
    /// The customer's language (for the words of its outcome).
    pub language: Lang,
}

/// A conversation the assistant cannot answer, or a configuration it cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error("setting `{setting}` ({env}): {problem}")]
    InvalidSetting { setting: &'static str, env: &'static str, problem: String },
    #[error("the conversation is empty")]
    EmptyConversation,
    #[error("the conversation's last turn must be the customer's")]
    LastTurnNotFromCustomer,
    #[error("turn {index} is {len} characters long; at most {max} are allowed", max = MAX_TURN_CHARS)]
    TurnTooLong { index: usize, len: usize },
    #[error("the conversation has {count} turns; at most {max} are allowed", max = MAX_TURNS)]
    TooManyTurns { count: usize },
}

/// The assistant, built once from its configuration and shared (it is cheap to call
/// concurrently).
#[derive(Debug, Clone)]
pub struct Assistant {
    ollama: Option<ollama::OllamaBackend>,
    /// Whether the LLM is usable (see [`status`]).
    health: std::sync::Arc<status::Health>,
}

/// Said first in every answer the rules backend gives in place of a failed LLM.
pub const REDUCED_MODE_NOTICE: &str =
    "(The assistant is in reduced mode right now and understands only common requests.)";

impl Assistant {
    pub fn new(config: &AssistantConfig) -> Result<Assistant, AssistantError> {
        config.validate()?;
        let ollama = match &config.ollama_url {
            Some(url) => Some(ollama::OllamaBackend::new(url, &config.model, config.timeout())?),
            None => None,
        };
        Ok(Assistant { ollama, health: Default::default() })
    }

    /// The rules backend only (no LLM).
    pub fn rules_only() -> Assistant {
        Assistant { ollama: None, health: Default::default() }
    }

    /// The LLM's state for operators: `rules_only`, `llm` or `reduced` (see [`status`]).
    pub fn status(&self) -> AssistantStatus {
        match &self.ollama {
            None => AssistantStatus {
                mode: Mode::RulesOnly,
                model: None,
                model_loaded: None,
                reason: None,
                checked_at: None,
            },
            Some(llm) => self.health.status(llm.model()),
        }
    }

    /// Asks Ollama whether the configured model is there (`GET /api/tags`, bounded by the
    /// assistant's timeout) and records the answer for [`Assistant::status`]. Nothing to do
    /// without an LLM.
    pub async fn check_model(&self) -> AssistantStatus {
        if let Some(llm) = &self.ollama {
            let result = llm.model_listed().await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, model = llm.model(), "assistant: cannot ask Ollama for its models");
            } else if result == Ok(false) {
                tracing::warn!(model = llm.model(), "assistant: the model is not on the Ollama server; reduced mode");
            }
            self.health.checked(llm.model(), result);
        }
        self.status()
    }

    /// Answers the conversation's last turn (the customer's).
    pub async fn respond(&self, ctx: &Context, turns: &[Turn]) -> Result<Answer, AssistantError> {
        let text = check_turns(turns)?;
        // Refusals that need no model: instructions to the assistant, shell commands,
        // other customers. The model never sees these.
        if let Some(reply) = guard::guard(ctx, text) {
            return Ok(Answer {
                reply,
                proposals: Vec::new(),
                language: Lang::En,
                backend_used: Backend::Rules,
                degraded: false,
            });
        }
        let Some(llm) = &self.ollama else {
            return Ok(rules_answer(ctx, turns, false));
        };
        // Earlier customer turns the guard refuses are not history the model should read.
        let history: Vec<Turn> = turns
            .iter()
            .filter(|t| t.role != Role::Customer || guard::guard(ctx, &t.text).is_none())
            .cloned()
            .collect();
        match llm.ask(ctx, &history).await {
            Ok(said) => {
                self.health.answered();
                Ok(model_answer(ctx, said))
            }
            Err(failure) => {
                tracing::warn!(reason = %failure, "assistant: the LLM failed, the rules backend answers");
                self.health.fell_back(failure.to_string());
                Ok(rules_answer(ctx, turns, true))
            }
        }
    }
}

/// What a finished task of a proposal did, in words a household understands ("Emma can now
/// sign in"), or that it did not work, in `lang`.
pub fn outcome(action: &str, params: &Map<String, Value>, succeeded: bool, lang: Lang) -> String {
    vet::outcome(action, params, succeeded, lang)
}

fn check_turns(turns: &[Turn]) -> Result<&str, AssistantError> {
    if turns.len() > MAX_TURNS {
        return Err(AssistantError::TooManyTurns { count: turns.len() });
    }
    for (index, t) in turns.iter().enumerate() {
        let len = t.text.chars().count();
        if len > MAX_TURN_CHARS {
            return Err(AssistantError::TurnTooLong { index, len });
        }
    }
    match turns.last() {
        None => Err(AssistantError::EmptyConversation),
        Some(t) if t.role != Role::Customer => Err(AssistantError::LastTurnNotFromCustomer),
        Some(t) => Ok(&t.text),
    }
}

fn rules_answer(ctx: &Context, turns: &[Turn], degraded: bool) -> Answer {
    let understood = rules::interpret(ctx, turns);
    let lang = understood.lang;
    let (reply, proposals) = match understood.what {
        rules::Interpretation::Reply(reply) => (reply, Vec::new()),
        rules::Interpretation::Plan { steps, cannot } => plan_answer(ctx, lang, &steps, &cannot),
    };
    let reply = if degraded { format!("{REDUCED_MODE_NOTICE}\n\n{reply}") } else { reply };
    Answer { reply, proposals, language: lang, backend_used: Backend::Rules, degraded }
}

/// Every step vetted on its own. All valid: the plan, presented step by step (with what
/// cannot be done named). One not: no proposal, and the reply says which step and why
/// (or asks for its missing detail, which the next turn fills).
fn plan_answer(ctx: &Context, lang: Lang, steps: &[rules::Step], cannot: &[String]) -> (String, Vec<Proposal>) {
    let total = steps.len();
    let mut proposals = Vec::new();
    let mut summaries = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match vet::vet_in(ctx, lang, s.action, &Value::Object(s.params.clone()), s.appliance.as_deref()) {
            Ok((p, summary)) => {
                proposals.push(p);
                summaries.push(summary);
            }
            Err(reply) if total == 1 => return (with_cannot(reply, cannot, lang), Vec::new()),
            Err(reply) => {
                let head = match lang {
                    Lang::En => format!("Step {} of {total} of your request:", i + 1),
                    Lang::De => format!("Schritt {} von {total} Ihrer Anfrage:", i + 1),
                    Lang::Es => format!("Paso {} de {total} de su petición:", i + 1),
                };
                return (with_cannot(format!("{head} {reply}"), cannot, lang), Vec::new());
            }
        }
    }
    let reply = if total == 1 {
        summaries.remove(0)
    } else {
        let head = match lang {
            Lang::En => format!("Here is the plan, {total} steps in this order:"),
            Lang::De => format!("Hier ist der Plan, {total} Schritte in dieser Reihenfolge:"),
            Lang::Es => format!("Este es el plan, {total} pasos en este orden:"),
        };
        let list: Vec<String> = summaries.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect();
        let tail = lang.pick(
            "You can confirm all steps together or each one on its own.",
            "Sie können alle Schritte zusammen oder jeden einzeln bestätigen.",
            "Puede confirmar todos los pasos juntos o cada uno por separado.",
        );
        format!("{head}\n{}\n\n{tail}", list.join("\n"))
    };
    (with_cannot(reply, cannot, lang), proposals)
}

/// The reply, followed by the parts of the request that are no catalog action.
fn with_cannot(reply: String, cannot: &[String], lang: Lang) -> String {
    if cannot.is_empty() {
        return reply;
    }
    let list = cannot.iter().map(|c| format!("“{c}”")).collect::<Vec<_>>().join(", ");
    let note = match lang {
        Lang::En => format!("I can't do {list}: that is not something your appliance does, so it is not in the plan."),
        Lang::De => format!("{list} kann ich nicht tun: Das gehört nicht zu den Aufgaben Ihres Geräts."),
        Lang::Es => format!("No puedo hacer {list}: no es algo que haga su equipo, así que no está en el plan."),
    };
    format!("{reply}\n\n{note}")
}

fn model_answer(ctx: &Context, said: ollama::ModelAnswer) -> Answer {
    let (reply, proposal) = match said.proposal {
        None => (said.reply, None),
        Some(p) => match vet::vet(ctx, &p.action, &p.params, p.appliance.as_deref()) {
            // The model's words come first (it may explain), the proposal's summary is ours.
            Ok((proposal, summary)) if said.reply.trim().is_empty() => (summary, Some(proposal)),
            Ok((proposal, summary)) => (format!("{}\n\n{summary}", said.reply.trim()), Some(proposal)),
            // The model's own words are dropped: they may announce what was refused.
            Err(refusal) => {
                tracing::info!(action = %text::shorten(&p.action, 64), "assistant: refused the model's proposal");
                (refusal, None)
            }
        },
    };
    Answer {
        reply,
        proposals: proposal.into_iter().collect(),
        language: Lang::En,
        backend_used: Backend::Ollama,
        degraded: false,
    }
}
