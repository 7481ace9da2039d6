#!/usr/bin/env bash
# Runs the README's shell blocks, in order, against the running quickstart
# (deploy/quickstart.sh), so the README cannot drift from what the commands do.
#
#   deploy/readme-check.sh [README.md]     (default: the repository's README.md)
#
# Every ```sh block of the README carries a marker on the line before its fence:
#   <!-- readme-check: run -->                 run it
#   <!-- readme-check: skip: REASON -->        not run here, for REASON (printed)
# A ```sh block without a marker fails the check, so a new block cannot go unnoticed.
#
# The blocks run one after another in one bash (`set -euo pipefail`), from the repository's
# root, so a variable one block sets is there for the next, as for a reader who pastes them
# into one terminal. The first command that fails stops the check with its README line;
# all of it stops after READMECHECK_TIMEOUT_S seconds (900), naming the block it was in.
#
# The quickstart's database outlives its runs, so before the blocks run, what an earlier
# run of this check created under the names the README uses (plans "family" and "starter",
# the operator account "bob", the demo household's appliance "kitchen") is renamed aside with psql as the tables' owner;
# everything else the README makes is new each time. Needs a running quickstart
# (.hearth/dev.env); installs nothing.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
README=$(realpath "${1:-$ROOT/README.md}")
cd "$ROOT"

die() { echo "readme-check: $*" >&2; exit 1; }
[ -f "$README" ] || die "$README: no such file"
[ -f .hearth/dev.env ] || die "no running quickstart (.hearth/dev.env): run deploy/quickstart.sh first"
# shellcheck disable=SC1091
. .hearth/dev.env
curl -fsS --cacert "$HEARTH_CA_CERT" "$HEARTH_API_URL/readyz" >/dev/null \
    || die "the quickstart's control plane does not answer at $HEARTH_API_URL: run deploy/quickstart.sh"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The blocks as one script, and which README line each of its lines came from.
python3 - "$README" "$WORK/blocks.sh" "$WORK/lines" <<'PY'
import re, sys
readme, script, linemap = sys.argv[1:]
lines = open(readme, encoding="utf-8").read().split("\n")
name = readme.rsplit("/", 1)[-1]
out, where, problems, runs, skips = [], [], [], 0, 0
marker = re.compile(r"<!--\s*readme-check:\s*(run|skip)\s*(?::\s*(.*?))?\s*-->")
i = 0
while i < len(lines):
    fence = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
    if not fence:
        i += 1
        continue
    lang, start = fence.group(2), i + 1
    j = i + 1
    while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
        j += 1
    if j == len(lines):
        sys.exit(f"readme-check: {name}:{start}: the block never ends")
    body = lines[i + 1:j]
    if lang in ("sh", "bash", "shell", "console"):
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        m = marker.search(lines[k]) if k >= 0 else None
        if not m:
            problems.append(f"{name}:{start}: a shell block without <!-- readme-check: run --> "
                            "or <!-- readme-check: skip: why -->")
        elif m.group(1) == "skip":
            if not m.group(2):
                problems.append(f"{name}:{start}: a skipped block must say why")
            print(f"readme-check: skipped {name}:{start} ({body[0].strip() if body else ''}): {m.group(2)}",
                  file=sys.stderr)
            skips += 1
        else:
            runs += 1
            out.append(f"__readme_block={start}; echo {start} >>\"$__readme_at\"")
            where.append(0)
            out.append(f"printf '\\n==> {name}:%s\\n' {start} >&2")
            where.append(0)
            for n, text in enumerate(body, start + 1):
                out.append(text)
                where.append(n)
    i = j + 1
if problems:
    sys.exit("\n".join(problems))
if runs == 0:
    sys.exit(f"readme-check: {name} has no block marked to run")
open(script, "w", encoding="utf-8").write("\n".join(out) + "\n")
open(linemap, "w").write("\n".join(map(str, where)) + "\n")
print(f"readme-check: {runs} blocks to run, {skips} skipped", file=sys.stderr)
PY

# Names an earlier run left behind are renamed aside (the tables' owner bypasses the
# row-level security policies).
psql "$HEARTH_DATABASE_URL" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
UPDATE plans SET name = name || '-' || id WHERE name IN ('family', 'starter');
UPDATE operator_accounts SET name = name || '-' || id WHERE name = 'bob';
UPDATE appliances SET name = name || '-' || id
 WHERE name = 'kitchen' AND tenant_id = '$HEARTH_TENANT_ID';
SQL

# The runner: the blocks with the error trap in front; LINENO maps back to the README.
{
    # What a block started in the background (an agent) is stopped when the blocks end.
    echo 'set -euo pipefail; trap '\''kill $(jobs -p) 2>/dev/null || true'\'' EXIT'
    echo "__readme_lines=$WORK/lines __readme_at=$WORK/at"
    # shellcheck disable=SC2016
    echo 'trap '\''__rc=$?; __at=$(sed -n "$((LINENO - 3))p" "$__readme_lines"); printf "\\nreadme-check: FAILED at '"$(basename "$README")"':${__at:-$__readme_block} (block at line $__readme_block), exit %s\\n" "$__rc" >&2; exit $__rc'\'' ERR'
    cat "$WORK/blocks.sh"
} >"$WORK/run.sh"
started=$SECONDS
# Run from the repository's root, with nothing of this script's environment but dev.env's
# (the README's blocks source it themselves).
# A block that waits for something that never comes is stopped after READMECHECK_TIMEOUT_S.
if env -i HOME="$HOME" PATH="$PATH" TERM="${TERM:-dumb}" timeout "${READMECHECK_TIMEOUT_S:-900}" bash "$WORK/run.sh"; then
    echo "readme-check: every block marked to run in $(basename "$README") passed ($((SECONDS - started)) s)" >&2
else
    rc=$?
    [ "$rc" = 124 ] && echo "readme-check: stopped after ${READMECHECK_TIMEOUT_S:-900} s (block at line $(tail -n1 "$WORK/at" 2>/dev/null || echo '?'))" >&2
    exit 1
fi
