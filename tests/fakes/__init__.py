"""Local servers that speak a vendor's wire protocol, for tests that drive the real client library."""
