"""``ipsec-console check``: validation errors, or lint warnings, for a policy file.

A lab policy's peer policies (``[lab] peers``) are checked too, so one
command validates the whole lab.
"""

from __future__ import annotations

import os

from engine.policy.findings import Finding, PolicyError, sort_findings
from engine.policy.lint import lint
from engine.policy.model import Policy
from engine.policy.parse import load_policy
from engine.policy.samples import resolve_policy_path


def check_file(path: str | os.PathLike) -> tuple[Policy | None, list[Finding]]:
    """Parse errors, or lint warnings when the policy is valid. A group- or world-readable secrets file
    is a warning here (``secrets-readable``), though the engine refuses it."""
    try:
        policy = load_policy(path, strict_secrets_mode=False)
    except PolicyError as exc:
        return None, list(exc.findings)
    return policy, lint(policy)


def run_check(path: str | os.PathLike) -> list[Finding]:
    """Every finding for ``path`` (a file, or the bare name of a shipped sample), sorted by file and key path."""
    resolved = resolve_policy_path(path)
    policy, findings = check_file(resolved)
    if policy is not None and policy.lab is not None:
        for peer in policy.lab.peers:
            _, more = check_file(os.path.join(os.path.dirname(resolved), peer))
            findings.extend(more)
    return sort_findings(findings)
