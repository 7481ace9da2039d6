//! `hearth-control-plane intents`: runs the assistant over JSON lines `{"id", "text",
//! "before"?}` from stdin and writes one JSON line per input, `{"id", "action", "params",
//! "plan", "lang", "reply", …}`, for `deploy/eval/intents.sh` to score. It needs no
//! database: every line is a conversation of a tenant with one demo appliance — the
//! earlier customer turns of `before` (each answered by the assistant), then `text`.

use std::io::{BufRead, Write};
use std::time::Instant;

use hearth_protocol::ApplianceId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{ApplianceFacts, Assistant, AssistantConfig, AssistantError, Backend, Context, Turn, Usage};

/// The evaluation command's options.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Every line is answered as a conversation of a tenant that owns exactly one demo \
appliance, named \"demo\" (id 00000000-0000-7000-8000-00000000de40, online, 12 GB of 32 GB free, address \
192.168.1.2), with low-risk confirmation on; no database is used.\n\n\
Input, one JSON object per line: {\"id\": \"d001\", \"text\": \"Add user John\"}, optionally with \"before\": \
[earlier customer turns], each answered by the assistant before \"text\" is (other fields are ignored).\n\
Output, one JSON object per input line, in order: {\"id\", \"action\" and \"params\" (the first proposed task, as the \
catalog validator returns it, or null), \"plan\" (every proposed task in order: [{\"action\", \"params\"}]), \"lang\" \
(en, de or es), \"reply\", \"backend\", \"degraded\", \"needs_confirmation\", \"elapsed_us\" (the last turn only)}. \
A line that cannot be read gets {\"id\", \"error\"} and the command exits with status 1 at the end.")]
pub struct IntentsArgs {
    /// Which backend answers: `rules` (deterministic, no network) or `ollama` (falls back to
    /// the rules when Ollama is down, slow or answers nonsense).
    #[arg(long, value_enum, default_value_t = BackendChoice::Rules)]
    pub backend: BackendChoice,
    /// Ollama's base URL (with --backend ollama).
    #[arg(long, env = "HEARTH_ASSISTANT__OLLAMA_URL", default_value = "http://127.0.0.1:11434")]
    pub ollama_url: String,
    /// The Ollama model (with --backend ollama).
    #[arg(long, env = "HEARTH_ASSISTANT__MODEL", default_value = "llama3.2:3b")]
    pub model: String,
    /// How long to wait for the model per line before the rules answer, in milliseconds.
    #[arg(long, env = "HEARTH_ASSISTANT__TIMEOUT_MS", default_value_t = 15_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Rules,
    Ollama,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum IntentsError {
    #[error(transparent)]
    Setup(#[from] AssistantError),
    #[error("reading stdin or writing stdout: {0}")]
    Io(#[from] std::io::Error),
    #[error("{bad} of {total} input lines could not be answered (see their \"error\" lines)")]
    BadLines { bad: usize, total: usize },
}

#[derive(Debug, Deserialize)]
struct Input {
    id: Value,
    text: String,
    /// Earlier customer turns of the conversation.
    #[serde(default)]
    before: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Step<'a> {
    action: &'a str,
    params: &'a Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    id: &'a Value,
    action: Option<&'a str>,
    params: Option<&'a Map<String, Value>>,
    plan: Vec<Step<'a>>,
    lang: &'static str,
    reply: &'a str,
    backend: Backend,
    degraded: bool,
    needs_confirmation: Option<bool>,
    elapsed_us: u128,
}

/// The demo appliance every line is asked about.
pub fn demo_context(config: &AssistantConfig) -> Context {
    let demo = ApplianceFacts {
        id: ApplianceId::from_uuid(uuid::Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_de40)),
        name: "demo".into(),
        status: "online".into(),
        last_seen: Some(OffsetDateTime::now_utc()),
        agent_version: Some(env!("CARGO_PKG_VERSION").into()),
        addresses: vec!["192.168.1.2".into()],
        disk: Some(Usage { total_bytes: 32_000_000_000, available_bytes: 12_000_000_000 }),
        memory: Some(Usage { total_bytes: 2_000_000_000, available_bytes: 1_200_000_000 }),
        uptime_s: Some(3 * 86_400),
    };
    Context::new(vec![demo], config)
}

pub async fn run(args: IntentsArgs) -> Result<(), IntentsError> {
    let config = AssistantConfig {
        ollama_url: (args.backend == BackendChoice::Ollama).then_some(args.ollama_url),
        model: args.model,
        timeout_ms: args.timeout_ms,
        ..AssistantConfig::default()
    };
    let assistant = Assistant::new(&config)?;
    let ctx = demo_context(&config);
    // Blocking reads are fine here: this command is the only work on the runtime, and
    // nothing is awaited while a line is being read.
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (mut total, mut bad) = (0, 0);
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        total += 1;
        let out = match serde_json::from_str::<Input>(&line) {
            Err(e) => {
                bad += 1;
                let id =
                    serde_json::from_str::<Value>(&line).ok().and_then(|v| v.get("id").cloned()).unwrap_or(Value::Null);
                serde_json::json!({"id": id, "error": format!("line {total}: expected {{\"id\", \"text\"}}: {e}")})
                    .to_string()
            }
            Ok(input) => {
                let mut turns = Vec::new();
                let mut failed = None;
                for earlier in input.before {
                    turns.push(Turn::customer(earlier));
                    match assistant.respond(&ctx, &turns).await {
                        Ok(a) => turns.push(Turn::assistant(a.reply)),
                        Err(e) => failed = Some(e),
                    }
                }
                turns.push(Turn::customer(input.text));
                let started = Instant::now();
                let answer = match failed {
                    Some(e) => Err(e),
                    None => assistant.respond(&ctx, &turns).await,
                };
                match answer {
                    Err(e) => {
                        bad += 1;
                        serde_json::json!({"id": input.id, "error": format!("line {total}: {e}")}).to_string()
                    }
                    Ok(answer) => {
                        let elapsed_us = started.elapsed().as_micros();
                        let p = answer.proposals.first();
                        serde_json::to_string(&Output {
                            id: &input.id,
                            action: p.map(|p| p.action.as_str()),
                            params: p.map(|p| &p.params),
                            plan: answer
                                .proposals
                                .iter()
                                .map(|p| Step { action: p.action.as_str(), params: &p.params })
                                .collect(),
                            lang: answer.language.code(),
                            reply: &answer.reply,
                            backend: answer.backend_used,
                            degraded: answer.degraded,
                            needs_confirmation: p.map(|p| p.needs_confirmation),
                            elapsed_us,
                        })
                        .map_err(std::io::Error::other)?
                    }
                }
            }
        };
        let mut w = stdout.lock();
        writeln!(w, "{out}")?;
        w.flush()?;
    }
    if bad > 0 {
        return Err(IntentsError::BadLines { bad, total });
    }
    Ok(())
}
