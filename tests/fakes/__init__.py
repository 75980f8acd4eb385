"""Fake upstream providers: real HTTP servers on localhost speaking each provider's wire format."""
