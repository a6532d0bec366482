"""The console's screens (one per mode, plus pushed detail and modal screens)."""
