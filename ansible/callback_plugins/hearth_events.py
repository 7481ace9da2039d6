# Hearth: stdout callback printing one JSON object per line (the agent <-> ansible/ contract).
#
#   {"event": "playbook_start", "playbook": "dns_record_add.yml"}
#   {"event": "task_start", "task": "dns : add printer.home → 192.168.1.50"}
#   {"event": "ok" | "changed" | "skipped" | "failed" | "unreachable", "task": "…", "msg": "…"}
#   {"event": "stats", "ok": 3, "changed": 1, "failed": 0, "skipped": 0, "unreachable": 0}
#
# Nothing else is written to stdout: warnings and deprecations go through ansible's Display
# to stderr. Results of tasks marked `no_log` are never looked at beyond their status.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: hearth_events
    type: stdout
    short_description: one JSON object per line, for the Hearth agent
    description:
      - Prints playbook_start, task_start, one result event per task and a final stats event,
        each as a single JSON line on stdout, flushed immediately.
"""

import json
import os
import sys

from ansible.plugins.callback import CallbackBase

MAX_MSG = 2000
HIDDEN = "output hidden (no_log)"


def _truncate(text, limit=MAX_MSG):
    text = text if isinstance(text, str) else str(text)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def _is_censored(res):
    return bool(res.get("_ansible_no_log")) or "censored" in res


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "hearth_events"

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._out = getattr(sys.stdout, "buffer", None)
        # Task names are templated for the task_start callback only; results refer back to
        # the task, so remember the name that was shown (by task uuid).
        self._names = {}

    # -- output ------------------------------------------------------------------------

    def _emit(self, obj):
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        if self._out is not None:
            self._out.write(line.encode("utf-8", "replace"))
            self._out.flush()
        else:  # pragma: no cover - stdout without a byte buffer
            sys.stdout.write(line)
            sys.stdout.flush()

    # -- message extraction --------------------------------------------------------------

    def _task_name(self, task):
        name = self._names.get(getattr(task, "_uuid", None))
        if name is not None:
            return name
        try:
            return task.get_name().strip()
        except Exception:  # pragma: no cover - defensive
            return str(task)

    def _start(self, task):
        try:
            name = task.get_name().strip()
        except Exception:  # pragma: no cover - defensive
            name = str(task)
        name = _truncate(name)  # names list every item of a site.yml section: keep them bounded
        self._names[getattr(task, "_uuid", None)] = name
        self._emit({"event": "task_start", "task": name})

    def _single_msg(self, res, failed=False):
        """The message of one (non-loop) result, respecting no_log."""
        if _is_censored(res):
            return HIDDEN
        parts = []
        msg = res.get("msg")
        if msg not in (None, ""):
            parts.append(msg if isinstance(msg, str) else json.dumps(msg, ensure_ascii=False, default=str))
        if failed:
            rc = res.get("rc")
            if rc not in (None, 0) or (rc == 0 and not parts):
                parts.append("rc=%s" % rc)
            # module_stderr: a module that crashed ("MODULE FAILURE") left its traceback there.
            stderr = (res.get("stderr") or res.get("module_stderr") or "").strip()
            if stderr:
                parts.append("stderr: " + stderr)
            elif not parts:
                stdout = (res.get("stdout") or "").strip()
                if stdout:
                    parts.append("stdout: " + stdout)
        elif not parts:
            # e.g. command results: their output is the useful part of the log line; for
            # file-like modules, the path they worked on.
            stdout = (res.get("stdout") or "").strip()
            target = res.get("dest") or res.get("path")
            if stdout:
                parts.append(stdout)
            elif isinstance(target, str) and target:
                parts.append(target)
        return "; ".join(parts)

    def _msg(self, res, failed=False):
        if _is_censored(res):
            return HIDDEN
        items = res.get("results")
        if isinstance(items, list) and all(isinstance(i, dict) for i in items):
            if not items:
                return "no items"
            parts = []
            for item in items:
                if _is_censored(item):
                    parts.append(HIDDEN)
                    continue
                label = item.get("_ansible_item_label", item.get("item"))
                if not isinstance(label, str):
                    label = json.dumps(label, ensure_ascii=False, default=str)
                bad = bool(item.get("failed") or item.get("unreachable"))
                if bad:
                    status = "failed"
                elif item.get("skipped"):
                    status = "skipped"
                else:
                    status = "changed" if item.get("changed") else "ok"
                detail = self._single_msg(item, failed=bad) if status != "skipped" else ""
                parts.append("%s: %s%s" % (label, status, " (%s)" % detail if detail else ""))
            return _truncate("; ".join(parts))
        return _truncate(self._single_msg(res, failed=failed))

    def _result_event(self, event, result, failed=False, prefix=""):
        res = result._result
        if not _is_censored(res):
            # warnings/deprecations carried in the result: Display sends them to stderr.
            self._handle_warnings(res)
        self._emit({
            "event": event,
            "task": self._task_name(result._task),
            "msg": _truncate(prefix + self._msg(res, failed=failed)),
        })

    # -- playbook events ---------------------------------------------------------------------

    def v2_playbook_on_start(self, playbook):
        name = getattr(playbook, "_file_name", "") or ""
        self._emit({"event": "playbook_start", "playbook": os.path.basename(name)})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task)

    def v2_playbook_on_stats(self, stats):
        totals = {"ok": 0, "changed": 0, "failed": 0, "skipped": 0, "unreachable": 0}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            totals["ok"] += s.get("ok", 0)
            totals["changed"] += s.get("changed", 0)
            totals["failed"] += s.get("failures", 0)
            totals["skipped"] += s.get("skipped", 0)
            totals["unreachable"] += s.get("unreachable", 0)
        event = {"event": "stats"}
        event.update(totals)
        self._emit(event)

    # -- task results (loop items are summarised in the task's own result) -------------

    def v2_runner_on_ok(self, result):
        event = "changed" if result._result.get("changed", False) else "ok"
        self._result_event(event, result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result_event("failed", result, failed=True, prefix="(ignored) " if ignore_errors else "")

    def v2_runner_on_skipped(self, result):
        res = result._result
        if _is_censored(res):
            msg = HIDDEN
        elif isinstance(res.get("results"), list):
            msg = self._msg(res)
        else:
            msg = res.get("skip_reason") or res.get("msg") or "skipped"
        self._emit({"event": "skipped", "task": self._task_name(result._task), "msg": _truncate(str(msg))})

    def v2_runner_on_unreachable(self, result):
        self._result_event("unreachable", result, failed=True)

    # Silence everything else the default callback would print.
    def v2_runner_item_on_ok(self, result):
        pass

    def v2_runner_item_on_failed(self, result):
        pass

    def v2_runner_item_on_skipped(self, result):
        pass

    def v2_runner_retry(self, result):
        pass

    def v2_playbook_on_include(self, included_file):
        pass

    def v2_playbook_on_play_start(self, play):
        pass

    def v2_playbook_on_no_hosts_matched(self):
        pass

    def v2_playbook_on_no_hosts_remaining(self):
        pass

    def v2_on_file_diff(self, result):
        pass
