"""Operations around the engine: systemd integration, reload, metrics, the audit
trail, swanctl.conf import/export, Wireshark key export and policy documentation.

Nothing here is protocol logic: these modules read the runtime's status and
events, the policy model and files, and never hold a secret longer than a write.
"""
