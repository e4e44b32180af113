"""Meterbook's domain: storage, services and the command line. No Streamlit below this line."""
