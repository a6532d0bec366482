"""TOML policies: model, parsing and validation, lint, SPD lookup, atomic save, diff."""

from engine.policy.check import check_file, run_check
from engine.policy.diff import PolicyDiff, diff_policies
from engine.policy.findings import Finding, PolicyError
from engine.policy.identity import (
                                 IdentityError,
                                 format_identity,
                                 identity_matches,
                                 parse_identity,
)
from engine.policy.lint import lint
from engine.policy.model import (
                                 AuthConfig,
                                 ChildConfig,
                                 ConnectionConfig,
                                 EngineConfig,
                                 Identity,
                                 IkeSecret,
                                 LabConfig,
                                 Policy,
                                 PrivateKeySecret,
                                 Proposal,
                                 RuleConfig,
                                 Secrets,
                                 Transform,
)
from engine.policy.parse import load_policy, parse_policy
from engine.policy.proposals import (
                                 ProposalError,
                                 default_proposals,
                                 format_proposal,
                                 parse_proposal,
                                 parse_proposals,
)
from engine.policy.samples import sample_path
from engine.policy.save import save_policy, save_text
from engine.policy.secrets import lookup_psk
from engine.policy.serialize import policy_to_toml
from engine.policy.spd import Decision, Spd, SpdEntry
from engine.policy.ts import TrafficSelector, TsSyntaxError, parse_ts

__all__ = [
                                 "AuthConfig",
                                 "ChildConfig",
                                 "ConnectionConfig",
                                 "Decision",
                                 "EngineConfig",
                                 "Finding",
                                 "Identity",
                                 "IdentityError",
                                 "IkeSecret",
                                 "LabConfig",
                                 "Policy",
                                 "PolicyDiff",
                                 "PolicyError",
                                 "PrivateKeySecret",
                                 "Proposal",
                                 "ProposalError",
                                 "RuleConfig",
                                 "Secrets",
                                 "Spd",
                                 "SpdEntry",
                                 "TrafficSelector",
                                 "Transform",
                                 "TsSyntaxError",
                                 "check_file",
                                 "default_proposals",
                                 "diff_policies",
                                 "format_identity",
                                 "format_proposal",
                                 "identity_matches",
                                 "lint",
                                 "load_policy",
                                 "lookup_psk",
                                 "parse_identity",
                                 "parse_policy",
                                 "parse_proposal",
                                 "parse_proposals",
                                 "parse_ts",
                                 "policy_to_toml",
                                 "run_check",
                                 "sample_path",
                                 "save_policy",
                                 "save_text",
]
