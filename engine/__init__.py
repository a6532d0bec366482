"""ipsec-console's IKEv2 + ESP/AH engine. Never imports textual or console."""
