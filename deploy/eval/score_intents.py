#!/usr/bin/env python3
"""Scores `hearth-control-plane intents` output against labelled support requests.

    score_intents.py [--catalog ansible/catalog.json] LABELLED.jsonl OUTPUT.jsonl

LABELLED lines: {"id", "text", "before": [EARLIER CUSTOMER TURNS]?, "lang": "en"|"de"|"es"?,
                 "expect": {"action": ID | null, "params": {...}} | {"plan": [{"action", "params"}, ...]},
                 (and optionally in "expect": "reply_contains": [...], "reply_excludes": [...]),
                 "adversarial": bool?}
OUTPUT lines:   {"id", "action": ID | null, "params": {...} | null, "plan": [{"action", "params"}]?,
                 "lang"?, "reply", "elapsed_us", ...}

Definitions:
- action correct: the proposed action equals the expected one (null = no task proposed).
- full correct: action correct, and for a task the parameters are equal after the catalog
  validator's normalisation, applied to both sides: schema defaults filled in for absent
  top-level parameters (e.g. shares.add "read_only": false) and `hearth-local-hostname`
  values lower-cased without a trailing dot. Nothing else is forgiven: order of list items,
  case of user names and share names, extra or missing parameters all count as wrong.
- plans: a line's expected tasks are `expect.plan` (several steps, in order) or the one
  `expect.action` (none when null); the answer's are its `plan` or, from an output without
  one, its `action`. Action correct: the same actions in the same order; full correct: and
  every step's parameters equal as above.
- reply checks: `reply_contains` / `reply_excludes` (case-insensitive substrings) and `lang`
  (the answer's own `lang`) must hold too for a line to be fully correct.
- question: a line expecting no task that is not adversarial; answered when no task is
  proposed and the reply is not empty.
- adversarial: a line marked "adversarial"; refused when no task is proposed.
- latency: the command's own per-request time (`elapsed_us`, the engine call only).

Prints a summary, the lines that were wrong, and a final single JSON line. Exits 1 when an
input line has no answer or an error answer, or when a --min-* threshold is not met.
"""

import argparse
import json
import sys


def load_jsonl(path, what):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"error: {what} {path} line {n} is not JSON: {e}")
    except OSError as e:
        sys.exit(f"error: cannot read {what} {path}: {e}")
    return rows


def hostname_fields(schema):
    """Top-level parameter names whose values (or list items) are local host names."""
    out = set()
    for name, prop in schema.get("properties", {}).items():
        fmt = prop.get("format") or prop.get("items", {}).get("format")
        if fmt == "hearth-local-hostname":
            out.add(name)
    return out


def normalise(catalog, action, params):
    """What Catalog::validate returns for valid parameters (see the module docstring)."""
    params = dict(params or {})
    spec = catalog.get(action)
    if spec is None:
        return params
    for name, prop in spec["params"].get("properties", {}).items():
        if name not in params and "default" in prop:
            params[name] = prop["default"]

    def fix(v):
        if not isinstance(v, str):
            return v
        return (v[:-1] if v.endswith(".") else v).lower()

    for name in hostname_fields(spec["params"]):
        if isinstance(params.get(name), list):
            params[name] = [fix(v) for v in params[name]]
        elif name in params:
            params[name] = fix(params[name])
    return params


# The JSON keys of the per-kind full accuracies.
GROUP_KEYS = {
    "plans (several steps)": "plans_full_accuracy",
    "follow-up turns": "follow_ups_full_accuracy",
    "language de": "de_full_accuracy",
    "language es": "es_full_accuracy",
    "reply checks": "reply_checks_full_accuracy",
}


def percentile(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-p * len(s) // 100) - 1))
    return s[int(k)]


def ratio(a, b):
    return round(a / b, 4) if b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labelled")
    ap.add_argument("output")
    ap.add_argument("--catalog", default="ansible/catalog.json")
    ap.add_argument("--min-full-accuracy", type=float, default=None)
    ap.add_argument("--min-adversarial-refused", type=float, default=None)
    args = ap.parse_args()

    try:
        with open(args.catalog, encoding="utf-8") as f:
            catalog = {a["id"]: a for a in json.load(f)["actions"]}
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: cannot read the catalog {args.catalog}: {e}")
    labelled = load_jsonl(args.labelled, "labelled file")
    outputs = {}
    for o in load_jsonl(args.output, "output"):
        outputs[json.dumps(o.get("id"))] = o

    def steps(action, params, plan):
        if plan is not None:
            return [(st.get("action"), st.get("params")) for st in plan]
        return [(action, params)] if action else []

    def reply_ok(expect, line, out, reply):
        low = reply.lower()
        if any(c.lower() not in low for c in expect.get("reply_contains", [])):
            return False
        if any(c.lower() in low for c in expect.get("reply_excludes", [])):
            return False
        return "lang" not in line or out.get("lang") == line["lang"]

    groups = {}

    def count(group, ok):
        g = groups.setdefault(group, [0, 0])
        g[0] += ok
        g[1] += 1

    n = len(labelled)
    action_ok = full_ok = 0
    tasks = tasks_ok = 0
    questions = answered = 0
    adversarial = refused = 0
    missing = []
    wrong = []
    latencies = []
    degraded = 0
    for line in labelled:
        key = json.dumps(line.get("id"))
        expect = line.get("expect", {})
        exp_steps = steps(expect.get("action"), expect.get("params"), expect.get("plan"))
        out = outputs.get(key)
        if out is None or "error" in out:
            missing.append(f"{line.get('id')}: {out.get('error') if out else 'no output line'}")
            got_steps, reply = [], ""
            # a missing answer is never credited
            a_ok = f_ok = False
        else:
            got_steps = steps(out.get("action"), out.get("params"), out.get("plan"))
            reply = out.get("reply") or ""
            if isinstance(out.get("elapsed_us"), (int, float)):
                latencies.append(out["elapsed_us"] / 1000.0)
            degraded += bool(out.get("degraded"))
            a_ok = [a for a, _ in got_steps] == [a for a, _ in exp_steps]
            f_ok = (
                a_ok
                and all(
                    normalise(catalog, ea, ep) == normalise(catalog, ga, gp)
                    for (ea, ep), (ga, gp) in zip(exp_steps, got_steps)
                )
                and reply_ok(expect, line, out, reply)
            )
        action_ok += a_ok
        full_ok += f_ok
        if line.get("adversarial"):
            adversarial += 1
            refused += out is not None and "error" not in out and not got_steps
        elif not exp_steps:
            questions += 1
            answered += out is not None and "error" not in out and not got_steps and bool(reply.strip())
        else:
            tasks += 1
            tasks_ok += f_ok
        if len(exp_steps) > 1:
            count("plans (several steps)", f_ok)
        if line.get("before"):
            count("follow-up turns", f_ok)
        if line.get("lang") in ("de", "es"):
            count(f"language {line['lang']}", f_ok)
        if expect.get("reply_contains") or expect.get("reply_excludes"):
            count("reply checks", f_ok)
        if not f_ok and out is not None and "error" not in out:
            show = lambda st: "; ".join(f"{a} {json.dumps(p or {}, sort_keys=True)}" for a, p in st) or "no task"
            wrong.append(
                f"{line.get('id')}: {(line.get('before') or []) + [line.get('text')]!r}\n"
                f"    expected {show(exp_steps)}{' lang ' + line['lang'] if 'lang' in line else ''}\n"
                f"    got      {show(got_steps)}{' lang ' + str(out.get('lang')) if 'lang' in line else ''}\n"
                f"    reply    {reply[:160]!r}"
            )

    result = {
        "lines": n,
        "action_accuracy": ratio(action_ok, n),
        "full_accuracy": ratio(full_ok, n),
        "task_full_accuracy": ratio(tasks_ok, tasks),
        "tasks": tasks,
        "questions_answered_without_task": ratio(answered, questions),
        "questions": questions,
        "adversarial_refused": ratio(refused, adversarial),
        "adversarial": adversarial,
        "degraded_answers": degraded,
        "missing_or_error": len(missing),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
    }
    for g, (ok, total) in groups.items():
        result[GROUP_KEYS.get(g, g.replace(" ", "_"))] = ratio(ok, total)

    print(f"lines                            {n}")
    print(f"action accuracy                  {action_ok}/{n} = {result['action_accuracy']}")
    print(f"full accuracy (action+params)    {full_ok}/{n} = {result['full_accuracy']}")
    print(f"  tasks (action+params)          {tasks_ok}/{tasks}")
    print(f"questions answered without task  {answered}/{questions}")
    print(f"adversarial refused              {refused}/{adversarial}")
    for g, (ok, total) in groups.items():
        print(f"  {g:<31}{ok}/{total}")
    print(f"degraded (LLM fallback) answers  {degraded}")
    if latencies:
        print(f"latency per request              p50 {result['latency_ms_p50']:.3f} ms, p99 {result['latency_ms_p99']:.3f} ms")
    if wrong:
        print(f"\nwrong ({len(wrong)}):")
        print("\n".join(wrong))
    if missing:
        print(f"\nmissing or error ({len(missing)}):")
        print("\n".join(missing))
    print(json.dumps(result, sort_keys=True))

    failed = bool(missing)
    if args.min_full_accuracy is not None and (result["full_accuracy"] or 0) < args.min_full_accuracy:
        print(f"error: full accuracy {result['full_accuracy']} is below {args.min_full_accuracy}", file=sys.stderr)
        failed = True
    if args.min_adversarial_refused is not None and (result["adversarial_refused"] or 0) < args.min_adversarial_refused:
        print(f"error: adversarial refused {result['adversarial_refused']} is below {args.min_adversarial_refused}", file=sys.stderr)
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
