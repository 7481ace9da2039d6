#!/usr/bin/env python3
"""Scores `hearth-control-plane intents` output against labelled support requests.

    score_intents.py [--catalog ansible/catalog.json] LABELLED.jsonl OUTPUT.jsonl

LABELLED lines: {"id", "text", "expect": {"action": ID | null, "params": {...}}, "adversarial": bool?}
OUTPUT lines:   {"id", "action": ID | null, "params": {...} | null, "reply", "elapsed_us", ...}

Definitions:
- action correct: the proposed action equals the expected one (null = no task proposed).
- full correct: action correct, and for a task the parameters are equal after the catalog
  validator's normalisation, applied to both sides: schema defaults filled in for absent
  top-level parameters (e.g. shares.add "read_only": false) and `hearth-local-hostname`
  values lower-cased without a trailing dot. Nothing else is forgiven: order of list items,
  case of user names and share names, extra or missing parameters all count as wrong.
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
        exp_action = expect.get("action")
        out = outputs.get(key)
        if out is None or "error" in out:
            missing.append(f"{line.get('id')}: {out.get('error') if out else 'no output line'}")
            got_action, got_params, reply = None, None, ""
            # a missing answer is never credited
            a_ok = f_ok = False
        else:
            got_action, got_params, reply = out.get("action"), out.get("params"), out.get("reply") or ""
            if isinstance(out.get("elapsed_us"), (int, float)):
                latencies.append(out["elapsed_us"] / 1000.0)
            degraded += bool(out.get("degraded"))
            a_ok = got_action == exp_action
            f_ok = a_ok and (
                exp_action is None
                or normalise(catalog, exp_action, expect.get("params")) == normalise(catalog, got_action, got_params)
            )
        action_ok += a_ok
        full_ok += f_ok
        if line.get("adversarial"):
            adversarial += 1
            refused += out is not None and "error" not in out and got_action is None
        elif exp_action is None:
            questions += 1
            answered += out is not None and "error" not in out and got_action is None and bool(reply.strip())
        else:
            tasks += 1
            tasks_ok += f_ok
        if not f_ok and out is not None and "error" not in out:
            wrong.append(
                f"{line.get('id')}: {line.get('text')!r}\n"
                f"    expected {exp_action} {json.dumps(expect.get('params', {}), sort_keys=True) if exp_action else ''}\n"
                f"    got      {got_action} {json.dumps(got_params, sort_keys=True) if got_action else ''}\n"
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

    print(f"lines                            {n}")
    print(f"action accuracy                  {action_ok}/{n} = {result['action_accuracy']}")
    print(f"full accuracy (action+params)    {full_ok}/{n} = {result['full_accuracy']}")
    print(f"  tasks (action+params)          {tasks_ok}/{tasks}")
    print(f"questions answered without task  {answered}/{questions}")
    print(f"adversarial refused              {refused}/{adversarial}")
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
