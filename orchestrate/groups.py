"""Account groups: their names for the code location, their keys for their own run only.

The code location, the daemon and the web server learn the group names from `OPTICO_GROUPS`
(names, no key). A run reads its own group's accounts when it starts, from where
`OPTICO_GROUP_SECRET` says, `{group}` standing for the group's name:

- `kubernetes:<secret name>`: the Kubernetes secret of that name in the run's namespace,
  its `accounts` key (`kubernetes:optico-group-{group}`), read through the Kubernetes API
  with the run pod's service account;
- `file:<path>`: a file that holds the accounts (`file:/etc/optico/{group}.json`), readable
  by its owner only.

So no process holds another group's keys: not the code server, not another group's run.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

NAMES = "OPTICO_GROUPS"
SOURCE = "OPTICO_GROUP_SECRET"
#: Where a Kubernetes secret is looked for when the pod's own namespace is not known.
NAMESPACE = "OPTICO_GROUP_SECRET_NAMESPACE"
POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pool(group: str) -> str:
    """The Dagster pool of the group's assets: one run of a group at a time."""
    return f"optico-{group}"


#: The variables of an earlier release, one per group, that held the keys in every process.
OLD_VARIABLE = "OPTICO_GROUP_"
#: A group name: a DNS label, so that it names a Kubernetes secret, a file and a folder as it is.
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
SOURCES = ("kubernetes", "file")


class GroupError(Exception):
    """The groups or their secrets are not set up as they must be; the message says what to fix."""


def group_names(environ: Mapping[str, str]) -> list[str]:
    """The groups named in `OPTICO_GROUPS` (comma- or space-separated), in that order."""
    old = sorted(
        name for name in environ if name.startswith(OLD_VARIABLE) and name not in (SOURCE, NAMESPACE)
    )
    if old:
        raise GroupError(
            f"{old[0]} holds a group's keys where every run can read them: name the groups in "
            f"{NAMES} and give each its own secret ({SOURCE}); see docs/dagster.md, "
            "'Settings from before account groups'"
        )
    names = [name for name in re.split(r"[\s,]+", environ.get(NAMES, "")) if name]
    if not names:
        raise GroupError(
            f"no account group: set {NAMES} to the groups' names (for instance agency-1,agency-2) "
            f"and {SOURCE} to where each group's accounts are kept"
        )
    for name in names:
        if not NAME.fullmatch(name):
            raise GroupError(
                f"account group {name!r} in {NAMES}: use lowercase letters, digits and '-' "
                "(at most 63, not at either end)"
            )
    if len(set(names)) < len(names):
        raise GroupError(f"{NAMES} names a group twice")
    source(environ)  # a wrong source is said where the groups are loaded, not in every run
    return names


def source(environ: Mapping[str, str]) -> tuple[str, str]:
    """The kind of `OPTICO_GROUP_SECRET` and its template."""
    value = environ.get(SOURCE, "")
    kind, _, template = value.partition(":")
    if kind not in SOURCES or "{group}" not in template:
        raise GroupError(
            f"{SOURCE}={value!r}: expected kubernetes:<secret name> or file:<path>, "
            "with {group} for the group's name (kubernetes:optico-group-{group})"
        )
    return kind, template


def read_accounts(group: str, environ: Mapping[str, str]) -> str:
    """The accounts of `group` (the tap's `accounts` setting, as JSON), read from its own secret."""
    kind, template = source(environ)
    where = template.replace("{group}", group)
    text = _read_file(where) if kind == "file" else _read_kubernetes(where, environ)
    try:
        accounts = json.loads(text)
    except ValueError:
        raise GroupError(f"the accounts of group {group} ({kind}:{where}) are not JSON") from None
    if not isinstance(accounts, list) or not accounts:
        raise GroupError(f"the accounts of group {group} ({kind}:{where}) are not a list of accounts")
    return text


def _read_file(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise GroupError(f"{path} can be read by other users: chmod 600 it")
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise GroupError(f"cannot read {path}: {error.strerror}") from None


def _read_kubernetes(name: str, environ: Mapping[str, str]) -> str:
    """The `accounts` key of a Kubernetes secret: in the cluster with the pod's service account,
    elsewhere with the kubeconfig (`KUBECONFIG`)."""
    from kubernetes import client, config  # dagster-k8s's dependency, only where it is used
    from kubernetes.client.exceptions import ApiException

    in_cluster = POD_NAMESPACE.exists()
    if in_cluster:
        config.load_incluster_config()
        namespace = environ.get(NAMESPACE) or POD_NAMESPACE.read_text(encoding="utf-8").strip()
    else:
        config.load_kube_config(config_file=environ.get("KUBECONFIG"))
        namespace = environ.get(NAMESPACE, "default")
    try:
        secret = client.CoreV1Api().read_namespaced_secret(name, namespace)
    except ApiException as error:
        raise GroupError(
            f"cannot read the secret {namespace}/{name}: {error.status} {error.reason}"
        ) from None
    data = secret.data or {}
    if "accounts" not in data:
        raise GroupError(f"the secret {namespace}/{name} has no key 'accounts'")
    return base64.b64decode(data["accounts"]).decode("utf-8")
