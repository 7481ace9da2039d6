#!/usr/bin/env python3
"""Hearth fleet inventory for Ansible (a dynamic inventory script, stdlib only).

    HEARTH_API_URL=https://hearth.example.net:8443 \\
    HEARTH_TENANT_KEY=... HEARTH_CA_CERT=/path/to/ca.crt \\
        ansible-inventory -i ansible/inventory/hearth.py --list

--list fetches ${HEARTH_API_URL}/api/v1/inventory with "Authorization: Bearer
${HEARTH_TENANT_KEY}", trusting the CA in ${HEARTH_CA_CERT}, and prints the body as-is:
    {"hearth": {"hosts": [...]}, "_meta": {"hostvars": {name: {...}}}}
--host NAME prints {} (host variables come in _meta).
Errors (missing environment, HTTP or TLS failure, a body that is not a JSON object) go to
stderr and exit with status 1.
"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 30
REQUIRED_ENV = ("HEARTH_API_URL", "HEARTH_TENANT_KEY", "HEARTH_CA_CERT")


def die(msg):
    sys.stderr.write("hearth inventory: %s\n" % msg)
    sys.exit(1)


def fetch():
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        die("missing environment variable(s): %s (%s)" % (
            ", ".join(missing),
            "HEARTH_API_URL is the control plane's base URL, HEARTH_TENANT_KEY a tenant API key, "
            "HEARTH_CA_CERT the CA certificate file that signed the control plane's certificate"))
    base = os.environ["HEARTH_API_URL"].rstrip("/")
    if not base.startswith("https://"):
        die("HEARTH_API_URL must be an https:// URL, got %r" % base)
    ca = os.environ["HEARTH_CA_CERT"]
    if not os.path.isfile(ca):
        die("HEARTH_CA_CERT %r is not a file" % ca)
    try:
        context = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as e:
        die("cannot load HEARTH_CA_CERT %r: %s" % (ca, e))

    url = base + "/api/v1/inventory"
    request = urllib.request.Request(url, headers={
        "Authorization": "Bearer " + os.environ["HEARTH_TENANT_KEY"],
        "Accept": "application/json",
    })
    try:
        with urllib.request.urlopen(request, context=context, timeout=TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read(500).decode("utf-8", "replace").strip()
        die("GET %s: HTTP %d %s%s" % (url, e.code, e.reason, (": " + detail) if detail else ""))
    except urllib.error.URLError as e:
        die("GET %s: %s" % (url, e.reason))
    except (OSError, ssl.SSLError) as e:
        die("GET %s: %s" % (url, e))

    try:
        text = body.decode("utf-8")
        parsed = json.loads(text)
    except ValueError as e:
        die("GET %s: the response is not JSON: %s" % (url, e))
    if not isinstance(parsed, dict):
        die("GET %s: the response is not a JSON object" % url)
    return text


def main(argv):
    if len(argv) == 2 and argv[1] == "--list":
        text = fetch()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    if len(argv) == 3 and argv[1] == "--host":
        sys.stdout.write("{}\n")
        return 0
    sys.stderr.write("usage: %s --list | --host NAME\n" % os.path.basename(argv[0]))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
