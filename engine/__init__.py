"""Meterbook's domain: storage, services and the command line. No Streamlit below this line."""

from engine.redaction import install_redaction

# Every entry point (UI, sidecar, CLI, tests) imports engine before it logs: scrub keys from the start.
install_redaction()
