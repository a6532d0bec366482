"""Certificate expiry warnings for the dashboard's alert strip.

A mixin for the App, beside the bridge: ``check_cert_expiry()`` reads the
running policy's certificates and the CA folder in a thread and replaces the
``cert`` alerts in the store. It runs when the console starts, when the
policy changes, after a change on the PKI screen and once an hour — never per
status refresh (it reads files).
"""

from __future__ import annotations

import asyncio

from textual import work

from console.widgets.pki_folder import expiry_alerts, pki_dir_for

EXPIRY_CHECK_INTERVAL = 3600.0
"""Seconds between two checks while nothing changes."""
ALERT_KIND = "cert"


class CertExpiryWatch:
    """Mixin for the App (needs ``runtime``, ``store``, ``clock`` and ``_sync_screen``)."""

    def start_expiry_watch(self) -> None:
        self.check_cert_expiry()
        self.set_interval(EXPIRY_CHECK_INTERVAL, self.check_cert_expiry, name="certificate expiry")

    @work(group="cert-expiry", exclusive=True, exit_on_error=False, name="certificate expiry")
    async def check_cert_expiry(self) -> None:
        """Recompute the expiry alerts (failures end in the bridge's one handler)."""
        served = getattr(self.runtime, "policy_for_files", None)  # attached: the files the daemon served
        policy = await served() if served is not None else (await self.runtime.policy())[0]
        d = pki_dir_for(policy, self.store.pki_dir)
        alerts = await asyncio.to_thread(expiry_alerts, policy, d, self.clock())
        if self.store.replace_alerts(ALERT_KIND, {a.key: a.text for a in alerts}):
            self._sync_screen(frozenset({"alerts"}))
